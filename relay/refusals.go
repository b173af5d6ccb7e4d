package relay

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// refusals keeps a receiver's warnings about the seeds and sessions it
// refuses to one line a minute from each address. Any host on the LAN can
// open connections as fast as its link allows (300 a second cost it 2
// Mbit/s), and each refused offer, untrusted, forged or replayed, would
// otherwise write a line. The first refusal from an address is logged at
// once; later ones within the minute are counted, and the next line logged
// for that address says how many were not.
type refusals struct {
	mu   sync.Mutex
	from map[netip.Addr]*refusing
	now  func() time.Time
}

// refusing is one address's current window.
type refusing struct {
	since    time.Time // when its window's logged line was written
	unlogged int       // refusals since, not logged
}

const (
	refusalWindow = time.Minute // a line a minute per address tells an operator what is refused, and costs no disk
	maxRefusers   = 256         // addresses tracked; beyond them, the rest share one window
)

func newRefusals() *refusals {
	return &refusals{from: make(map[netip.Addr]*refusing), now: time.Now}
}

// warn logs msg about a connection from addr, with args, unless a line was
// logged for addr within the window: then it only counts it.
func (rf *refusals) warn(log *slog.Logger, addr net.Addr, msg string, args ...any) {
	key := refuserKey(addr)
	rf.mu.Lock()
	now := rf.now()
	w, ok := rf.from[key]
	if !ok && len(rf.from) >= maxRefusers {
		rf.forget(now)
		if len(rf.from) >= maxRefusers {
			key = netip.Addr{}
			w, ok = rf.from[key]
		}
	}
	if !ok {
		w = &refusing{}
		rf.from[key] = w
	} else if now.Sub(w.since) < refusalWindow {
		w.unlogged++
		rf.mu.Unlock()
		return
	}
	unlogged := w.unlogged
	w.since, w.unlogged = now, 0
	rf.mu.Unlock()
	if unlogged > 0 {
		args = append(args, "refused before and not logged", unlogged)
	}
	log.Warn(msg, args...)
}

// forget drops the windows that ended (what they left unlogged is not
// told: a full table is a host cycling addresses).
func (rf *refusals) forget(now time.Time) {
	for k, w := range rf.from {
		if now.Sub(w.since) >= refusalWindow {
			delete(rf.from, k)
		}
	}
}

// refuserKey is addr's IP, without its zone, or the zero Addr when addr
// has none.
func refuserKey(addr net.Addr) netip.Addr {
	if a, ok := addr.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap().WithZone("")
		}
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

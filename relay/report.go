package relay

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Progress by datagram (the package doc says why, and the layout): the
// seed's inbox and a node's outbox.

// sealLen is what seals a progress datagram: half an HMAC-SHA-256.
const sealLen = 16

// reportKey is the key that seals the datagrams of the node told token.
func reportKey(sec *Secret, token [16]byte) []byte {
	if sec == nil {
		return token[:]
	}
	h := hmac.New(sha256.New, sec.auth)
	h.Write([]byte("progress datagram"))
	h.Write(token[:])
	return h.Sum(nil)
}

// appendDatagram appends to dst a datagram carrying progress.
func appendDatagram(dst, key []byte, token [16]byte, progress []byte) []byte {
	start := len(dst)
	dst = appendHeader(dst, msgProgress, len(token)+len(progress)+sealLen)
	dst = append(dst, token[:]...)
	dst = append(dst, progress...)
	h := hmac.New(sha256.New, key)
	h.Write(dst[start:])
	return h.Sum(dst)[:len(dst)+sealLen]
}

// datagramToken is the token a datagram names, if its header is that of a
// progress datagram of its own length.
func datagramToken(b []byte) ([16]byte, bool) {
	if len(b) < headerLen+16+sealLen || len(b) > headerLen+nodeFrameLimit ||
		[4]byte(b[:4]) != magic || b[4] != Version || msgType(b[5]) != msgProgress ||
		int(binary.BigEndian.Uint32(b[6:headerLen])) != len(b)-headerLen {
		return [16]byte{}, false
	}
	return [16]byte(b[headerLen : headerLen+16]), true
}

// openDatagram checks b's seal under key and returns its progress.
func openDatagram(b, key []byte) ([]byte, bool) {
	body := b[:len(b)-sealLen]
	h := hmac.New(sha256.New, key)
	h.Write(body)
	if !hmac.Equal(h.Sum(nil)[:sealLen], b[len(body):]) {
		return nil, false
	}
	return body[headerLen+16:], true
}

// inbox is where the seed takes progress datagrams: one UDP socket, and
// for each node told to use it, a token.
type inbox struct {
	conn *net.UDPConn
	sec  *Secret
	mu   sync.Mutex
	to   map[[16]byte]mailbox
}

// A mailbox is what the seed knows of a token: whose it is, the address
// its datagrams must come from (its zone aside), the key that seals them,
// when the node's session clock started (about: zero, not known), and that
// clock in the newest datagram it passed on.
type mailbox struct {
	n       *node
	addr    netip.Addr
	key     []byte
	started time.Time
	clock   uint64
}

// inboxBuffer is what the inbox's socket holds while the loop is busy:
// 4,096 nodes' reports (about 100 bytes each) for the 80-200 ms a loop on
// a loaded machine was seen to lag. The system may grant less.
const inboxBuffer = 4 << 20

func listenInbox(sec *Secret) (*inbox, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		return nil, fmt.Errorf("listen for progress datagrams: %w", err)
	}
	conn.SetReadBuffer(inboxBuffer)
	return &inbox{conn: conn, sec: sec, to: map[[16]byte]mailbox{}}, nil
}

func (b *inbox) port() uint16 { return uint16(b.conn.LocalAddr().(*net.UDPAddr).Port) }

// open makes a new token for n's datagrams from addr; n's session clock
// started at about started.
func (b *inbox) open(n *node, addr netip.Addr, started time.Time) [16]byte {
	var t [16]byte
	rand.Read(t[:])
	b.mu.Lock()
	b.to[t] = mailbox{n: n, addr: addr.Unmap().WithZone(""), key: reportKey(b.sec, t), started: started}
	b.mu.Unlock()
	return t
}

// shut refuses token's datagrams from now on.
func (b *inbox) shut(token [16]byte) {
	b.mu.Lock()
	delete(b.to, token)
	b.mu.Unlock()
}

// newer reports whether clock is past the last passed on for token, and
// no later than the node's session can have run (see seedRun.fresh), and
// makes it the last.
func (b *inbox) newer(token [16]byte, clock uint64, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	m, ok := b.to[token]
	if !ok || !inTime(clock, m.clock, m.started, now) {
		return false
	}
	m.clock = clock
	b.to[token] = m
	return true
}

func (b *inbox) close() { b.conn.Close() }

// run passes each sound datagram from a node's own address to events, as
// a progress frame of that node, until the socket is closed, if it is
// newer than the last it passed on for the token (a copy sent again costs
// the loop nothing). Anything else is dropped unanswered.
func (b *inbox) run(ctx context.Context, events chan<- event) {
	buf := make([]byte, headerLen+nodeFrameLimit+1)
	for {
		k, from, err := b.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
				continue // an ICMP error some platforms report here
			}
			return
		}
		tok, ok := datagramToken(buf[:k])
		if !ok {
			continue
		}
		b.mu.Lock()
		m, ok := b.to[tok]
		b.mu.Unlock()
		if !ok || from.Addr().Unmap().WithZone("") != m.addr {
			continue
		}
		p, ok := openDatagram(buf[:k], m.key)
		if !ok {
			continue
		}
		pm, err := decodeProgress(p)
		if err != nil || !b.newer(tok, pm.millis, time.Now()) {
			continue
		}
		select {
		case events <- event{n: m.n, f: frame{typ: msgProgress, payload: bytes.Clone(p)}, token: tok}:
		case <-ctx.Done():
			return
		}
	}
}

// outbox sends a node's progress to its seed by datagram.
type outbox struct {
	conn  *net.UDPConn
	token [16]byte
	key   []byte
	buf   []byte
}

// dialOutbox opens the datagram path a report frame names, from this
// node's end of the control connection c to the seed's address on it.
func dialOutbox(c net.Conn, m reportMsg, sec *Secret) (*outbox, error) {
	remote, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("seed at %s: not a TCP address", c.RemoteAddr())
	}
	var local *net.UDPAddr
	if l, ok := c.LocalAddr().(*net.TCPAddr); ok {
		local = &net.UDPAddr{IP: l.IP, Zone: l.Zone}
	}
	conn, err := net.DialUDP("udp", local, &net.UDPAddr{IP: remote.IP, Port: int(m.port), Zone: remote.Zone})
	if err != nil {
		return nil, fmt.Errorf("progress datagrams to %s port %d: %w", remote.IP, m.port, err)
	}
	return &outbox{conn: conn, token: m.token, key: reportKey(sec, m.token)}, nil
}

func (o *outbox) send(progress []byte) error {
	o.buf = appendDatagram(o.buf[:0], o.key, o.token, progress)
	_, err := o.conn.Write(o.buf)
	return err
}

func (o *outbox) close() { o.conn.Close() }

// reportFrames is what tells n to send its progress by datagram, if it
// may and does not already: a report frame with a new token.
func (s *seedRun) reportFrames(n *node, now time.Time) []frame {
	if s.in == nil || !n.datagrams || n.byDatagram {
		return nil
	}
	n.token, n.byDatagram, n.viaDatagram, n.toldAt = s.in.open(n, n.peer.Addr.Addr(), n.offered), true, false, now
	return []frame{{typ: msgReport, payload: reportMsg{port: s.in.port(), token: n.token}.encode()}}
}

// fresh reports whether a progress n wrote at clock (its session's
// milliseconds) is newer than any taken from it, and no later than its
// session can have run: a clock from the future (one forged datagram
// without a fleet secret) would have every later report refused.
func (s *seedRun) fresh(n *node, clock uint64, now time.Time) bool {
	return inTime(clock, n.clock, n.offered, now)
}

// inTime reports whether clock, a session's milliseconds, is past last
// and no later than a session started at started (zero: not known) can
// have run by now.
func inTime(clock, last uint64, started, now time.Time) bool {
	if clock <= last {
		return false
	}
	return started.IsZero() || sessionTime(clock) <= now.Sub(started)+clockSlack
}

// sessionTime is a node's session clock, millis as it reports it, as a
// duration (capped where a duration ends).
func sessionTime(millis uint64) time.Duration {
	return time.Duration(min(millis, math.MaxInt64/uint64(time.Millisecond))) * time.Millisecond
}

// stopReports takes no more datagrams from n.
func (s *seedRun) stopReports(n *node) {
	if n.byDatagram {
		s.in.shut(n.token)
	}
	n.byDatagram, n.viaDatagram, n.token = false, false, [16]byte{}
}

// unheard reports whether n, told to report by datagram, has not been
// heard from for half of DeadAfter since it was told or last heard: two
// of its reports, before it could count as silent.
func (s *seedRun) unheard(n *node, now time.Time) bool {
	return n.byDatagram && now.Sub(n.heardSinceTold()) > s.cfg.DeadAfter/2
}

// heardSinceTold is when the seed last heard from n, or told it where to
// report, if later.
func (n *node) heardSinceTold() time.Time {
	if n.toldAt.After(n.lastSeen) {
		return n.toldAt
	}
	return n.lastSeen
}

// checkReports tells the nodes reporting by datagram that the seed has
// not heard from (see unheard) to report over their connections from then
// on: their datagrams do not come through (a firewall, say). A node whose
// datagrams did come is told so only when few are unheard at once: when
// most are, the seed was slow to hear them (its loop or its link), as in
// tick. A hung node goes on to be found silent as before.
func (s *seedRun) checkReports(now time.Time) {
	var came, never []*node
	connected := 0
	for _, n := range s.nodes {
		if n.c == nil {
			continue
		}
		connected++
		switch {
		case !s.unheard(n, now):
		case n.viaDatagram:
			came = append(came, n)
		default:
			never = append(never, n)
		}
	}
	if (len(came)+len(never))*2 > connected {
		came = nil
	}
	for _, n := range append(never, came...) {
		s.opt.Log.Info("no progress datagrams from node: it reports over its connection", "node", n.label(), "silent", now.Sub(n.heardSinceTold()).Round(100*time.Millisecond))
		s.stopReports(n)
		n.datagrams = false
		if err := n.c.send(msgReport, reportMsg{}.encode()); err != nil {
			s.opt.Log.Debug("send report", "node", n.label(), "err", err)
		}
	}
}

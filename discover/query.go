package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

var mdnsGroup = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}

const (
	maxPacket      = 9000 // RFC 6762 section 17: the largest mDNS message
	maxInstances   = 4096 // per interface and round; bounds memory under a flood
	maxAddrsOnHost = 16
)

// query sends one PTR question for the service out of l, says when on
// asked, and sends to found every peer the answers give an address on l
// for, again whenever a later answer changes it, until deadline or until
// ctx ends.
//
// The socket is bound to an ephemeral port, so responders answer by unicast
// (RFC 6762 section 6.7), and IP_MULTICAST_IF picks the interface, so
// neither a default route nor a multicast route is needed. The mdns
// library's client cannot do that: it joins the group on the interface of the
// route to 224.0.0.251 before it applies QueryParam.Interface, and fails when
// there is no such route.
func query(ctx context.Context, l link, deadline time.Time, asked chan<- time.Time, found chan<- Peer, log *slog.Logger) error {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		return fmt.Errorf("open a socket for mDNS queries: %w", err)
	}
	defer conn.Close()
	pc := ipv4.NewPacketConn(conn)
	if err := pc.SetMulticastInterface(&l.ifi); err != nil {
		return fmt.Errorf("query on %s: choose the interface for multicast: %w", l.ifi.Name, err)
	}
	if err := pc.SetMulticastTTL(255); err != nil {
		return fmt.Errorf("query on %s: set multicast TTL: %w", l.ifi.Name, err)
	}
	if err := conn.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("query on %s: %w", l.ifi.Name, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()

	q := new(dns.Msg)
	q.SetQuestion(serviceName, dns.TypePTR)
	q.RecursionDesired = false
	pkt, err := q.Pack()
	if err != nil {
		return fmt.Errorf("query on %s: pack question: %w", l.ifi.Name, err)
	}
	if _, err := conn.WriteToUDP(pkt, mdnsGroup); err != nil {
		return fmt.Errorf("query on %s: send to %s: %w", l.ifi.Name, mdnsGroup, err)
	}
	asked <- time.Now()

	c := newCollector(l, log)
	buf := make([]byte, maxPacket)
	for {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("query on %s: read answers: %w", l.ifi.Name, err)
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil {
			log.Debug("ignore undecodable mDNS packet", "iface", l.ifi.Name, "from", from, "err", err)
			continue
		}
		if !m.Response || m.Opcode != dns.OpcodeQuery || m.Rcode != dns.RcodeSuccess {
			continue
		}
		for _, p := range c.add(&m) {
			select {
			case found <- p:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// collector assembles peers from the records of the answers to one query.
// Records may come in any order and split over several answers; a later
// answer replaces what an earlier one said about the same name, so every
// answer is judged, and an answer that gives a receiver another address is
// reported, not hidden behind the first.
type collector struct {
	link  link
	log   *slog.Logger
	srv   map[string]srvTarget    // instance name -> SRV of the latest answer that had one
	txt   map[string][]string     // instance name -> TXT strings of the latest answer that had them
	addrs map[string][]netip.Addr // host name -> IPv4 addresses of the latest answer that had any
	last  map[string]Peer         // instance name -> the peer last reported for it
}

type srvTarget struct {
	instance string // the instance label as sent
	host     string // lowercased
	port     uint16
}

func newCollector(l link, log *slog.Logger) *collector {
	return &collector{
		link:  l,
		log:   log,
		srv:   make(map[string]srvTarget),
		txt:   make(map[string][]string),
		addrs: make(map[string][]netip.Addr),
		last:  make(map[string]Peer),
	}
}

// add records the SRV, TXT and A records of m that may belong to a peer and
// returns the peers m completes or changes, sorted by instance.
func (c *collector) add(m *dns.Msg) []Peer {
	touched := make(map[string]bool)       // instance names m says something about
	hosts := make(map[string][]netip.Addr) // the A records of m, by host name
	for _, rr := range append(m.Answer, m.Extra...) {
		name := lowerASCII(rr.Header().Name)
		switch rr := rr.(type) {
		case *dns.SRV:
			if _, ok := c.srv[name]; !isInstance(name) || (!ok && len(c.srv) >= maxInstances) {
				continue
			}
			c.srv[name] = srvTarget{
				instance: rr.Hdr.Name[:len(name)-len(instanceSuffix)],
				host:     lowerASCII(rr.Target),
				port:     rr.Port,
			}
			touched[name] = true
		case *dns.TXT:
			if _, ok := c.txt[name]; !isInstance(name) || (!ok && len(c.txt) >= maxInstances) {
				continue
			}
			c.txt[name] = rr.Txt
			touched[name] = true
		case *dns.A:
			a, ok := netip.AddrFromSlice(rr.A)
			if !ok {
				continue
			}
			a = a.Unmap()
			have := hosts[name]
			if !a.Is4() || len(have) >= maxAddrsOnHost || slices.Contains(have, a) {
				continue
			}
			hosts[name] = append(have, a)
		}
	}
	covered := make(map[string]bool) // hosts in m that are the target of an instance in m
	for name := range touched {
		if host := c.srv[name].host; hosts[host] != nil {
			covered[host] = true
		}
	}
	for host, addrs := range hosts {
		if _, ok := c.addrs[host]; !ok && len(c.addrs) >= maxInstances {
			delete(hosts, host)
			continue
		}
		c.addrs[host] = addrs
	}
	if len(covered) < len(hosts) { // addresses for hosts named by earlier answers
		for name, srv := range c.srv {
			if _, ok := hosts[srv.host]; ok {
				touched[name] = true
			}
		}
	}
	var peers []Peer
	for name := range touched {
		if p, ok := c.peer(name); ok && p != c.last[name] {
			c.last[name] = p
			peers = append(peers, p)
		}
	}
	slices.SortFunc(peers, func(x, y Peer) int { return strings.Compare(x.Instance, y.Instance) })
	return peers
}

// peer returns the peer of an instance once its SRV, TXT and A records are
// in, if they describe one that may be dialled on this link.
func (c *collector) peer(name string) (Peer, bool) {
	srv, ok := c.srv[name]
	txt, ok2 := c.txt[name]
	addrs := c.addrs[srv.host]
	if !ok || !ok2 || len(addrs) == 0 {
		return Peer{}, false
	}
	iface := c.link.ifi.Name
	f, err := parseTXT(txt)
	if err != nil {
		c.log.Debug("ignore peer with a bad TXT record", "instance", srv.instance, "iface", iface, "err", err)
		return Peer{}, false
	}
	if srv.port == 0 {
		c.log.Debug("ignore peer with port 0", "instance", srv.instance, "iface", iface)
		return Peer{}, false
	}
	var addr netip.Addr
	for _, a := range addrs {
		if why := c.link.refuse(a); why != "" {
			c.log.Debug("ignore a peer's address", "instance", srv.instance, "id", f.ID, "addr", a, "iface", iface, "why", why)
		} else if !addr.IsValid() {
			addr = a
		}
	}
	if !addr.IsValid() {
		return Peer{}, false
	}
	return Peer{
		Instance: srv.instance,
		ID:       f.ID,
		Name:     f.Name,
		Group:    f.Group,
		State:    f.State,
		Version:  f.Version,
		Addr:     netip.AddrPortFrom(addr, srv.port),
	}, true
}

// lowerASCII lowercases A-Z only, so byte offsets stay valid; DNS names
// compare case-insensitively in ASCII only.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// isInstance reports whether a lowercased DNS name is an instance of Service
// in the local domain with a non-empty instance label.
func isInstance(name string) bool {
	return len(name) > len(instanceSuffix) && strings.HasSuffix(name, instanceSuffix)
}

package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
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

// query sends one PTR question for the service out of l and sends every
// receiver it learns of to found, until deadline or until ctx ends.
//
// The socket is bound to an ephemeral port, so responders answer by unicast
// (RFC 6762 section 6.7), and IP_MULTICAST_IF picks the interface, so
// neither a default route nor a multicast route is needed. The mdns
// library's client cannot do that: it joins the group on the interface of the
// route to 224.0.0.251 before it applies QueryParam.Interface, and fails when
// there is no such route.
func query(ctx context.Context, l link, deadline time.Time, found chan<- Peer, log *slog.Logger) error {
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

	c := newCollector(l, log)
	send := func(peers []Peer) bool {
		for _, p := range peers {
			select {
			case found <- p:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	buf := make([]byte, maxPacket)
	for {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				send(c.complete(true))
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
		c.add(&m)
		if !send(c.complete(false)) {
			return nil
		}
	}
}

// collector assembles peers from the records of the answers to one query.
// Records may come in any order and split over several answers.
type collector struct {
	link  link
	log   *slog.Logger
	srv   map[string]srvTarget    // instance name -> SRV
	txt   map[string][]string     // instance name -> TXT strings
	addrs map[string][]netip.Addr // host name -> IPv4 addresses
	done  map[string]bool         // instance names reported or rejected
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
		done:  make(map[string]bool),
	}
}

// add records the SRV, TXT and A records of m that may belong to a peer.
func (c *collector) add(m *dns.Msg) {
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
		case *dns.TXT:
			if _, ok := c.txt[name]; !isInstance(name) || (!ok && len(c.txt) >= maxInstances) {
				continue
			}
			c.txt[name] = rr.Txt
		case *dns.A:
			a, ok := netip.AddrFromSlice(rr.A)
			if !ok {
				continue
			}
			a = a.Unmap()
			have := c.addrs[name]
			if !a.Is4() || len(have) >= maxAddrsOnHost || (have == nil && len(c.addrs) >= maxInstances) {
				continue
			}
			found := false
			for _, h := range have {
				found = found || h == a
			}
			if !found {
				c.addrs[name] = append(have, a)
			}
		}
	}
}

// complete returns the peers whose records are all in and not yet reported.
// Until final, it holds back a peer with no address on this link, in case a
// later answer carries one.
func (c *collector) complete(final bool) []Peer {
	var peers []Peer
	for name, srv := range c.srv {
		txt, ok := c.txt[name]
		if c.done[name] || !ok {
			continue
		}
		addrs := c.addrs[srv.host]
		if len(addrs) == 0 {
			continue
		}
		addr := addrs[0]
		onLink := false
		for _, a := range addrs {
			if c.link.onLink(a) {
				addr, onLink = a, true
				break
			}
		}
		if !onLink && !final {
			continue
		}
		c.done[name] = true
		instance := srv.instance
		f, err := parseTXT(txt)
		if err != nil {
			c.log.Debug("ignore peer with a bad TXT record", "instance", instance, "iface", c.link.ifi.Name, "err", err)
			continue
		}
		if srv.port == 0 {
			c.log.Debug("ignore peer with port 0", "instance", instance, "iface", c.link.ifi.Name)
			continue
		}
		peers = append(peers, Peer{
			Instance: instance,
			ID:       f.ID,
			Name:     f.Name,
			Group:    f.Group,
			State:    f.State,
			Version:  f.Version,
			Addr:     netip.AddrPortFrom(addr, srv.port),
		})
	}
	return peers
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

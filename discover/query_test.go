package discover

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// answer builds the records a responder sends for one instance.
func answer(instance, service string, port uint16, txt []string, addrs ...string) []dns.RR {
	name := instance + "." + service + ".local."
	host := instance + ".local."
	rrs := []dns.RR{
		&dns.PTR{Hdr: hdr(service+".local.", dns.TypePTR), Ptr: name},
		&dns.SRV{Hdr: hdr(name, dns.TypeSRV), Port: port, Target: host},
	}
	for _, a := range addrs {
		rrs = append(rrs, &dns.A{Hdr: hdr(host, dns.TypeA), A: net.ParseIP(a)})
	}
	return append(rrs, &dns.TXT{Hdr: hdr(name, dns.TypeTXT), Txt: txt})
}

func hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 120}
}

// wire packs and unpacks rrs as one response, as the network would deliver it.
func wire(t *testing.T, rrs ...dns.RR) *dns.Msg {
	t.Helper()
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Answer: rrs}
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack: %v", err)
	}
	var got dns.Msg
	if err := got.Unpack(b); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	return &got
}

func testLink() link {
	return link{ifi: net.Interface{Name: "test0"}, prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24")}}
}

func TestCollectorAnswers(t *testing.T) {
	good := []string{"v=1", "id=" + idA, "name=alpha", "group=red", "state=idle"}
	alpha := Peer{Instance: "alpha-01234567", ID: idA, Name: "alpha", Group: "red", State: StateIdle, Version: 1,
		Addr: netip.MustParseAddrPort("10.1.0.7:7000")}
	at := func(p Peer, addr string) Peer {
		p.Addr = netip.MustParseAddrPort(addr)
		return p
	}

	t.Run("one answer", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		if got := c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "10.1.0.7")...)); !slices.Equal(got, []Peer{alpha}) {
			t.Fatalf("got %+v, want %+v", got, alpha)
		}
		if got := c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "10.1.0.7")...)); len(got) != 0 {
			t.Fatalf("the same answer again was reported again: %+v", got)
		}
	})

	t.Run("names differ in case", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		rrs := answer("Alpha-01234567", "_TreeCast._TCP", 7000, good, "10.1.0.7")
		rrs[2].Header().Name = "ALPHA-01234567.LOCAL."
		want := alpha
		want.Instance = "Alpha-01234567"
		if got := c.add(wire(t, rrs...)); !slices.Equal(got, []Peer{want}) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})

	t.Run("records split over answers", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		rrs := answer("alpha-01234567", Service, 7000, good, "10.1.0.7")
		for _, rr := range rrs[:3] {
			if got := c.add(wire(t, rr)); len(got) != 0 {
				t.Fatalf("reported before the TXT record came: %+v", got)
			}
		}
		if got := c.add(wire(t, rrs[3])); !slices.Equal(got, []Peer{alpha}) {
			t.Fatalf("got %+v, want %+v", got, alpha)
		}
	})

	t.Run("other services ignored", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		got := c.add(wire(t, answer("printer", "_ipp._tcp", 631, good, "10.1.0.9")...))
		got = append(got, c.add(wire(t, answer("x", "_treecast._udp", 7000, good, "10.1.0.9")...))...)
		if len(got) != 0 {
			t.Fatalf("got %+v, want nothing", got)
		}
	})

	t.Run("bad TXT dropped, a good answer after it taken", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		if got := c.add(wire(t, answer("alpha-01234567", Service, 7000, []string{"v=1", "id=nope"}, "10.1.0.7")...)); len(got) != 0 {
			t.Fatalf("got %+v, want nothing", got)
		}
		if got := c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "10.1.0.7")...)); !slices.Equal(got, []Peer{alpha}) {
			t.Fatalf("a bad answer hid the good one after it: got %+v, want %+v", got, alpha)
		}
	})

	t.Run("port 0 dropped", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		if got := c.add(wire(t, answer("alpha-01234567", Service, 0, good, "10.1.0.7")...)); len(got) != 0 {
			t.Fatalf("got %+v, want nothing", got)
		}
	})

	t.Run("only addresses in the link's subnets", func(t *testing.T) {
		// A receiver with two links answers once from each: only the answer
		// with an address on the link asked on gives a peer.
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		if got := c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "192.168.9.7", "192.168.9.8")...)); len(got) != 0 {
			t.Fatalf("reported an off-link address: %+v", got)
		}
		if got := c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "10.1.0.7")...)); !slices.Equal(got, []Peer{alpha}) {
			t.Fatalf("got %+v, want %+v", got, alpha)
		}
		if got := c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "192.168.9.7")...)); len(got) != 0 {
			t.Fatalf("reported an off-link address: %+v", got)
		}
	})

	t.Run("the usable one of several addresses", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		got := c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "127.0.0.1", "192.168.9.7", "10.1.0.7", "10.1.0.8")...))
		if !slices.Equal(got, []Peer{alpha}) {
			t.Fatalf("got %+v, want %+v", got, alpha)
		}
	})

	// A spoofer answers for alpha's instance and id, to be dialled instead of
	// alpha (or to make the seed dial a service of its own host).
	for _, tc := range []struct {
		name  string
		addrs []string
	}{
		{"spoof: loopback", []string{"127.0.0.1"}},
		{"spoof: loopback, not the first of its kind", []string{"127.0.0.53"}},
		{"spoof: off-subnet", []string{"192.168.9.66"}},
		{"spoof: neighbouring subnet", []string{"10.1.1.66"}},
		{"spoof: unspecified", []string{"0.0.0.0"}},
		{"spoof: broadcast", []string{"255.255.255.255"}},
		{"spoof: multicast", []string{"224.0.0.251"}},
		{"spoof: link-local", []string{"169.254.1.1"}},
		{"spoof: all of them", []string{"127.0.0.1", "0.0.0.0", "224.0.0.1", "169.254.1.1", "8.8.8.8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, spoofFirst := range []bool{true, false} {
				c := newCollector(testLink(), slog.New(slog.DiscardHandler))
				spoof := answer("alpha-01234567", Service, 22, good, tc.addrs...)
				real := answer("alpha-01234567", Service, 7000, good, "10.1.0.7")
				first, second := real, spoof
				if spoofFirst {
					first, second = spoof, real
				}
				got := append(c.add(wire(t, first...)), c.add(wire(t, second...))...)
				if !slices.Equal(got, []Peer{alpha}) {
					t.Fatalf("spoofed answer first: %v: got %+v, want only alpha at its own address %+v", spoofFirst, got, alpha)
				}
			}
		})
	}

	t.Run("another on-link address for the instance is reported", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "10.1.0.7")...))
		if got := c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "10.1.0.66")...)); !slices.Equal(got, []Peer{at(alpha, "10.1.0.66:7000")}) {
			t.Fatalf("got %+v, want alpha at the second address", got)
		}
		// An answer with only an A record for alpha's host.
		host := "alpha-01234567.local."
		if got := c.add(wire(t, &dns.A{Hdr: hdr(host, dns.TypeA), A: net.ParseIP("10.1.0.99")})); !slices.Equal(got, []Peer{at(alpha, "10.1.0.99:7000")}) {
			t.Fatalf("got %+v, want alpha at the address of the A-only answer", got)
		}
		// An SRV record alone that moves alpha to port 22.
		srv := answer("alpha-01234567", Service, 22, good)[1]
		if got := c.add(wire(t, srv)); !slices.Equal(got, []Peer{at(alpha, "10.1.0.99:22")}) {
			t.Fatalf("got %+v, want alpha at port 22", got)
		}
	})

	t.Run("flood is bounded", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		reported := 0
		for i := range maxInstances + 100 {
			inst := fmt.Sprintf("n%d-01234567", i)
			reported += len(c.add(wire(t, answer(inst, Service, 7000, good, "10.1.0.7")...)))
		}
		if len(c.srv) > maxInstances || len(c.txt) > maxInstances || len(c.addrs) > maxInstances || len(c.last) > maxInstances {
			t.Fatalf("kept %d SRV, %d TXT, %d hosts, %d reported; the bound is %d", len(c.srv), len(c.txt), len(c.addrs), len(c.last), maxInstances)
		}
		// Every instance carries the same id: a browser keeps one per id,
		// but the collector reports each instance it holds once.
		if reported != maxInstances {
			t.Fatalf("reported %d peers, want %d", reported, maxInstances)
		}

		c = newCollector(testLink(), slog.New(slog.DiscardHandler))
		host := "flood.local."
		var rrs []dns.RR
		for i := range 300 {
			rrs = append(rrs, &dns.A{Hdr: hdr(host, dns.TypeA), A: net.IPv4(10, 1, 0, byte(i))})
		}
		c.add(wire(t, rrs...))
		if n := len(c.addrs[host]); n == 0 || n > maxAddrsOnHost {
			t.Fatalf("kept %d addresses for one host; the bound is %d", n, maxAddrsOnHost)
		}
	})
}

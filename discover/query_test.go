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

	t.Run("one answer", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "10.1.0.7")...))
		if got := c.complete(false); !slices.Equal(got, []Peer{alpha}) {
			t.Fatalf("got %+v, want %+v", got, alpha)
		}
		c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "10.1.0.7")...))
		if got := c.complete(true); len(got) != 0 {
			t.Fatalf("reported again: %+v", got)
		}
	})

	t.Run("names differ in case", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		rrs := answer("Alpha-01234567", "_TreeCast._TCP", 7000, good, "10.1.0.7")
		rrs[2].Header().Name = "ALPHA-01234567.LOCAL."
		c.add(wire(t, rrs...))
		want := alpha
		want.Instance = "Alpha-01234567"
		if got := c.complete(false); !slices.Equal(got, []Peer{want}) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})

	t.Run("records split over answers", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		rrs := answer("alpha-01234567", Service, 7000, good, "10.1.0.7")
		for _, rr := range rrs[:3] {
			c.add(wire(t, rr))
			if got := c.complete(true); len(got) != 0 {
				t.Fatalf("reported before the TXT record came: %+v", got)
			}
		}
		c.add(wire(t, rrs[3]))
		if got := c.complete(false); !slices.Equal(got, []Peer{alpha}) {
			t.Fatalf("got %+v, want %+v", got, alpha)
		}
	})

	t.Run("other services ignored", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		c.add(wire(t, answer("printer", "_ipp._tcp", 631, good, "10.1.0.9")...))
		c.add(wire(t, answer("x", "_treecast._udp", 7000, good, "10.1.0.9")...))
		if got := c.complete(true); len(got) != 0 {
			t.Fatalf("got %+v, want nothing", got)
		}
	})

	t.Run("bad TXT dropped for good", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		c.add(wire(t, answer("evil-01234567", Service, 7000, []string{"v=1", "id=nope"}, "10.1.0.7")...))
		if got := c.complete(true); len(got) != 0 {
			t.Fatalf("got %+v, want nothing", got)
		}
		c.add(wire(t, answer("evil-01234567", Service, 7000, good, "10.1.0.7")...))
		if got := c.complete(true); len(got) != 0 {
			t.Fatalf("a rejected instance came back in the same round: %+v", got)
		}
	})

	t.Run("port 0 dropped", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		c.add(wire(t, answer("alpha-01234567", Service, 0, good, "10.1.0.7")...))
		if got := c.complete(true); len(got) != 0 {
			t.Fatalf("got %+v, want nothing", got)
		}
	})

	t.Run("address on this link preferred", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "192.168.9.7")...))
		if got := c.complete(false); len(got) != 0 {
			t.Fatalf("reported an off-link address before the round ended: %+v", got)
		}
		c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "10.1.0.7")...))
		if got := c.complete(false); !slices.Equal(got, []Peer{alpha}) {
			t.Fatalf("got %+v, want %+v", got, alpha)
		}
	})

	t.Run("off-link address at round end", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		c.add(wire(t, answer("alpha-01234567", Service, 7000, good, "192.168.9.7", "192.168.9.8")...))
		want := alpha
		want.Addr = netip.MustParseAddrPort("192.168.9.7:7000")
		if got := c.complete(true); !slices.Equal(got, []Peer{want}) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})

	t.Run("flood is bounded", func(t *testing.T) {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		for i := range maxInstances + 100 {
			inst := fmt.Sprintf("n%d-01234567", i)
			c.add(wire(t, answer(inst, Service, 7000, good, "10.1.0.7")...))
		}
		host := "flood.local."
		for i := range 300 {
			c.add(wire(t, &dns.A{Hdr: hdr(host, dns.TypeA), A: net.IPv4(10, 1, 1, byte(i))}))
		}
		if len(c.srv) > maxInstances || len(c.txt) > maxInstances || len(c.addrs) > maxInstances {
			t.Fatalf("kept %d SRV, %d TXT, %d hosts; the bound is %d", len(c.srv), len(c.txt), len(c.addrs), maxInstances)
		}
		if n := len(c.addrs[host]); n > maxAddrsOnHost {
			t.Fatalf("kept %d addresses for one host; the bound is %d", n, maxAddrsOnHost)
		}
		// Every instance carries the same id: a browser keeps one per id,
		// but the collector reports each instance it holds once.
		if got := c.complete(true); len(got) != maxInstances {
			t.Fatalf("reported %d peers, want %d", len(got), maxInstances)
		}
	})
}

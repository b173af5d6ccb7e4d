package relay

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// A node feeds the children the seed gave it, each from the address the
// seed reached it at, and the seed's own fetch from the seed's address;
// anyone else is refused after a short wait for the seed's word, and a
// child that comes back ends its earlier feed.
func TestFeedingAdmitsOnlyTheSeedsChildren(t *testing.T) {
	ctx := context.Background()
	kidA, kidB, stranger := NodeID{1}, NodeID{2}, NodeID{9}
	here, there, seed := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6"), netip.MustParseAddr("10.0.0.1")
	named := func() *feeding {
		f := newFeeding()
		f.owe(0, 2, []kid{{kidA, here}, {kidB, there}})
		f.owe(1, 0, []kid{})
		return f
	}
	for _, tt := range []struct {
		name string
		f    *feeding
		id   NodeID
		addr netip.Addr
		st   uint8
		want bool
	}{
		{"a child the seed gave it", named(), kidA, here, 0, true},
		{"the other child", named(), kidB, there, 0, true},
		{"a child's id from another host", named(), kidA, there, 0, false},
		{"a child in the stripe it is not given in", named(), kidA, here, 1, false},
		{"an id the seed never named", named(), stranger, here, 0, false},
		{"the seed's own fetch", named(), NodeID{}, seed, 0, true},
		{"the seed's id from another host", named(), NodeID{}, here, 0, false},
		{"an earlier seed names no one: anyone", func() *feeding { f := newFeeding(); f.owe(0, 2, nil); return f }(), stranger, here, 0, true},
		{"before the seed's first parent frame: no one", newFeeding(), kidA, here, 0, false},
		{"nor the seed's own fetch", newFeeding(), NodeID{}, seed, 0, false},
		{"a stripe the seed has not spoken of yet", func() *feeding { f := newFeeding(); f.owe(0, 1, []kid{{kidA, here}}); return f }(), kidA, here, 1, false},
		{"a stripe out of range", named(), kidA, here, maxStripes, false},
	} {
		start := time.Now()
		_, ok := tt.f.admit(ctx, tt.id, tt.addr, seed, tt.st, nil, 20*time.Millisecond, nil)
		if ok != tt.want {
			t.Errorf("%s: admitted %v, want %v", tt.name, ok, tt.want)
		}
		if took := time.Since(start); tt.want && took > 10*time.Millisecond {
			t.Errorf("%s: admitted after %s: a known child waits for nothing", tt.name, took)
		}
	}
}

// A child that comes before the seed's word on it is fed once the word
// comes; a second feed to the same child in the same stripe ends the first.
func TestFeedingAdmitsAChildNamedLateAndOneFeedEach(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kid1, addr, seed := NodeID{1}, netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.1")
	f := newFeeding()
	f.owe(0, 0, []kid{})
	a, b := net.Pipe()
	defer b.Close()
	got := make(chan bool, 1)
	go func() {
		_, ok := f.admit(ctx, kid1, addr, seed, 0, a, time.Minute, nil)
		got <- ok
	}()
	f.owe(0, 1, []kid{{kid1, addr}})
	if !<-got {
		t.Fatal("a child named while it waited was refused")
	}
	c, d := net.Pipe()
	defer d.Close()
	done, ok := f.admit(ctx, kid1, addr, seed, 0, c, time.Minute, nil)
	if !ok {
		t.Fatal("the child coming back was refused")
	}
	defer done()
	if _, err := a.Write([]byte{0}); err == nil {
		t.Error("the child's first feed still open after it came back")
	}
}

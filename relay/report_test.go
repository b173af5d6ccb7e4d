package relay

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// A progress datagram opens under its own key only, whole and unaltered.
func TestDatagramSeal(t *testing.T) {
	sec, err := NewSecret([]byte("a fleet secret of enough bytes"))
	if err != nil {
		t.Fatal(err)
	}
	token := [16]byte{1, 2, 3}
	progress := progressMsg{held: 5 << 20, received: 6 << 20, millis: 1234}.encode()
	for _, s := range []*Secret{nil, sec} {
		key := reportKey(s, token)
		d := appendDatagram(nil, key, token, progress)
		if tok, ok := datagramToken(d); !ok || tok != token {
			t.Fatalf("secret %v: token %x, %v", s != nil, tok, ok)
		}
		if p, ok := openDatagram(d, key); !ok || string(p) != string(progress) {
			t.Fatalf("secret %v: opened %v, %x", s != nil, ok, p)
		}
		for i := range d {
			bad := append([]byte(nil), d...)
			bad[i] ^= 0x40
			if tok, ok := datagramToken(bad); ok && tok == token {
				if _, ok := openDatagram(bad, key); ok {
					t.Errorf("secret %v: a datagram with byte %d changed opened", s != nil, i)
				}
			}
		}
		for _, n := range []int{0, headerLen, headerLen + 16 + sealLen - 1, len(d) - 1} {
			if _, ok := datagramToken(d[:n]); ok {
				t.Errorf("secret %v: a datagram cut to %d bytes was taken", s != nil, n)
			}
		}
		if _, ok := openDatagram(d, reportKey(nil, [16]byte{9})); ok {
			t.Errorf("secret %v: opened under another token's key", s != nil)
		}
	}
	// With a secret, the token alone does not make the key.
	if _, ok := openDatagram(appendDatagram(nil, token[:], token, progress), reportKey(sec, token)); ok {
		t.Error("with a fleet secret, a datagram sealed by the token alone opened")
	}
}

// The seed's inbox passes on a node's sealed datagrams from the node's
// address, and drops those from any other address or under an unknown
// token, over real UDP on loopback.
func TestInboxTakesOnlyTheNodesOwnDatagrams(t *testing.T) {
	in, err := listenInbox(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan event, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		in.run(ctx, events)
	}()
	defer func() {
		cancel()
		in.close()
		<-done
	}()
	n, other := &node{id: 1}, &node{id: 2}
	token := in.open(n, netip.MustParseAddr("127.0.0.1"))
	send := func(from string, m reportMsg, millis uint64) {
		t.Helper()
		seed, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer seed.Close()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", seed.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		o, err := dialOutbox(c, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer o.close()
		if err := o.send(progressMsg{held: 1, received: 1, millis: millis}.encode()); err != nil {
			t.Fatal(err)
		}
	}
	// Datagrams on loopback arrive in the order sent: the first passed on
	// is the first that should be.
	next := func(want *node, tok [16]byte, millis uint64) {
		t.Helper()
		select {
		case ev := <-events:
			p, err := decodeProgress(ev.f.payload)
			if ev.n != want || ev.token != tok || ev.f.typ != msgProgress || err != nil || p.millis != millis {
				t.Fatalf("passed on: node %d, token %x, %s, millis %d, %v; want node %d's datagram %d", ev.n.id, ev.token, ev.f.typ, p.millis, err, want.id, millis)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("node %d's datagram %d was not passed on", want.id, millis)
		}
	}
	send("127.0.0.2", reportMsg{port: in.port(), token: token}, 1)       // from another address
	send("127.0.0.1", reportMsg{port: in.port(), token: [16]byte{7}}, 2) // under an unknown token
	send("127.0.0.1", reportMsg{port: in.port(), token: token}, 3)
	next(n, token, 3)

	in.shut(token)
	otherToken := in.open(other, netip.MustParseAddr("127.0.0.1"))
	send("127.0.0.1", reportMsg{port: in.port(), token: token}, 4) // shut
	send("127.0.0.1", reportMsg{port: in.port(), token: otherToken}, 5)
	next(other, otherToken, 5)
}

// The seed tells each node where to send its progress with its parents,
// in one write; takes a node's datagram only under its token and newer
// than what it took before (a datagram sent again keeps no dead node
// alive); and tells a node whose datagrams stopped coming to report over
// its connection, for good.
func TestSeedHearsNodesByDatagram(t *testing.T) {
	ctx := context.Background()
	s := simSeed(4, 2, time.Now())
	var err error
	if s.in, err = listenInbox(nil); err != nil {
		t.Fatal(err)
	}
	defer s.in.close()
	var moves []move
	for _, n := range s.nodes {
		n.datagrams = true
		for st := range s.t.stripes {
			moves = append(moves, move{node: n.id, stripe: st, parent: s.t.parentOf(n.id, st)})
		}
	}
	s.tell(moves, false)
	for _, n := range s.nodes {
		l := linkOf(n)
		if len(l.reports) != 1 || l.reports[0].port != s.in.port() || l.reports[0].token != n.token || !n.byDatagram {
			t.Fatalf("node %s was told %+v (token %x, port %d)", n.label(), l.reports, n.token, s.in.port())
		}
	}
	a, b := s.nodes[0], s.nodes[1]
	datagram := func(n *node, token [16]byte, held, millis uint64) event {
		return event{n: n, f: frame{typ: msgProgress, payload: progressMsg{held: held, received: held, millis: millis}.encode()}, token: token}
	}
	long := time.Now().Add(-time.Hour)

	s.handle(ctx, datagram(a, a.token, 1<<20, 10))
	if a.held != 1<<20 || a.clock != 10 || a.lastSeen.Before(time.Now().Add(-time.Minute)) {
		t.Fatalf("a's datagram: held %d, clock %d, last seen %v ago", a.held, a.clock, time.Since(a.lastSeen))
	}
	for _, ev := range []event{
		datagram(a, a.token, 2<<20, 10), // sent again
		datagram(a, a.token, 2<<20, 9),  // older
		datagram(a, b.token, 2<<20, 11), // another node's token
	} {
		a.lastSeen = long
		s.handle(ctx, ev)
		if a.held != 1<<20 || !a.lastSeen.Equal(long) {
			t.Fatalf("took %+v: held %d, last seen %v", ev, a.held, a.lastSeen)
		}
	}

	// b's datagrams stop coming; a's do not.
	old := b.token
	now := time.Now()
	a.lastSeen, a.toldAt = now, now.Add(-time.Minute)
	b.lastSeen, b.toldAt = now.Add(-3*s.cfg.DeadAfter/4), now.Add(-time.Minute)
	s.tick(now)
	if l := linkOf(a); len(l.reports) != 1 || !a.byDatagram {
		t.Fatalf("a, heard lately, was told %+v", l.reports)
	}
	if l := linkOf(b); len(l.reports) != 2 || l.reports[1] != (reportMsg{}) || b.byDatagram || b.datagrams {
		t.Fatalf("b, silent, was told %+v; by datagram %v", l.reports, b.byDatagram)
	}
	b.lastSeen = long
	s.handle(ctx, datagram(b, old, 3<<20, 50))
	if !b.lastSeen.Equal(long) {
		t.Fatal("took a datagram from a node told to report over its connection")
	}
	s.handle(ctx, event{n: b, f: frame{typ: msgProgress, payload: progressMsg{held: 3 << 20, received: 3 << 20, millis: 60}.encode()}})
	if b.held != 3<<20 || b.lastSeen.Equal(long) {
		t.Fatalf("b's progress over its connection: held %d", b.held)
	}
	s.tell([]move{{node: b.id, stripe: 0, parent: s.t.parentOf(b.id, 0)}}, true)
	if l := linkOf(b); len(l.reports) != 2 {
		t.Fatalf("b was told to report by datagram again: %+v", l.reports)
	}
}

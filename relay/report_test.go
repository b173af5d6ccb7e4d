package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// runInbox starts a seed's inbox that passes datagrams to events until the
// test ends.
func runInbox(t *testing.T, events chan<- event) *inbox {
	t.Helper()
	in, err := listenInbox(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		in.run(ctx, events)
	}()
	t.Cleanup(func() {
		cancel()
		in.close()
		<-done
	})
	return in
}

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
	events := make(chan event, 8)
	in := runInbox(t, events)
	n, other := &node{id: 1}, &node{id: 2}
	token := in.open(n, netip.MustParseAddr("127.0.0.1"), time.Time{})
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
	otherToken := in.open(other, netip.MustParseAddr("127.0.0.1"), time.Time{})
	send("127.0.0.1", reportMsg{port: in.port(), token: token}, 4) // shut
	send("127.0.0.1", reportMsg{port: in.port(), token: otherToken}, 5)
	next(other, otherToken, 5)
}

// datagramSeed is a simulated seed of n nodes, each told to report by
// datagram, with a real inbox (never run: events are handed to handle).
func datagramSeed(t *testing.T, n int, now time.Time) *seedRun {
	t.Helper()
	s := simSeed(n, 2, now)
	var err error
	if s.in, err = listenInbox(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.in.close)
	var moves []move
	for _, nd := range s.nodes {
		nd.datagrams = true
		for st := range s.t.stripes {
			moves = append(moves, move{node: nd.id, stripe: st, parent: s.t.parentOf(nd.id, st)})
		}
	}
	s.tell(moves, false)
	for _, nd := range s.nodes {
		if !nd.byDatagram {
			t.Fatalf("node %s was not told to report by datagram", nd.label())
		}
	}
	return s
}

// The seed tells each node where to send its progress with its parents,
// in one write; takes a node's datagram only under its token and newer
// than what it took before (a datagram sent again keeps no dead node
// alive); and tells a node whose datagrams stopped coming to report over
// its connection, for good.
func TestSeedHearsNodesByDatagram(t *testing.T) {
	ctx := context.Background()
	s := datagramSeed(t, 4, time.Now())
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

// A node sends its progress where its seed's report frame says: sealed
// datagrams to the port named, at once and then every period, and over the
// control connection again, at once, when told port 0.
func TestNodeReportsWhereTheSeedSays(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig()
	path, _ := writePackage(t, 300<<10)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	r, err := NewReceiver(cfg, ReceiverOptions{Name: "n", Dir: t.TempDir(), Apply: func(context.Context, Package) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		_, err := r.Next(ctx)
		done <- err
	}()
	m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, a := offerAccepted(t, fmt.Sprintf("127.0.0.1:%d", r.Port()), Sign(m, key))
	defer c.conn.Close()
	if !a.datagrams {
		t.Fatalf("accept %+v: does not say it takes report frames", a)
	}

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	token := [16]byte{0: 0x5e, 15: 0xed}
	if err := c.send(msgReport, reportMsg{port: uint16(udp.LocalAddr().(*net.UDPAddr).Port), token: token}.encode()); err != nil {
		t.Fatal(err)
	}
	udp.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	for i := range 2 {
		n, from, err := udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		tok, ok := datagramToken(buf[:n])
		p, opened := openDatagram(buf[:n], reportKey(nil, token))
		pm, perr := decodeProgress(p)
		if !ok || tok != token || !opened || perr != nil || pm.millis == 0 || from.Addr().Unmap() != netip.MustParseAddr("127.0.0.1") {
			t.Fatalf("datagram %d from %s: token %x %v, opened %v, progress %+v %v", i, from, tok, ok, opened, pm, perr)
		}
	}

	if err := c.send(msgReport, reportMsg{}.encode()); err != nil {
		t.Fatal(err)
	}
	f, err := c.recvOnly(300*time.Millisecond, nodeFrameLimit, msgProgress) // at once, not a period (500 ms) on
	if err != nil {
		t.Fatalf("no progress over the connection after port 0: %v", err)
	}
	if _, err := decodeProgress(f.payload); err != nil {
		t.Fatal(err)
	}
	c.send(msgEnd, nil)
	<-done
}

package relay

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// fetchAs opens one data connection from host to addr under id, asks for
// stripe of stripes with nothing held, and counts every byte that comes
// until the connection ends. It returns the first frame's type.
func fetchAs(ctx context.Context, host string, addr netip.AddrPort, id NodeID, m *Manifest, stripes, stripe uint8, got *atomic.Int64) (msgType, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(host)}}
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	writeFrame(conn, msgHello, helloMsg{role: roleData, id: id, name: "red"}.encode())
	writeFrame(conn, msgWant, wantMsg{session: m.Session, stripes: stripes, stripe: stripe, have: newBitmap(m.Blocks())}.encode())
	f, err := readFrame(conn, nil)
	if err != nil {
		stop()
		conn.Close()
		return 0, err
	}
	if f.typ == msgRefuse {
		stop()
		conn.Close()
		return f.typ, nil
	}
	got.Add(int64(headerLen + len(f.payload)))
	go func() {
		defer stop()
		defer conn.Close()
		n, _ := io.Copy(io.Discard, conn)
		got.Add(n)
	}()
	return f.typ, nil
}

// A root of stripe 0 (placed under the seed there, by its own id, from its
// own address) asks the seed for "stripe 0 of 1", every block of the
// package, both trees' share of the seed's uplink: refused, as a want's
// stripes must be the session's. Before, the seed streamed it all.
func TestSeedFeedsARootItsStripeOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := testConfig() // two trees
	cfg.SessionGrace = 3 * time.Second
	path, data := writePackage(t, 2<<20)
	nodes := startNodes(t, ctx, cfg, 3, nil)
	f := startFake(t, ctx, &fake{host: "127.0.0.2"})
	var got atomic.Int64
	var man atomic.Pointer[Manifest]
	started := false
	var first msgType
	f.onControl = func(c *ctrl, m *Manifest) {
		man.Store(m)
		f.report(c, m, 0, func(fr frame) {
			if fr.typ != msgParent || started {
				return
			}
			p, err := decodeParent(fr.payload)
			if err != nil || p.id != (NodeID{}) {
				return
			}
			started = true
			first, _ = fetchAs(ctx, "127.0.0.2", p.addr, f.id, m, 1, 0, &got)
		})
	}
	honestSession(t, ctx, cfg, nodes, path, data, append([]Peer{f.peer("root")}, peersOf(nodes)...))
	if !started {
		t.Fatal("the fake was never placed under the seed: the test shows nothing")
	}
	m := man.Load()
	share := m.stripeBytes(2, int(0))
	t.Logf("first frame %s; the seed sent the root %s; its stripe is %s, the package %s", first, HumanBytes(got.Load()), HumanBytes(share), HumanBytes(m.Size))
	if got.Load() > share+share/8 {
		t.Errorf("the seed sent a root of one stripe %s, more than its stripe's %s: a want's stripes is not held to the session's", HumanBytes(got.Load()), HumanBytes(share))
	}
}

// The same at a relay: a child the seed named to a relay in one stripe
// asks it for "stripe 0 of 1", and is refused.
func TestRelayFeedsAChildItsStripeOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SessionGrace = 3 * time.Second
	path, data := writePackage(t, 2<<20)
	nodes := startNodes(t, ctx, cfg, 5, nil)
	f := startFake(t, ctx, &fake{host: "127.0.0.2"})
	var got atomic.Int64
	var man atomic.Pointer[Manifest]
	started := false
	var first msgType
	f.onControl = func(c *ctrl, m *Manifest) {
		man.Store(m)
		f.report(c, m, 0, func(fr frame) {
			if fr.typ != msgParent || started {
				return
			}
			p, err := decodeParent(fr.payload)
			if err != nil || p.id == (NodeID{}) || p.stripe != 0 {
				return
			}
			started = true
			first, _ = fetchAs(ctx, "127.0.0.2", p.addr, f.id, m, 1, 0, &got)
		})
	}
	// Last in the seed's order: a leaf under a relay in stripe 0.
	honestSession(t, ctx, cfg, nodes, path, data, append(peersOf(nodes), f.peer("kid")))
	if !started {
		t.Fatal("the fake was never given a relay: the test shows nothing")
	}
	m := man.Load()
	share := m.stripeBytes(2, 0)
	t.Logf("first frame %s; the relay sent its child %s; a stripe is %s, the package %s", first, HumanBytes(got.Load()), HumanBytes(share), HumanBytes(m.Size))
	if got.Load() > share+share/8 {
		t.Errorf("a relay sent one child %s, more than a stripe's %s: a want's stripes is not held to the session's", HumanBytes(got.Load()), HumanBytes(share))
	}
}

// A host that was offered the session (so it knows the session id) holds
// its own accept, and meanwhile asks an honest node it was never given,
// under a made-up id, for a stripe. The honest node accepted, but the
// seed has not planned yet (it waits for the last handshake, or 500 ms):
// the node waits for the seed's first word before it feeds anyone, and
// the stranger gets nothing. Before, it was fed the whole stripe.
func TestRelayFeedsNoStrangerBeforeTheSeedsWord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SessionGrace = 3 * time.Second
	path, data := writePackage(t, 2<<20)
	nodes := startNodes(t, ctx, cfg, 3, nil)
	victim := peersOf(nodes)[0].Addr
	var got atomic.Int64
	var first atomic.Int32
	var man atomic.Pointer[Manifest]
	stranger := NodeID{0xee, 1}
	f := startFake(t, ctx, &fake{host: "127.0.0.2"})
	f.held = func(m *Manifest) uint64 {
		man.Store(m)
		// Bounded: 100 tries, 10 ms apart, while the seed waits on this
		// handshake.
		for range 100 {
			typ, err := fetchAs(ctx, "127.0.0.2", victim, stranger, m, 2, 0, &got)
			if err == nil && typ != msgRefuse {
				first.Store(int32(typ))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		return 0
	}
	honestSession(t, ctx, cfg, nodes, path, data, append([]Peer{f.peer("stranger")}, peersOf(nodes)...))
	m := man.Load()
	if m == nil {
		t.Fatal("the fake was never offered the session")
	}
	t.Logf("first frame %s; the honest node sent a made-up id it was never given %s (a stripe is %s)", msgType(first.Load()), HumanBytes(got.Load()), HumanBytes(m.stripeBytes(2, 0)))
	if got.Load() > 64<<10 {
		t.Errorf("an honest node fed %s to a child the seed never gave it, under a made-up id", HumanBytes(got.Load()))
	}
}

// A child the seed named to a relay opens its feed there, then says the
// relay was lost. The seed moves it to another relay and tells the first
// its children without it, and the first relay ends its feed: one host
// cannot gather a stripe from relay after relay by complaining. Before,
// each complaint added one more relay streaming to it.
func TestMovedChildKeepsNoOldFeed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.MaxRate = "16mbit"
	cfg.SessionGrace = 3 * time.Second
	path, data := writePackage(t, 4<<20)
	nodes := startNodes(t, ctx, cfg, 6, nil)
	f := startFake(t, ctx, &fake{host: "127.0.0.2"})
	var got atomic.Int64
	var man atomic.Pointer[Manifest]
	feeds := 0
	seen := map[NodeID]bool{}
	f.onControl = func(c *ctrl, m *Manifest) {
		man.Store(m)
		f.report(c, m, 0, func(fr frame) {
			if fr.typ != msgParent {
				return
			}
			p, err := decodeParent(fr.payload)
			if err != nil || p.id == (NodeID{}) || p.stripe != 0 || seen[p.id] {
				return
			}
			seen[p.id] = true
			typ, err := fetchAs(ctx, "127.0.0.2", p.addr, f.id, m, 2, 0, &got)
			if err != nil || typ == msgRefuse {
				return
			}
			feeds++
			c.send(msgComplain, complainMsg{parent: p.id, kind: complainLost, detail: "gone", stripe: 0}.encode())
		})
	}
	honestSession(t, ctx, cfg, nodes, path, data, append(peersOf(nodes), f.peer("kid")))
	m := man.Load()
	if m == nil {
		t.Fatal("no session")
	}
	share := m.stripeBytes(2, 0)
	t.Logf("%d relays fed the one child; it took %s of stripe 0 (a stripe is %s)", feeds, HumanBytes(got.Load()), HumanBytes(share))
	if feeds < 2 {
		t.Fatal("the fake was moved to no second relay: the test shows nothing")
	}
	if got.Load() > share+share/4 {
		t.Errorf("relays kept feeding a child after the seed moved it away: one host took %s of a %s stripe", HumanBytes(got.Load()), HumanBytes(share))
	}
}

// A host of the session opens data connections to an honest node from a
// few loopback addresses under made-up ids. Each waits in feeding.admit
// for the seed's word (DeadAfter/2) while it holds an unproven slot; the
// gate closes the oldest for each new one, and its wait ends with it, so
// the waiting goroutines stay near the gate's 64 slots. Before, each
// lingered until its timer: 11,795 at once after 3 s.
func TestChildWaitsEndWithTheirConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.DeadAfter = 10 * time.Second // the default: a wait of 5 s
	cfg.SeedTimeout = 20 * time.Second
	cfg.MaxRate = "8mbit"
	cfg.SessionGrace = 3 * time.Second
	path, data := writePackage(t, 4<<20)
	nodes := startNodes(t, ctx, cfg, 3, nil)
	victim := peersOf(nodes)[0].Addr
	f := startFake(t, ctx, &fake{host: "127.0.0.2"})
	peak := make(chan int, 1)
	started := false
	f.onControl = func(c *ctrl, m *Manifest) {
		f.report(c, m, 0, func(fr frame) {
			if fr.typ != msgParent || started {
				return
			}
			started = true
			go func() {
				fctx, stop := context.WithTimeout(ctx, 3*time.Second)
				defer stop()
				for src := range 16 {
					host := net.IPv4(127, 0, 1, byte(10+src))
					for k := range 8 {
						go func() {
							d := net.Dialer{LocalAddr: &net.TCPAddr{IP: host}}
							for i := 0; fctx.Err() == nil && i < 10000; i++ {
								conn, err := d.DialContext(fctx, "tcp", victim.String())
								if err != nil {
									time.Sleep(5 * time.Millisecond)
									continue
								}
								writeFrame(conn, msgHello, helloMsg{role: roleData, id: NodeID{0xf2, byte(src), byte(k), byte(i), byte(i >> 8)}, name: "w"}.encode())
								writeFrame(conn, msgWant, wantMsg{session: m.Session, stripes: 2, stripe: 0, have: newBitmap(m.Blocks())}.encode())
								conn.SetReadDeadline(time.Now().Add(time.Second))
								io.Copy(io.Discard, conn)
								conn.Close()
							}
						}()
					}
				}
				most := 0
				for fctx.Err() == nil {
					most = max(most, countStacks("(*feeding).admit"))
					time.Sleep(50 * time.Millisecond)
				}
				peak <- most
			}()
		})
	}
	honestSession(t, ctx, cfg, nodes, path, data, append(peersOf(nodes), f.peer("member")))
	if !started {
		t.Fatal("no flood")
	}
	most := <-peak
	t.Logf("at most %d goroutines waited in feeding.admit at once (the gate holds %d unproven connections)", most, maxUnproven)
	if most > 2*maxUnproven {
		t.Errorf("%d goroutines waiting for the seed's word at once, on connections the gate had closed: the wait does not end with its connection", most)
	}
}

func countStacks(fn string) int {
	buf := make([]byte, 64<<20)
	n := runtime.Stack(buf, true)
	return bytes.Count(buf[:n], []byte(fn))
}

package relay

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// floodData opens k data connections to a parent at addr, each asking
// for every block of stripe i%stripes under the hello id own (every
// other one) or an id of its own, and reads what comes as fast as it
// comes; each one that ends is opened again, until ctx ends. It counts
// in madeUp the bytes read under made-up ids by connections that were
// fed, not refused.
func floodData(ctx context.Context, from net.Addr, addr netip.AddrPort, m *Manifest, stripes uint8, own NodeID, k int, madeUp *atomic.Int64) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.(*net.TCPAddr).IP}}
	for i := range k {
		go func() {
			for ctx.Err() == nil {
				conn, err := d.Dial("tcp", addr.String())
				if err != nil {
					return
				}
				stop := context.AfterFunc(ctx, func() { conn.Close() })
				id := own
				if i%2 == 1 {
					id = NodeID{0xf1, byte(i)}
				}
				writeFrame(conn, msgHello, helloMsg{role: roleData, id: id, name: "flood"}.encode())
				w := wantMsg{session: m.Session, stripes: stripes, stripe: uint8(i / 2 % int(stripes)), have: newBitmap(m.Blocks())}
				writeFrame(conn, msgWant, w.encode())
				n, _ := io.Copy(io.Discard, conn)
				if id != own && n > maxRefuseLen+headerLen {
					madeUp.Add(n) // more than a refusal: fed
				}
				stop()
				conn.Close()
			}
		}()
	}
}

// floodSession runs honest receivers and a fake session member on a host
// of its own (127.0.0.2) that, at the first parent the seed names it for
// which atSeed says whether that parent is the seed, floods that parent
// as floodData does. It returns whether the flood began, and the bytes fed
// under made-up ids.
func floodSession(t *testing.T, honest int, atSeed bool) (began bool, madeUp int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.MaxRate = "16mbit" // every uplink: 2 MB/s
	cfg.SessionGrace = 3 * time.Second
	fctx, stopFlood := context.WithCancel(ctx)
	defer stopFlood()
	f := startFake(t, ctx, &fake{host: "127.0.0.2"})
	var fed atomic.Int64
	var started atomic.Bool
	f.onControl = func(c *ctrl, m *Manifest) {
		f.report(c, m, 0, func(fr frame) {
			if fr.typ != msgParent || started.Load() {
				return
			}
			p, err := decodeParent(fr.payload)
			if err != nil || (p.id == (NodeID{})) != atSeed {
				return
			}
			started.Store(true)
			floodData(fctx, f.ln.Addr(), p.addr, m, p.stripes, f.id, 64, &fed)
		})
	}
	start := time.Now()
	attackSession(t, ctx, cfg, honest, 2<<20, f.peer("member"))
	stopFlood()
	t.Logf("session took %s; %s fed under made-up ids", time.Since(start).Round(100*time.Millisecond), HumanBytes(fed.Load()))
	return started.Load(), fed.Load()
}

// A node of the session (it knows the session id and the seed's data
// port) opens 64 data connections to the seed, each wanting a whole
// stripe, under its own id or made-up ones. The seed feeds only a node
// the tree has under it, one feed per node and stripe: the flood takes
// no share of the seed's capped uplink from the roots, and every honest
// node applies the package. Before, the seed served all 64 and the
// honest nodes timed out.
func TestSeedDataFloodByOneMemberTakesNoShare(t *testing.T) {
	began, madeUp := floodSession(t, 3, true)
	if !began {
		t.Fatal("the member was never told the seed is its parent: no flood, the test shows nothing")
	}
	if madeUp > 64<<10 {
		t.Errorf("the seed sent %s to connections under ids it never placed under itself", HumanBytes(madeUp))
	}
}

// The same flood at a relay: a node of the session opens 64 data
// connections to the relay the seed gave it as a parent, under its own id
// or made-up ones. The relay feeds only the children the seed named to
// it, from their addresses, one feed each: its other child gets its
// share of the relay's capped uplink, and every honest node applies the
// package.
func TestRelayDataFloodByOneMemberTakesNoShare(t *testing.T) {
	began, madeUp := floodSession(t, 5, false)
	if !began {
		t.Fatal("the member was never given a relay as its parent: no flood, the test shows nothing")
	}
	if madeUp > 64<<10 {
		t.Errorf("the relay sent %s to connections under ids the seed never gave it: a host of the session takes a share of its uplink", HumanBytes(madeUp))
	}
}

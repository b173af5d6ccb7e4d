package relay

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// A host that answers mDNS and then dribbles its welcome, a byte at a
// time, each well within DeadAfter of the last, holds no session: every
// handshake step has a deadline of DeadAfter (doc.go, Limits). The seed
// plans without it after startQuiet, and must not then wait for it, past
// the end of every other node, for as long as it cares to dribble.
func TestDribblingHandshakeHoldsNoSessionsEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig() // DeadAfter 2 s
	path, _ := writePackage(t, 256<<10)
	nodes := startNodes(t, ctx, cfg, 2, nil)
	peers := append(peersOf(nodes), Peer{ID: NodeID{0xd1}, Name: "dribbler", Addr: dribbler(t, ctx, cfg.DeadAfter/4)})
	start := time.Now()
	rep := seedSession(t, ctx, cfg, path, 64<<10, peers)
	took := time.Since(start)
	for i := range nodes {
		if rep.Nodes[i].Status != StatusOK {
			t.Errorf("node %d: %s %q", i, rep.Nodes[i].Status, rep.Nodes[i].Error)
		}
	}
	// Its welcome's steps: at most DeadAfter each, and a few of them.
	if limit := 4*cfg.DeadAfter + 30*time.Second; took > limit {
		t.Errorf("the session took %s: a host that never finishes its handshake held its end (dribbler: %s %q)", took.Round(time.Second), rep.Nodes[2].Status, rep.Nodes[2].Error)
	}
}

// dribbler listens for a seed and answers each hello with a welcome of
// 4 KiB, a byte every gap.
func dribbler(t *testing.T, ctx context.Context, gap time.Duration) netip.AddrPort {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		if _, err := c.Read(make([]byte, 4096)); err != nil {
			return
		}
		if _, err := c.Write(appendHeader(nil, msgWelcome, 4096)); err != nil {
			return
		}
		for range 4096 {
			select {
			case <-time.After(gap):
			case <-ctx.Done():
				return
			}
			if _, err := c.Write([]byte{0}); err != nil {
				return
			}
		}
	})
}

// A handshake that fails adds no one to the plan, so it gives the plan no
// reason to wait on: a host that answers mDNS for many ids and hangs up on
// each connection a little under startQuiet after the last holds the
// honest receivers' start back by startQuiet for each id.
func TestFailingHandshakesDoNotPutOffThePlan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, _ := writePackage(t, 64<<10)
	nodes := startNodes(t, ctx, cfg, 2, nil)
	peers := peersOf(nodes)
	const fakes = 8
	for k := range fakes {
		peers = append(peers, Peer{ID: NodeID{0xfa, byte(k)}, Name: fmt.Sprintf("fake%d", k), Addr: hangUpAfter(t, time.Duration(k+1)*startQuiet*9/10)})
	}
	start := time.Now()
	reports := make(chan *Report, 1)
	go func() { reports <- seedSession(t, ctx, cfg, path, 64<<10, peers) }()
	appliedAll(t, ctx, nodes, []int{0, 1}, "has not applied the package")
	if took := time.Since(start); took > 3*startQuiet {
		t.Errorf("the honest receivers had the package after %s: %d hosts that hang up put the plan off", took.Round(10*time.Millisecond), fakes)
	}
	<-reports
}

// hangUpAfter listens, welcomes each seed and closes its connection after d.
func hangUpAfter(t *testing.T, d time.Duration) netip.AddrPort {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		time.AfterFunc(d, func() { c.Close() })
		// It welcomes the seed, takes its offer, says nothing more.
		if _, err := c.Read(make([]byte, 4096)); err != nil {
			return
		}
		writeFrame(c, msgWelcome, welcomeMsg{id: NodeID{0xfa}, name: "fake"}.encode())
		io.Copy(io.Discard, c)
	})
}

package relay

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// A host that holds a signed offer (any receiver of that session has it,
// and without a fleet secret it crosses the LAN in clear) replays it to a
// receiver that applied it, and pings on. The receiver answers "applied"
// and leaves the connection after DeadAfter, so the seed's next session,
// after the receiver's seed timeout, finds it idle and delivers.
func TestReplayedAppliedOfferHoldsNoReceiver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	dest := t.TempDir() + "/out"
	var id NodeID
	id[0] = 0x42
	r, err := NewReceiver(cfg, ReceiverOptions{ID: id, Name: "x", Dir: t.TempDir(), Apply: copyApply(dest)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	results := make(chan Result, 8)
	go func() {
		for ctx.Err() == nil {
			res, err := r.Next(ctx)
			if err != nil {
				return
			}
			results <- res
		}
	}()
	peer := Peer{ID: id, Name: "x", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(r.Port()))}
	key := testKey(9)
	session := func(size int) (*Signed, *Report) {
		path, _ := writePackage(t, size)
		m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		signed := Sign(m, key)
		rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: signed, Path: path, Peers: []Peer{peer}})
		if err != nil {
			t.Fatal(err)
		}
		return signed, rep
	}
	first, rep := session(256 << 10)
	if rep.Nodes[0].Status != StatusOK {
		t.Fatalf("first session: %s %q", rep.Nodes[0].Status, rep.Nodes[0].Error)
	}
	<-results

	conn, err := net.Dial("tcp", peer.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := newCtrl(conn, cfg.DeadAfter)
	c.sendFrames(frame{typ: msgHello, payload: helloMsg{role: roleControl}.encode()}, frame{typ: msgOffer, payload: first.encode()})
	if _, err := c.expect(cfg.DeadAfter, msgWelcome); err != nil {
		t.Fatal(err)
	}
	if _, err := c.expect(cfg.DeadAfter, msgAccept); err != nil {
		t.Fatalf("replayed offer: %v", err)
	}
	pinging := make(chan struct{})
	go func() {
		defer close(pinging)
		tick := time.NewTicker(cfg.Heartbeat)
		defer tick.Stop()
		for range tick.C {
			if ctx.Err() != nil || c.send(msgPing, nil) != nil {
				return
			}
		}
	}()
	select {
	case res := <-results:
		if !res.Already {
			t.Errorf("the replayed session: %+v, want applied already", res)
		}
	case <-time.After(cfg.SeedTimeout + time.Second):
		t.Fatalf("the receiver still holds the replayed session %s after it accepted it", cfg.SeedTimeout+time.Second)
	}
	_, rep = session(300 << 10)
	if n := rep.Nodes[0]; n.Status != StatusOK {
		t.Errorf("the next session: the receiver is reported %s %q", n.Status, n.Error)
	}
	conn.Close()
	<-pinging
}

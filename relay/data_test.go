package relay

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// A child moved to a new parent may hold its whole stripe of many chunks
// and lack only the other stripe's blocks there: the parent sends those
// chunks' block hashes one after another, and then blocks again. What it
// gathers must never outgrow its buffer, and the child must end with its
// stripe whole and intact.
func TestFeedManyHashesThenBlocks(t *testing.T) {
	const chunk, chunks, held = 1 << 20, 24, 20
	data := testData(chunks * chunk)
	m := testManifest(data, chunk)
	_, f := seedFile(t, data)
	sp := mustOpenSpool(t, t.TempDir(), m)
	for g := range held * m.blocksPerChunk() {
		if g%2 == 0 {
			mustPut(t, sp, data, g)
		}
	}
	need := map[int]bool{}
	for i := range chunks {
		need[i] = true
	}

	cfg := DefaultConfig()
	parent, child := net.Pipe()
	defer child.Close()
	fed := make(chan error, 1)
	go func() {
		defer parent.Close()
		w := wantMsg{session: m.Session, stripes: 2, stripe: 0, have: sp.bitmapCopy()}
		_, err := feed(context.Background(), parent, newFileSource(f, m), newFeedPacer(cfg, m.BlockSize), m, w, cfg, feedOptions{})
		fed <- err
	}()
	p := parentMsg{stripes: 2, stripe: 0}
	if err := pull(bufio.NewReaderSize(child, fetchBuffer), p, sp, need, func(int) {}, 0, nil, nil); err != nil {
		t.Fatalf("pull: %v", err)
	}
	if err := <-fed; err != nil {
		t.Fatalf("feed: %v", err)
	}
	buf := make([]byte, m.BlockSize)
	for g := 0; g < m.Blocks(); g += 2 {
		got, err := sp.readBlock(g, buf)
		if err != nil || !bytes.Equal(got, blockOf(data, m, g)) {
			t.Fatalf("block %d of stripe 0 is not the package's: %v", g, err)
		}
	}
	if len(need) > 0 {
		t.Fatalf("block hashes of chunks %v never came", need)
	}
}

// A node that holds its whole stripe when the seed names it a parent (it
// was moved there after it had it, or resumed with it) fetches nothing,
// but still tells that parent it holds the stripe: a parent leaves the
// session only once each child the seed gave it has said so, and would
// otherwise wait for the seed to end it.
func TestWholeStripeStillSaysHeld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const chunk, chunks = 256 << 10, 4
	data := testData(chunks * chunk)
	m := testManifest(data, chunk)
	_, f := seedFile(t, data)
	sp := mustOpenSpool(t, t.TempDir(), m)
	for i := range chunks {
		if err := sp.putLeaves(i, hashBlocks(nil, data[i*chunk:(i+1)*chunk], m.BlockSize)); err != nil {
			t.Fatal(err)
		}
	}
	for g := 0; g < m.Blocks(); g += 2 {
		mustPut(t, sp, data, g) // stripe 0 whole; stripe 1 not begun
	}
	cfg := testConfig()
	held := make(chan error, 1)
	addr := fakeParent(t, cfg, m, func(conn net.Conn, c *ctrl, w wantMsg) { // as serveChild is
		if _, err := feed(ctx, conn, newFileSource(f, m), newFeedPacer(cfg, m.BlockSize), m, w, cfg, feedOptions{}); err != nil {
			held <- err
			return
		}
		_, err := c.expectSized(cfg.DeadAfter, msgHeld, 0)
		held <- err
	})
	p := parentMsg{id: NodeID{9}, addr: addr, stripes: 2, stripe: 0}
	self := helloMsg{role: roleData, id: NodeID{7}, name: "moved"}
	if err := fetch(ctx, p, self, sp, cfg, keys{}, func(int) { t.Error("a block was stored") }, func() {}, nil); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	select {
	case err := <-held:
		if err != nil {
			t.Fatalf("the parent did not hear held: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the parent never heard from the node that holds its stripe")
	}
}

// fakeParent serves children on a loopback port as a parent does up to
// their want, and hands each connection on to rest.
func fakeParent(t *testing.T, cfg Config, m *Manifest, rest func(conn net.Conn, c *ctrl, w wantMsg)) netip.AddrPort {
	return serveLoopback(t, func(conn net.Conn) {
		defer conn.Close()
		c := newCtrl(conn, cfg.DeadAfter)
		if _, err := c.expect(cfg.DeadAfter, msgHello); err != nil {
			return
		}
		p, err := c.expectSized(cfg.DeadAfter, msgWant, wantLen(m))
		if err != nil {
			return
		}
		w, err := decodeWant(p)
		if err != nil {
			return
		}
		rest(conn, c, w)
	})
}

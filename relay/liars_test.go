package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Receivers that lie about themselves, each a host on the LAN without the
// seed's key: what they say narrows, moves or fails no honest node.

// lines is a log the seed's goroutines may write to at once.
type lines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count is how many lines hold what and none of the words in not.
func (l *lines) count(what string, not ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for line := range strings.SplitSeq(l.b.String(), "\n") {
		if !strings.Contains(line, what) {
			continue
		}
		for _, s := range not {
			if strings.Contains(line, s) {
				continue next
			}
		}
		n++
	}
	return n
}

// honestOK checks that each honest node applied the package whole and is
// reported ok, and returns when the last of them was done.
func honestOK(t *testing.T, rep *Report, nodes []*testNode, data []byte) float64 {
	t.Helper()
	last := 0.0
	for _, n := range nodes {
		res := <-n.applied
		got, _ := os.ReadFile(n.dest)
		if res.Err != nil || !bytes.Equal(got, data) {
			t.Errorf("honest node %s: %v, %d bytes", n.id.Short(), res.Err, len(got))
		}
	}
	for _, r := range rep.Nodes {
		if r.Name == "fake" {
			continue
		}
		if r.Status != StatusOK {
			t.Errorf("honest node %s: %s: %s", r.Name, r.Status, r.Error)
		}
		last = max(last, r.Seconds)
	}
	return last
}

// A receiver that says it applied the package as soon as it accepts
// narrows nothing: the deadline the first node to finish sets counts from
// when the seed had sent every block once, so honest nodes still at work
// are not failed when 4 x a few milliseconds and SessionGrace have passed.
func TestLiarsResultDoesNotNarrowTheDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SessionGrace = 2 * time.Second
	cfg.MaxRate = "4mbit" // 2 MiB takes 4-5 s
	path, data := writePackage(t, 2<<20)
	nodes := startNodes(t, ctx, cfg, 3, nil)
	f := startFake(t, ctx, &fake{})
	f.onControl = func(c *ctrl, m *Manifest) {
		c.send(msgResult, resultMsg{ok: true, millis: 1}.encode())
		f.report(c, m, 0, nil)
	}
	m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: append(peersOf(nodes), f.peer("liar"))})
	if err != nil {
		t.Fatal(err)
	}
	honestOK(t, rep, nodes, data)
}

// Two receivers that complain of every parent they are given (one host
// may answer as two) make one relay feed no one at most, not every relay
// they meet.
func TestSybilsCostOneRelayAtMost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.MaxRate = "16mbit"
	var peers []Peer
	for range 2 {
		// Each goes after 3 s: the session then ends with the honest nodes.
		fctx, stop := context.WithTimeout(ctx, 3*time.Second)
		defer stop()
		f := startFake(t, fctx, &fake{})
		f.onControl = func(c *ctrl, m *Manifest) {
			f.report(c, m, 0, func(fr frame) {
				if p, err := decodeParent(fr.payload); fr.typ == msgParent && err == nil && p.id != (NodeID{}) {
					c.send(msgComplain, complainMsg{parent: p.id, kind: complainLost, stripe: p.stripe, detail: "forged"}.encode())
				}
			})
		}
		peers = append(peers, f.peer("liar"))
	}
	path, data := writePackage(t, 6<<20)
	nodes := startNodes(t, ctx, cfg, 8, nil)
	m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	var log lines
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: append(peersOf(nodes), peers...),
		Log: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	last := honestOK(t, rep, nodes, data)
	if n := log.count("feeds no one now", "fake"); n > wordBudget {
		t.Errorf("%d honest relays made to feed no one on two receivers' word; want at most %d", n, wordBudget)
	}
	t.Logf("honest nodes done after %.2f s", last)
}

// A receiver whose clock stands still while it claims more and more, then
// jumps a sample's length a report, has the seed believe no rate it never
// saw: honest relays at their real rate are not found slow against it.
func TestLiarsClockDoesNotSetWhatIsHealthy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.MaxRate = "4mbit"
	cfg.SlowAfter = 500 * time.Millisecond
	cfg.SessionGrace = 2 * time.Second
	fctx, stop := context.WithTimeout(ctx, 7*time.Second)
	defer stop()
	f := startFake(t, fctx, &fake{})
	f.onControl = func(c *ctrl, m *Manifest) {
		go func() {
			for {
				if _, err := c.recv(time.Minute); err != nil {
					return
				}
			}
		}()
		// Last in the order found, it is the second tree's root: all it
		// claims of stripe 1 is believed, the seed holding it all. Its
		// clock stands still for 5 s, then runs a sample (SlowAfter) a
		// report: 5 s of claims in each sample.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := uint64(0); ; i++ {
			select {
			case <-tick.C:
			case <-fctx.Done():
				return
			}
			held := uint64(m.stripeBytes(2, 1)) - 1
			pm := progressMsg{held: held, stripes: []uint64{0, held}, millis: 1 + 500*max(i, 99) - 500*99}
			if c.send(msgProgress, pm.encode()) != nil {
				return
			}
		}
	}
	path, data := writePackage(t, 4<<20)
	nodes := startNodes(t, ctx, cfg, 4, nil)
	m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	var log lines
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: append(peersOf(nodes), f.peer("liar")),
		Log: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	last := honestOK(t, rep, nodes, data)
	if n := log.count("slow relay", "fake"); n > 0 {
		t.Errorf("%d honest relays moved as slow against a liar's clock", n)
	}
	t.Logf("honest nodes done after %.2f s", last)
}

// A relay that claims the whole package and sends its children the
// chunk's block hashes, which are public and check out, again and again
// and no block, is given up on as stalled: hashes with no block after them
// are no progress. (Before, its children waited on it until the session's
// deadline failed them.)
func TestHashesOnlyParentIsGivenUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SessionGrace = time.Second
	path, data := writePackage(t, 2<<20)
	m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	first, count := m.chunkBlocks(0)
	hashes := binary.BigEndian.AppendUint32(nil, 0)
	for g := first; g < first+count; g++ {
		sum := sha256.Sum256(data[g*m.BlockSize : g*m.BlockSize+m.BlockLen(g)])
		hashes = append(hashes, sum[:]...)
	}
	f := startFake(t, ctx, &fake{
		held: func(m *Manifest) uint64 { return uint64(m.Size) },
		onData: func(conn net.Conn, w wantMsg) {
			for ctx.Err() == nil && writeFrame(conn, msgHashes, hashes) == nil {
				time.Sleep(100 * time.Millisecond)
			}
		},
	})
	nodes := startNodes(t, ctx, cfg, 6, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: append([]Peer{f.peer("liar")}, peersOf(nodes)...)})
	if err != nil {
		t.Fatal(err)
	}
	honestOK(t, rep, nodes, data)
}

package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Heartbeat = 50 * time.Millisecond
	cfg.DeadAfter = 2 * time.Second
	cfg.SeedTimeout = 5 * time.Second
	return cfg
}

// testNode is one receiver in an in-process session.
type testNode struct {
	r       *Receiver
	id      NodeID
	dest    string
	applied chan Result
	apply   func(context.Context, Package) error
}

func writePackage(t *testing.T, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "app.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// copyApply places the package at dest, as `join --to` does.
func copyApply(dest string) func(context.Context, Package) error {
	return func(_ context.Context, p Package) error {
		b, err := os.ReadFile(p.Path)
		if err != nil {
			return err
		}
		return os.WriteFile(dest, b, 0o644)
	}
}

func startNodes(t testing.TB, ctx context.Context, cfg Config, n int, custom func(i int, o *ReceiverOptions, ctx *context.Context)) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		tn := &testNode{dest: filepath.Join(t.TempDir(), "out"), applied: make(chan Result, 1)}
		rand.Read(tn.id[:])
		opt := ReceiverOptions{ID: tn.id, Name: fmt.Sprintf("n%d", i), Dir: t.TempDir(), Apply: copyApply(tn.dest)}
		nctx := ctx
		if custom != nil {
			custom(i, &opt, &nctx)
		}
		r, err := NewReceiver(cfg, opt)
		if err != nil {
			t.Fatal(err)
		}
		tn.r = r
		t.Cleanup(func() { r.Close() })
		nodes[i] = tn
		go func() {
			res, err := r.Next(nctx)
			if err != nil && res.Err == nil {
				res.Err = err
			}
			tn.applied <- res
		}()
	}
	return nodes
}

func peersOf(nodes []*testNode) []Peer {
	var ps []Peer
	for i, n := range nodes {
		ps = append(ps, Peer{ID: n.id, Name: fmt.Sprintf("n%d", i), Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n.r.Port()))})
	}
	return ps
}

func seedSession(t testing.TB, ctx context.Context, cfg Config, path string, chunk int, peers []Peer) *Report {
	t.Helper()
	m, err := BuildManifest(ctx, path, chunk, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	return rep
}

func TestSessionDeliversIdenticalBytes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		chunk int
		nodes int
	}{
		{"odd size", 5<<20 + 123, 64 << 10, 9},
		{"empty", 0, 64 << 10, 3},
		{"one short chunk", 100, MinChunkSize, 2},
		{"exact chunks", 8 * MinChunkSize, MinChunkSize, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := testConfig()
			path, data := writePackage(t, tc.size)
			nodes := startNodes(t, ctx, cfg, tc.nodes, nil)
			rep := seedSession(t, ctx, cfg, path, tc.chunk, peersOf(nodes))
			if rep.Failed() != 0 {
				t.Fatalf("report has failures: %+v", rep.Nodes)
			}
			parents := map[string]int{}
			for i, n := range nodes {
				res := <-n.applied
				if res.Err != nil {
					t.Fatalf("node %d: %v", i, res.Err)
				}
				got, err := os.ReadFile(n.dest)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("node %d: applied bytes differ (err %v, %d vs %d bytes)", i, err, len(got), len(data))
				}
				if rep.Nodes[i].Bytes != int64(tc.size) || rep.Nodes[i].Received != int64(tc.size) {
					t.Errorf("node %d: report bytes %d received %d, want %d", i, rep.Nodes[i].Bytes, rep.Nodes[i].Received, tc.size)
				}
				parents[rep.Nodes[i].Parent]++
			}
			for p, k := range parents {
				if k > 2 {
					t.Errorf("parent %s has %d children, a binary tree allows 2", p, k)
				}
			}
			if tc.size > 0 && rep.Uploaded > 2*int64(tc.size) {
				t.Errorf("seed uploaded %d bytes, want at most 2 × %d", rep.Uploaded, tc.size)
			}
		})
	}
}

func TestFailedApplyIsThatNodesOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 1<<20+7)
	nodes := startNodes(t, ctx, cfg, 6, func(i int, o *ReceiverOptions, _ *context.Context) {
		if i == 0 { // an inner node: 2 and 3 fetch from it
			o.Apply = func(context.Context, Package) error { return errors.New("installer exited with status 3") }
		}
	})
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	if rep.Nodes[0].Status != StatusFailed || rep.Nodes[0].Error != "installer exited with status 3" {
		t.Fatalf("node 0: status %q error %q", rep.Nodes[0].Status, rep.Nodes[0].Error)
	}
	for i, n := range nodes[1:] {
		if rep.Nodes[i+1].Status != StatusOK {
			t.Errorf("node %d: %s %s", i+1, rep.Nodes[i+1].Status, rep.Nodes[i+1].Error)
		}
		<-n.applied
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("node %d: bytes differ", i+1)
		}
	}
	if _, err := os.Stat(nodes[0].dest); err == nil {
		t.Errorf("failed node has output")
	}
}

func TestRefusedOfferIsReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 300<<10)
	nodes := startNodes(t, ctx, cfg, 3, func(i int, o *ReceiverOptions, _ *context.Context) {
		if i == 1 {
			o.Trust = func(ed25519.PublicKey) error { return errors.New("seed key 1234 is not trusted here") }
		}
	})
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	if rep.Nodes[1].Status != StatusFailed || !bytes.Contains([]byte(rep.Nodes[1].Error), []byte("not trusted")) {
		t.Fatalf("node 1: %+v", rep.Nodes[1])
	}
	for _, i := range []int{0, 2} {
		<-nodes[i].applied
		if got, _ := os.ReadFile(nodes[i].dest); !bytes.Equal(got, data) || rep.Nodes[i].Status != StatusOK {
			t.Errorf("node %d: %+v", i, rep.Nodes[i])
		}
	}
	if _, err := os.Stat(nodes[1].dest); err == nil {
		t.Errorf("refusing node applied the package")
	}
}

// A receiver that takes the connection but does not answer (a silent
// host, one sizing a large spool) holds no other back: the rest get the
// package while it says nothing, and it joins the running session once it
// answers.
func TestSilentReceiverHoldsNoOneBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.DeadAfter, cfg.SeedTimeout = 5*time.Minute, 5*time.Minute // a seed that waited for the handshake would wait past the test's end
	path, data := writePackage(t, 300<<10)
	nodes := startNodes(t, ctx, cfg, 4, nil)
	peers := peersOf(nodes)
	answer := make(chan struct{})
	peers[1].Addr = heldBack(t, ctx, peers[1].Addr, answer)
	reports := make(chan *Report, 1)
	go func() { reports <- seedSession(t, ctx, cfg, path, 64<<10, peers) }()
	appliedAll(t, ctx, nodes, []int{0, 2, 3}, "has not applied the package while node 1 says nothing")
	close(answer)
	if res := <-nodes[1].applied; res.Err != nil {
		t.Fatalf("node 1, answering late: %v", res.Err)
	}
	rep := <-reports
	for i, n := range nodes {
		if rep.Nodes[i].Status != StatusOK {
			t.Errorf("node %d: %s %q", i, rep.Nodes[i].Status, rep.Nodes[i].Error)
		}
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("node %d: bytes differ", i)
		}
	}
}

// appliedAll waits for each of nodes[which] to end its session applied;
// one that has not by the time ctx ends fails the test with why.
func appliedAll(t *testing.T, ctx context.Context, nodes []*testNode, which []int, why string) {
	t.Helper()
	for _, i := range which {
		select {
		case res := <-nodes[i].applied:
			if res.Err != nil {
				t.Fatalf("node %d: %v", i, res.Err)
			}
		case <-ctx.Done():
			t.Fatalf("node %d %s", i, why)
		}
	}
}

// heldBack forwards a TCP port to to, each connection only once open is
// closed: until then the connection is taken, and nothing is said on it.
func heldBack(t *testing.T, ctx context.Context, to netip.AddrPort, open <-chan struct{}) netip.AddrPort {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		select {
		case <-open:
		case <-ctx.Done():
			return
		}
		u, stop, ok := dialFor(ctx, c, to)
		if !ok {
			return
		}
		defer stop()
		go func() { io.Copy(u, c); u.Close() }()
		io.Copy(c, u)
	})
}

// A relay that dies mid-transfer costs its children a reconnect: they
// finish from another parent and download no chunk twice.
func TestDeadRelayChildrenResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	size := 8 << 20
	path, data := writePackage(t, size)
	nctx, kill := context.WithCancel(ctx)
	nodes := startNodes(t, ctx, cfg, 6, func(i int, o *ReceiverOptions, c *context.Context) {
		if i == 0 { // an inner node: 2 and 3 fetch from it
			dieAtAThird(o, c, nctx, kill, size)
		}
	})
	// Slow the victim's children so the kill lands mid-transfer.
	peers := peersOf(nodes)
	throttled := throttle(t, ctx, peers[0].Addr)
	peers[0].Addr = throttled
	rep := seedSession(t, ctx, cfg, path, 64<<10, peers)
	for i, n := range nodes[1:] {
		res := <-n.applied
		if res.Err != nil || rep.Nodes[i+1].Status != StatusOK {
			t.Fatalf("node %d: %v %+v", i+1, res.Err, rep.Nodes[i+1])
		}
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("node %d: bytes differ", i+1)
		}
		if res.Received != int64(size) {
			t.Errorf("node %d downloaded %d bytes for a %d-byte package", i+1, res.Received, size)
		}
	}
	if rep.Nodes[0].Status != StatusFailed {
		t.Errorf("dead relay reported %s", rep.Nodes[0].Status)
	}
}

// dieAtAThird makes a node's session run in nctx, which kill ends once the
// node holds a third of the size-byte package, and its apply wait for
// that end: it dies before it applies.
func dieAtAThird(o *ReceiverOptions, c *context.Context, nctx context.Context, kill context.CancelFunc, size int) {
	*c = nctx
	o.Apply = func(ctx context.Context, _ Package) error {
		<-ctx.Done()
		return ctx.Err()
	}
	o.Progress = func(p ReceiverProgress) {
		if p.Verified > int64(size)/3 {
			kill()
		}
	}
}

// dieApplying makes a node stop (its context ends) once it holds the whole
// package and applies it.
func dieApplying(o *ReceiverOptions, c *context.Context, nctx context.Context, kill context.CancelFunc) {
	*c = nctx
	o.Apply = func(ctx context.Context, _ Package) error {
		kill()
		<-ctx.Done()
		return ctx.Err()
	}
}

// throttle forwards a TCP port at about 20 MB/s so transfers take time.
func throttle(t *testing.T, ctx context.Context, to netip.AddrPort) netip.AddrPort {
	return proxy(t, ctx, to, func(dst, src net.Conn, b []byte) {
		time.Sleep(time.Millisecond * time.Duration(len(b)) / (20 << 10))
	})
}

// serveLoopback listens on a loopback port for the test's life and serves
// each connection in a goroutine of its own.
func serveLoopback(t *testing.T, serve func(c net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// dialFor dials to for c, a connection a test server took; both close
// when ctx ends or stop is called.
func dialFor(ctx context.Context, c net.Conn, to netip.AddrPort) (u net.Conn, stop func(), ok bool) {
	u, err := net.Dial("tcp", to.String())
	if err != nil {
		return nil, nil, false
	}
	unhook := context.AfterFunc(ctx, func() { c.Close(); u.Close() })
	return u, func() { unhook(); u.Close() }, true
}

// proxy forwards a TCP port to to, calling each, if set, with every buffer
// it has just passed from src to dst.
func proxy(t *testing.T, ctx context.Context, to netip.AddrPort, each func(dst, src net.Conn, b []byte)) netip.AddrPort {
	t.Helper()
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
				if each != nil {
					each(dst, src, buf[:n])
				}
			}
			if err != nil {
				return
			}
		}
	}
	return serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		u, stop, ok := dialFor(ctx, c, to)
		if !ok {
			return
		}
		defer stop()
		go pipe(u, c)
		pipe(c, u)
	})
}

// A seed whose file changes after it was hashed ends the session with
// that reason instead of feeding blocks no receiver can verify.
func TestSeedEndsWhenItsFileChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 1<<20)
	m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	data[0] ^= 1
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, time.Now(), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	nodes := startNodes(t, ctx, cfg, 2, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	_, err = RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peersOf(nodes)})
	if !errors.Is(err, ErrSourceChanged) {
		t.Fatalf("seed of a file changed after hashing: %v, want ErrSourceChanged", err)
	}
	for _, n := range nodes {
		if res := <-n.applied; res.Err == nil {
			t.Errorf("a node applied a package whose file changed")
		}
	}
}

// A seed that dies mid-session and runs again resumes every receiver from
// the blocks it holds: all finish, none downloads a block twice.
func TestSeedRestartResumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	size := 8 << 20
	path, data := writePackage(t, size)
	var once sync.Once
	sctx, killSeed := context.WithCancel(ctx)
	nodes := startNodes(t, ctx, cfg, 6, func(i int, o *ReceiverOptions, _ *context.Context) {
		if i == 5 {
			o.Progress = func(p ReceiverProgress) {
				if p.Verified > int64(size)/3 {
					once.Do(killSeed)
				}
			}
		}
	})
	peers := peersOf(nodes)
	peers[0].Addr = throttle(t, ctx, peers[0].Addr) // so the kill lands mid-transfer
	m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := RunSeed(sctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers}); !errors.Is(err, context.Canceled) {
		t.Fatalf("first seed: %v, want it cancelled", err)
	}
	var first []int64
	var done []bool // applied before the seed died: that stands
	for i, n := range nodes {
		res := <-n.applied
		if res.Err != nil && !errors.Is(res.Err, ErrSeedLost) {
			t.Fatalf("node %d after the seed died: %v, want ErrSeedLost", i, res.Err)
		}
		if res.Err == nil {
			if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
				t.Fatalf("node %d: reported applied before the seed died, bytes differ", i)
			}
		}
		first = append(first, res.Received)
		done = append(done, res.Err == nil)
	}
	// The same receivers wait for the next session, as `join` does.
	for _, n := range nodes {
		go func() {
			res, err := n.r.Next(ctx)
			if err != nil && res.Err == nil {
				res.Err = err
			}
			n.applied <- res
		}()
	}
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	var resumed int64
	for i, n := range nodes {
		res := <-n.applied
		if res.Err != nil || rep.Nodes[i].Status != StatusOK {
			t.Fatalf("node %d after the restart: %v %+v", i, res.Err, rep.Nodes[i])
		}
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("node %d: bytes differ", i)
		}
		// What it held was kept, and only the rest was downloaded.
		if !done[i] && (res.Resumed != first[i] || first[i]+res.Received != int64(size)) {
			t.Errorf("node %d: resumed %d, downloaded %d then %d of %d bytes", i, res.Resumed, first[i], res.Received, size)
		}
		resumed += res.Resumed
	}
	if resumed == 0 {
		t.Errorf("no node resumed anything: the seed was not killed mid-transfer")
	}
}

// A node that applied the package leaves once each child it was given
// holds all of its stripe, without waiting for the seed to let it go: the
// seed lets a parent go only once its children applied the package too,
// and here one child takes its time over that. While that machine's
// install still runs, every other session is over (a join exits), and the
// report still gives every node its parents.
func TestParentsLeaveOnceTheirChildrenHoldTheirStripes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 1<<20+7)
	hold := make(chan struct{})
	nodes := startNodes(t, ctx, cfg, 6, func(i int, o *ReceiverOptions, _ *context.Context) {
		if i == 5 {
			apply := o.Apply
			o.Apply = func(ctx context.Context, p Package) error {
				select { // a long install
				case <-hold:
				case <-ctx.Done():
					return ctx.Err()
				}
				return apply(ctx, p)
			}
		}
	})
	reports := make(chan *Report, 1)
	go func() { reports <- seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes)) }()
	appliedAll(t, ctx, nodes, []int{0, 1, 2, 3, 4}, "still in the session while node 5, holding the package, applies it")
	close(hold)
	if res := <-nodes[5].applied; res.Err != nil {
		t.Fatalf("node 5: %v", res.Err)
	}
	rep := <-reports
	for i, n := range nodes {
		if rep.Nodes[i].Status != StatusOK || len(rep.Nodes[i].Parents) != 2 || rep.Nodes[i].Parents[1] == "" {
			t.Errorf("node %d: %s %q, parents %q", i, rep.Nodes[i].Status, rep.Nodes[i].Error, rep.Nodes[i].Parents)
		}
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("node %d: bytes differ", i)
		}
	}
}

// A receiver that reads the package back as it arrives hands its apply a
// file already checked whole against the manifest's sha256.
func TestReadBackChecksTheWholeFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 3<<20+5)
	checked := make([]bool, 4)
	nodes := startNodes(t, ctx, cfg, len(checked), func(i int, o *ReceiverOptions, _ *context.Context) {
		o.ReadBack = i%2 == 0
		apply := o.Apply
		o.Apply = func(ctx context.Context, p Package) error {
			checked[i] = p.Checked
			return apply(ctx, p)
		}
	})
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	for i, n := range nodes {
		if res := <-n.applied; res.Err != nil || rep.Nodes[i].Status != StatusOK {
			t.Fatalf("node %d: %v %s", i, res.Err, rep.Nodes[i].Error)
		}
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("node %d: bytes differ", i)
		}
		if want := i%2 == 0; checked[i] != want {
			t.Errorf("node %d: read back %v, apply told checked %v", i, want, checked[i])
		}
	}
}

// A node lost mid-transfer, or stopped while it applies, and started again
// on the same state while the rest finish is waited for: it rejoins the
// same session, resumes from what it held and ends ok, so the report shows
// every node ok. (Stopped is not failed: it sends the seed no result.)
func TestLostNodeRejoinsBeforeTheEnd(t *testing.T) {
	for _, inApply := range []bool{false, true} {
		t.Run(fmt.Sprintf("stopped while applying=%v", inApply), func(t *testing.T) { lostNodeRejoins(t, inApply) })
	}
}

func lostNodeRejoins(t *testing.T, inApply bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	size := 8 << 20
	path, data := writePackage(t, size)
	nctx, kill := context.WithCancel(ctx)
	var victim ReceiverOptions
	nodes := startNodes(t, ctx, cfg, 6, func(i int, o *ReceiverOptions, c *context.Context) {
		if i == 0 {
			victim = *o
			if inApply {
				dieApplying(o, c, nctx, kill)
			} else {
				dieAtAThird(o, c, nctx, kill, size)
			}
		}
	})
	peers := peersOf(nodes)
	m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	late := make(chan Peer)
	restOver := make(chan struct{}, 1)
	type outcome struct {
		rep *Report
		err error
	}
	reports := make(chan outcome, 1)
	go func() {
		rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers, Late: late, RejoinWait: 30 * time.Second,
			Progress: func(p SeedProgress) {
				if p.Done == len(nodes)-1 && p.Failed == 1 {
					select {
					case restOver <- struct{}{}:
					default:
					}
				}
			}})
		reports <- outcome{rep, err}
	}()
	first := <-nodes[0].applied
	if first.Err == nil {
		t.Fatal("node 0 applied the package before it was killed")
	}
	select {
	case <-restOver:
	case o := <-reports:
		t.Fatalf("the session ended before the rest finished: %v", o.err)
	}
	// Started again on its state, as `join` run again with the same --dir.
	nodes[0].r.Close()
	r, err := NewReceiver(cfg, victim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	again := make(chan Result, 1)
	go func() {
		res, err := r.Next(ctx)
		if err != nil && res.Err == nil {
			res.Err = err
		}
		again <- res
	}()
	back := Peer{ID: victim.ID, Name: victim.Name, Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(r.Port()))}
	select {
	case late <- back:
	case o := <-reports:
		t.Fatalf("the session ended without waiting for the lost node: %v; node 0: %+v", o.err, o.rep.Nodes[0])
	}
	o := <-reports
	if o.err != nil {
		t.Fatalf("seed: %v", o.err)
	}
	res := <-again
	if res.Err != nil || o.rep.Nodes[0].Status != StatusOK {
		t.Fatalf("node 0 after rejoining: %v %+v", res.Err, o.rep.Nodes[0])
	}
	if got, _ := os.ReadFile(nodes[0].dest); !bytes.Equal(got, data) {
		t.Error("node 0: bytes differ")
	}
	if res.Resumed == 0 || res.Resumed+res.Received != int64(size) {
		t.Errorf("node 0 resumed %d and downloaded %d of %d bytes", res.Resumed, res.Received, size)
	}
	for i, n := range o.rep.Nodes {
		if n.Status != StatusOK {
			t.Errorf("node %d: %s %q", i, n.Status, n.Error)
		}
	}
}

// Join, as a one-off receiver runs it, waits on a seed lost mid-session
// for SeedTimeout: a seed that runs again within it resumes the session
// to its end; one that does not ends it with ErrSeedGone.
func TestJoinWaitsForALostSeed(t *testing.T) {
	for _, back := range []bool{true, false} {
		t.Run(fmt.Sprintf("seed back=%v", back), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := testConfig()
			cfg.SeedTimeout = cfg.DeadAfter // the least it may be
			size := 4 << 20
			path, data := writePackage(t, size)
			dest := filepath.Join(t.TempDir(), "out")
			sctx, killSeed := context.WithCancel(ctx)
			var once sync.Once
			var id NodeID
			rand.Read(id[:])
			r, err := NewReceiver(cfg, ReceiverOptions{ID: id, Name: "n0", Dir: t.TempDir(), Apply: copyApply(dest),
				Progress: func(p ReceiverProgress) {
					if p.Verified > int64(size)/3 {
						once.Do(killSeed)
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			type joined struct {
				res  Result
				err  error
				lost int
			}
			out := make(chan joined, 1)
			lostSeed := make(chan struct{}, 1)
			go func() {
				lost := 0
				res, err := r.Join(ctx, func(res Result) {
					if errors.Is(res.Err, ErrSeedLost) {
						lost++
						select {
						case lostSeed <- struct{}{}:
						default:
						}
					}
				})
				out <- joined{res, err, lost}
			}()
			peers := []Peer{{ID: id, Name: "n0", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(r.Port()))}}
			m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, key, _ := ed25519.GenerateKey(rand.Reader)
			signed := Sign(m, key)
			slow := cfg
			slow.MaxRate = "8MB/s" // so the kill lands mid-transfer
			if _, err := RunSeed(sctx, slow, SeedOptions{Signed: signed, Path: path, Peers: peers}); !errors.Is(err, context.Canceled) {
				t.Fatalf("first seed: %v, want it cancelled", err)
			}
			if !back {
				j := <-out
				if !errors.Is(j.err, ErrSeedGone) || j.lost != 1 {
					t.Fatalf("seed gone: Join returned %v after %d losses, want ErrSeedGone after 1", j.err, j.lost)
				}
				return
			}
			select {
			case <-lostSeed:
			case j := <-out:
				t.Fatalf("Join returned before the seed ran again: %v, result %v", j.err, j.res.Err)
			}
			rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: signed, Path: path, Peers: peers})
			if err != nil || rep.Nodes[0].Status != StatusOK {
				t.Fatalf("second seed: %v %+v", err, rep)
			}
			j := <-out
			if j.err != nil || j.res.Err != nil || j.lost != 1 {
				t.Fatalf("Join: %v, result %v, after %d losses; want ok after 1", j.err, j.res.Err, j.lost)
			}
			if got, _ := os.ReadFile(dest); !bytes.Equal(got, data) {
				t.Error("bytes differ")
			}
			if j.res.Resumed == 0 || j.res.Resumed+j.res.Received != int64(size) {
				t.Errorf("resumed %d and downloaded %d of %d bytes", j.res.Resumed, j.res.Received, size)
			}
		})
	}
}

// A node names a parent that has sent it nothing for the given time, and
// only while it fetches from it.
func TestFedByNamesASilentParent(t *testing.T) {
	var f fedBy
	p := parentMsg{id: NodeID{7}, stripes: 2, stripe: 1}
	f.start(p)
	t0 := time.Now()
	if got := f.starved(t0, time.Second); len(got) != 0 {
		t.Fatalf("a parent just named is starving us: %+v", got)
	}
	got := f.starved(t0.Add(1500*time.Millisecond), time.Second)
	if len(got) != 1 || got[0].peer != p.id || got[0].stripe != 1 || got[0].millis < 1500 {
		t.Fatalf("after 1.5 s of nothing: %+v, want parent %v in stripe 1, at least 1500 ms", got, p.id)
	}
	f.heard(1)
	if got := f.starved(time.Now().Add(500*time.Millisecond), time.Second); len(got) != 0 {
		t.Fatalf("a parent heard 0.5 s ago is starving us: %+v", got)
	}
	f.stop(1)
	if got := f.starved(t0.Add(time.Hour), time.Second); len(got) != 0 {
		t.Fatalf("a parent no longer fetched from is starving us: %+v", got)
	}
	far := parentMsg{id: NodeID{8}, stripes: 255, stripe: 254} // a layout this build does not split into
	f.start(far)
	f.heard(far.stripe)
	f.stop(far.stripe)
}

package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A fake receiver speaks the protocol on its own listener and does what a
// test says once the seed's offer is in: each attack of a hostile host on
// the LAN, without the seed's key.
type fake struct {
	id   NodeID
	ln   net.Listener
	wg   sync.WaitGroup
	ctx  context.Context
	held func(m *Manifest) uint64 // what it claims to hold, in accept and progress
	// onControl runs the control connection after the accept; nil: report
	// the claimed progress every heartbeat, and nothing else.
	onControl func(c *ctrl, m *Manifest)
	// onData serves a child's data connection after its hello and want;
	// nil: hang up.
	onData func(conn net.Conn, w wantMsg)
	// host is the loopback address it listens on, as a host of its own on
	// a LAN would; "": 127.0.0.1, the honest nodes' (Linux answers on
	// all of 127.0.0.0/8).
	host string
}

func startFake(t *testing.T, ctx context.Context, f *fake) *fake {
	t.Helper()
	host := f.host
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	rand.Read(f.id[:])
	f.ln, f.ctx = ln, ctx
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer conn.Close()
				stop := context.AfterFunc(ctx, func() { conn.Close() })
				defer stop()
				f.serve(conn)
			}()
		}
	}()
	return f
}

func (f *fake) peer(name string) Peer {
	return Peer{ID: f.id, Name: name, Addr: f.ln.Addr().(*net.TCPAddr).AddrPort()}
}

func (f *fake) serve(conn net.Conn) {
	c := newCtrl(conn, time.Minute)
	p, err := c.expect(time.Minute, msgHello)
	if err != nil {
		return
	}
	h, err := decodeHello(p)
	if err != nil {
		return
	}
	if h.role == roleData {
		p, err := c.expect(time.Minute, msgWant)
		if err != nil || f.onData == nil {
			return
		}
		w, _ := decodeWant(p)
		f.onData(conn, w)
		return
	}
	c.send(msgWelcome, welcomeMsg{id: f.id, name: "fake"}.encode())
	p, err = c.expect(time.Minute, msgOffer)
	if err != nil {
		return
	}
	signed, err := decodeSigned(p)
	if err != nil {
		return
	}
	m := signed.Manifest
	var held uint64
	if f.held != nil {
		held = f.held(m)
	}
	c.send(msgAccept, acceptMsg{held: held}.encode())
	if f.onControl != nil {
		f.onControl(c, m)
		return
	}
	f.report(c, m, held, nil)
}

// report sends the claimed progress every 50 ms until the seed hangs up,
// handing each frame from the seed to onFrame.
func (f *fake) report(c *ctrl, m *Manifest, held uint64, onFrame func(frame)) {
	frames := make(chan frame)
	go func() {
		defer close(frames)
		for {
			fr, err := c.recv(time.Minute)
			if err != nil {
				return
			}
			select {
			case frames <- fr:
			case <-f.ctx.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case fr, ok := <-frames:
			if !ok || fr.typ == msgEnd {
				return
			}
			if onFrame != nil {
				onFrame(fr)
			}
		case <-tick.C:
			stripes := []uint64{uint64(m.stripeBytes(2, 0)), uint64(m.stripeBytes(2, 1))}
			if held == 0 {
				stripes = []uint64{0, 0}
			}
			if c.send(msgProgress, progressMsg{held: held, stripes: stripes}.encode()) != nil {
				return
			}
		case <-f.ctx.Done():
			return
		}
	}
}

// attackSession runs honest receivers and fakes (first in the seed's
// order) in one session and checks what honestSession does. It returns
// the report.
func attackSession(t *testing.T, ctx context.Context, cfg Config, honest int, size int, fakes ...Peer) (*Report, []*testNode) {
	t.Helper()
	path, data := writePackage(t, size)
	nodes := startNodes(t, ctx, cfg, honest, nil)
	return honestSession(t, ctx, cfg, nodes, path, data, append(fakes, peersOf(nodes)...)), nodes
}

// honestSession runs the package at path to peers, among them the honest
// nodes, and checks what a user cares about: every honest node ok and
// byte-identical, and the seed ends. It returns the report.
func honestSession(t *testing.T, ctx context.Context, cfg Config, nodes []*testNode, path string, data []byte, peers []Peer) *Report {
	t.Helper()
	m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	byID := map[string]ReportNode{}
	for _, n := range rep.Nodes {
		byID[n.ID] = n
	}
	for i, n := range nodes {
		res := <-n.applied
		if res.Err != nil {
			t.Errorf("honest node %d: %v", i, res.Err)
		}
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("honest node %d: bytes differ", i)
		}
		if st := byID[n.id.String()]; st.Status != StatusOK {
			t.Errorf("honest node %d reported %q: %s", i, st.Status, st.Error)
		}
	}
	return rep
}

// A fake receiver that accuses every parent it is given of corrupt data
// convicts none of them: the seed fetches the block itself and finds it
// intact, and after the second such accusation fetches on its word no
// more. The fake, which fetches nothing, ends timed out.
func TestForgedComplaintConvictsNobody(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SessionGrace = 2 * time.Second
	var complaints atomic.Int32 // of relays, each its parent when it complained
	f := startFake(t, ctx, &fake{})
	f.onControl = func(c *ctrl, m *Manifest) {
		f.report(c, m, 0, func(fr frame) {
			if fr.typ != msgParent {
				return
			}
			p, err := decodeParent(fr.payload)
			if err != nil || p.id == (NodeID{}) {
				return
			}
			complaints.Add(1)
			c.send(msgComplain, complainMsg{parent: p.id, kind: complainCorrupt, block: uint32(p.stripe), stripe: p.stripe, detail: "forged"}.encode())
		})
	}
	// The fake comes last in the plan: a leaf with a parent in each tree.
	path, data := writePackage(t, 4<<20)
	nodes := startNodes(t, ctx, cfg, 5, nil)
	peers := peersOf(nodes)
	var probes atomic.Int32
	for i := range peers {
		// At 1 MB/s a connection, the relays are at work for seconds
		// while the fake waits out its strikes for its next parents.
		slow := proxy(t, ctx, peers[i].Addr, func(_, _ net.Conn, b []byte) { time.Sleep(time.Duration(len(b)) * time.Microsecond) })
		peers[i].Addr = relayFront(t, ctx, slow, NodeID{}, &probes)
	}
	peers = append(peers, f.peer("fake"))
	rep := honestSession(t, ctx, cfg, nodes, path, data, peers)
	n := int(complaints.Load())
	if n <= falseAccusations {
		t.Fatalf("the fake complained %d times of a relay; the test needs more than %d", n, falseAccusations)
	}
	t.Logf("the fake complained %d times of a relay; the seed fetched %d times", n, probes.Load())
	if got := int(probes.Load()); got > falseAccusations {
		t.Errorf("the seed fetched %d times on the word of a fake that complained %d times; want at most %d", got, n, falseAccusations)
	}
	last := rep.Nodes[len(rep.Nodes)-1]
	if last.Status != StatusFailed || !strings.Contains(last.Error, "timed out") {
		t.Errorf("the accuser: %s %q, want failed, timed out", last.Status, last.Error)
	}
}

// A fake receiver that takes the offer and then only reports no progress
// cannot keep the session from ending: the seed fails it at the deadline
// and reports every honest node ok.
func TestSilentReceiverCannotHoldASession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SessionGrace = 2 * time.Second
	f := startFake(t, ctx, &fake{})
	start := time.Now()
	rep, _ := attackSession(t, ctx, cfg, 3, 1<<20, f.peer("fake"))
	if fk := rep.Nodes[0]; fk.Status != StatusFailed || !strings.Contains(fk.Error, "timed out") {
		t.Errorf("the silent fake: %s %q, want failed, timed out", fk.Status, fk.Error)
	}
	t.Logf("session ended after %s", time.Since(start).Round(time.Millisecond))
}

// A fake parent that claims the whole package and then sends its children
// only pings starves nobody: each child gives it up, the seed moves it,
// and it feeds no one once two children complained.
func TestPingOnlyParentStarvesNobody(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SessionGrace = 2 * time.Second
	var children sync.WaitGroup
	var asked sync.Map
	f := startFake(t, ctx, &fake{
		held: func(m *Manifest) uint64 { return uint64(m.Size) },
		onData: func(conn net.Conn, w wantMsg) {
			children.Add(1)
			defer children.Done()
			asked.Store(conn.RemoteAddr().String(), true)
			for ctx.Err() == nil {
				if writeFrame(conn, msgPing, nil) != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		},
	})
	rep, _ := attackSession(t, ctx, cfg, 6, 2<<20, f.peer("fake"))
	n := 0
	asked.Range(func(any, any) bool { n++; return true })
	if n == 0 {
		t.Fatalf("no child was given the fake as a parent: the test tests nothing")
	}
	if fk := rep.Nodes[0]; fk.Status != StatusFailed {
		t.Errorf("the fake parent: %s %q, want failed", fk.Status, fk.Error)
	}
	t.Logf("%d children fetched from the fake; it ended %q", n, rep.Nodes[0].Error)
}

// Hosts holding a thousand connections to an agent, some silent, some
// sending a hello and nothing more, neither make it busy nor keep a real
// seed's session out: one host, or sixteen, each holding more than its
// share of the slots for connections that have not said who they are.
func TestConnectionFloodDoesNotDenyASeed(t *testing.T) {
	for _, hosts := range []int{1, 16} {
		t.Run(fmt.Sprintf("%d hosts", hosts), func(t *testing.T) { floodThenSeed(t, hosts) })
	}
}

func floodThenSeed(t *testing.T, hosts int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 1<<20)
	nodes := startNodes(t, ctx, cfg, 1, nil)
	addr := peersOf(nodes)[0].Addr.String()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	hello := appendHeader(nil, msgHello, len(helloMsg{role: roleControl}.encode()))
	hello = append(hello, helloMsg{role: roleControl}.encode()...)
	for i := range 1000 {
		// Other hosts: other loopback addresses.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%hosts))}, Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		if i%2 == 0 {
			c.Write(hello)
		}
		conns = append(conns, c)
	}
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	res := <-nodes[0].applied
	got, _ := os.ReadFile(nodes[0].dest)
	if rep.Failed() != 0 || res.Err != nil || !bytes.Equal(got, data) {
		t.Errorf("seed during a flood of 1,000 connections from %d hosts: %+v, %v", hosts, rep.Nodes, res.Err)
	}
}

// A hundred fake receivers, half of them sending the seed an offer-sized
// frame, keep the seed's heap within a few MiB: nodes may send it only
// small frames of the types a node sends.
func TestSeedHeapWithHundredFakes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SessionGrace = 3 * time.Second
	var fakes []Peer
	big := make([]byte, 1<<20) // shared: the fakes' own memory is not the seed's
	for i := range 100 {
		f := &fake{}
		if i%2 == 0 {
			f.onControl = func(c *ctrl, m *Manifest) {
				c.conn.Write(appendHeader(nil, msgOffer, 32<<20))
				for range 32 {
					if _, err := c.conn.Write(big); err != nil {
						return
					}
				}
			}
		}
		fakes = append(fakes, startFake(t, ctx, f).peer("fake"))
	}
	var peak uint64
	var samples int
	path, _ := writePackage(t, 1<<20)
	nodes := startNodes(t, ctx, cfg, 2, nil)
	m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: append(fakes, peersOf(nodes)...),
		Progress: func(SeedProgress) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			samples++
		}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range nodes {
		if st := rep.Nodes[len(fakes)+i]; st.Status != StatusOK {
			t.Errorf("honest node %d: %s %s", i, st.Status, st.Error)
		}
	}
	const limit = 16 << 20
	t.Logf("heap in use: %.1f MiB before, at most %.1f MiB over %d samples with 100 fakes (the whole test process)", float64(before.HeapInuse)/(1<<20), float64(peak)/(1<<20), samples)
	if peak-min(peak, before.HeapInuse) > limit {
		t.Errorf("the heap grew by %d MiB with 100 fake receivers, more than %d", (peak-before.HeapInuse)>>20, limit>>20)
	}
}

// Losing the seed while a node applies the package does not stop the
// apply: it finishes, and the node reports it applied.
func TestApplyOutlivesTheSeed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 1<<20)
	applying := make(chan struct{})
	release := make(chan struct{})
	var applyErr error
	nodes := startNodes(t, ctx, cfg, 1, func(_ int, o *ReceiverOptions, _ *context.Context) {
		place := o.Apply
		o.Apply = func(actx context.Context, p Package) error {
			close(applying)
			<-release
			if applyErr = actx.Err(); applyErr != nil {
				return applyErr
			}
			return place(actx, p)
		}
	})
	m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	sctx, killSeed := context.WithCancel(ctx)
	go func() {
		<-applying
		killSeed()
	}()
	if _, err := RunSeed(sctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peersOf(nodes)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("seed: %v, want it cancelled", err)
	}
	// The node sees its seed gone only after a silence of SeedTimeout or
	// the connection's end: the seed closed it.
	close(release)
	res := <-nodes[0].applied
	if applyErr != nil || res.Err != nil {
		t.Fatalf("apply after the seed was lost: context %v, result %v", applyErr, res.Err)
	}
	if got, _ := os.ReadFile(nodes[0].dest); !bytes.Equal(got, data) {
		t.Errorf("the apply did not finish: bytes differ")
	}
}

// A session names its group: an agent of another group refuses it, so a
// captured offer cannot be replayed to another part of the fleet.
func TestOfferForAnotherGroupIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path, _ := writePackage(t, 100<<10)
	nodes := startNodes(t, ctx, testConfig(), 1, func(_ int, o *ReceiverOptions, _ *context.Context) { o.Group = "lab-b" })
	m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	m.Group = "lab-a"
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rep := offerTo(t, ctx, nodes[0], Sign(m, key), path)
	if n := rep.Nodes[0]; n.Status != StatusFailed || !strings.Contains(n.Error, `group "lab-a"`) || !strings.Contains(n.Error, `group "lab-b"`) {
		t.Errorf("offer for lab-a to an agent of lab-b: %s %q", n.Status, n.Error)
	}
	if _, err := os.Stat(nodes[0].dest); err == nil {
		t.Errorf("applied a session for another group")
	}
}

// A fake parent that claims the whole package and hangs up on every child
// is tried a few times, not thousands: the seed's own fetch from it fails,
// and it feeds no one from then on.
func TestHangUpParentIsDroppedAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SessionGrace = 2 * time.Second
	var mu sync.Mutex
	dials := 0
	f := startFake(t, ctx, &fake{
		held: func(m *Manifest) uint64 { return uint64(m.Size) },
		onData: func(net.Conn, wantMsg) {
			mu.Lock()
			dials++
			mu.Unlock()
		},
	})
	rep, _ := attackSession(t, ctx, cfg, 6, 2<<20, f.peer("fake"))
	mu.Lock()
	defer mu.Unlock()
	if dials == 0 {
		t.Fatalf("no child was given the fake as a parent: the test tests nothing")
	}
	if dials > 10 {
		t.Errorf("children were sent to a parent that hangs up %d times", dials)
	}
	t.Logf("%d data connections to the fake; it ended %s %q", dials, rep.Nodes[0].Status, rep.Nodes[0].Error)
}

// A parent's frame larger than the session's blocks allow (a 64 KiB ping
// in a session of 4 KiB blocks) is refused from its header: the child
// neither crashes nor allocates it.
func TestOversizedFrameFromParentIsRefused(t *testing.T) {
	data := testData(64 << 10)
	m := testManifest(data, MinChunkSize)
	sp, err := openSpool(t.TempDir(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	for _, typ := range []msgType{msgPing, msgBlock, msgHashes, msgRefuse} {
		in := append(appendHeader(nil, typ, 64<<10), make([]byte, 64<<10)...)
		err := pull(bufio.NewReaderSize(bytes.NewReader(in), fetchBuffer), parentMsg{stripes: 1}, sp, map[int]bool{}, func(int) {}, 0, nil, nil)
		var fe *fetchError
		if !errors.As(err, &fe) || fe.kind != complainCorrupt {
			t.Errorf("a 64 KiB %s frame: %v, want a corrupt-data complaint", typ, err)
		}
	}
}

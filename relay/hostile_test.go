package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A parent that sends nothing new is given up after dead_after, however
// it spends the time. A hostile parent
// (a session member the seed named as parent) sends a block frame's
// header and then its payload one byte at a time, each byte well within
// DeadAfter: no byte of the block is new data until the last, so the
// child must not keep waiting for it.
func TestDribblingParentIsGivenUpAfterDeadAfter(t *testing.T) {
	cfg := testConfig() // DeadAfter 2 s
	limit := 3 * cfg.DeadAfter
	ctx, cancel := context.WithTimeout(context.Background(), limit+5*time.Second)
	defer cancel()
	const chunk = 256 << 10
	data := testData(2 * chunk)
	m := testManifest(data, chunk)
	sp := mustOpenSpool(t, t.TempDir(), m)
	addr := fakeParent(t, cfg, m, func(conn net.Conn, _ *ctrl, _ wantMsg) {
		leaves := hashBlocks(nil, data[:chunk], m.BlockSize)
		writeFrame(conn, msgHashes, append(binary.BigEndian.AppendUint32(nil, 0), leaves...))
		// block 0's header, then its payload a byte at a time
		hdr := appendHeader(nil, msgBlock, blockHeaderLen+m.BlockLen(0))
		hdr = binary.BigEndian.AppendUint32(hdr, 0)
		hdr = append(hdr, 0)
		if _, err := conn.Write(hdr); err != nil {
			return
		}
		for i := 0; i < m.BlockLen(0)-1; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(cfg.DeadAfter / 4):
			}
			if _, err := conn.Write(data[i : i+1]); err != nil {
				return
			}
		}
	})
	p := parentMsg{id: NodeID{9}, addr: addr, stripes: 1, stripe: 0}
	self := helloMsg{role: roleData, id: NodeID{7}, name: "child"}
	begun := time.Now()
	err := fetch(ctx, p, self, sp, cfg, keys{}, func(int) {}, func() {}, nil)
	took := time.Since(begun)
	t.Logf("fetch returned after %s: %v", took.Round(10*time.Millisecond), err)
	var fe *fetchError
	if took > limit || !errors.As(err, &fe) || fe.kind != complainStalled {
		t.Fatalf("a parent that sent no new data was not given up as stalled within %s (DeadAfter %s): fetch took %s and returned %v", limit, cfg.DeadAfter, took.Round(10*time.Millisecond), err)
	}
}

// A host (no secret in use) that announces itself by mDNS under its own
// node id, so discovery sees no conflict, and then welcomes the seed under
// the node id of an honest receiver the session has not met yet, takes
// no one's place: were it taken for that receiver, the real one, found
// later, would never be offered the session, and the report would call it
// ok at the hostile host's address.
func TestWelcomeUnderAnotherIDIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.MaxRate = "8mbit" // the session lasts about 2 s: time for the late receiver to join
	path, _ := writePackage(t, 2<<20)
	nodes := startNodes(t, ctx, cfg, 2, nil) // nodes[0] at the start, nodes[1] found late
	honest, late := nodes[0], nodes[1]
	admitted := make(chan struct{})
	lateSent := make(chan struct{})
	var admittedOnce sync.Once
	hostile := serveLoopback(t, func(conn net.Conn) {
		defer conn.Close()
		defer admittedOnce.Do(func() { close(admitted) }) // refused: the late one comes all the same
		c := newCtrl(conn, cfg.DeadAfter)
		if _, err := c.expect(cfg.DeadAfter, msgHello); err != nil {
			return
		}
		if c.send(msgWelcome, welcomeMsg{id: late.id, name: "n1"}.encode()) != nil {
			return
		}
		if _, err := c.expect(cfg.DeadAfter, msgOffer); err != nil {
			return
		}
		if c.send(msgAccept, acceptMsg{seedTimeout: cfg.SeedTimeout}.encode()) != nil {
			return
		}
		once := false
		for {
			f, err := c.recv(cfg.SeedTimeout)
			if err != nil || f.typ == msgEnd {
				return
			}
			if f.typ == msgParent && !once {
				once = true
				admittedOnce.Do(func() { close(admitted) })
				go func() {
					select {
					case <-lateSent:
					case <-ctx.Done():
						return
					}
					c.send(msgResult, resultMsg{ok: true, millis: 1}.encode())
				}()
			}
		}
	})
	lateCh := make(chan Peer, 8)
	lp := peersOf(nodes)[1]
	go func() {
		select {
		case <-admitted:
		case <-ctx.Done():
			return
		}
		// discovery hands a receiver it finds to the session every round
		for range 3 {
			select {
			case lateCh <- lp:
			case <-ctx.Done():
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
		close(lateSent)
	}()
	peers := []Peer{peersOf(nodes)[0], {ID: NodeID{0xee, 1}, Name: "hostile", Addr: hostile}}
	m, err := BuildManifest(ctx, path, 256<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers, Late: lateCh, RejoinWait: 5 * time.Second})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	for _, n := range rep.Nodes {
		t.Logf("report: %s %s %s %s %q", n.ID[:8], n.Name, n.Addr, n.Status, n.Error)
	}
	if res := <-honest.applied; res.Err != nil {
		t.Fatalf("honest node: %v", res.Err)
	}
	var lateOK bool
	for _, n := range rep.Nodes {
		if n.ID == late.id.String() && n.Status == StatusOK {
			lateOK = true
		}
	}
	select {
	case res := <-late.applied:
		if res.Err != nil {
			t.Fatalf("the late receiver did not apply the package: %v", res.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the late receiver %s was never offered the session (the seed ended without it); the report says ok for its id: %v", late.id.Short(), lateOK)
	}
}

// dribblingRelay is a session member that takes the session as an honest
// receiver would (it is one, behind this proxy), but hands its children
// what it relays one byte every interval, each within DeadAfter.
func dribblingRelay(t *testing.T, ctx context.Context, inner netip.AddrPort, interval time.Duration) netip.AddrPort {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		u, err := net.Dial("tcp", inner.String())
		if err != nil {
			return
		}
		defer u.Close()
		first := make([]byte, headerLen+1)
		if _, err := io.ReadFull(c, first); err != nil {
			return
		}
		if _, err := u.Write(first); err != nil {
			return
		}
		go io.Copy(u, c)
		if first[headerLen] != roleData {
			io.Copy(c, u) // the seed's control connection: as it is
			return
		}
		// a child: take what the honest relay sends at once, hand it on a
		// byte at a time
		got := make(chan []byte, 1<<16)
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := u.Read(buf)
				for _, b := range buf[:n] {
					select {
					case got <- []byte{b}:
					case <-ctx.Done():
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case b := <-got:
				if _, err := c.Write(b); err != nil {
					return
				}
			default:
			}
		}
	})
}

// With one tree, a hostile relay (found first) feeds two honest nodes and
// trickles their data a byte at a time within DeadAfter: they give it up
// after dead_after, are moved, and get the package.
func TestDribblingRelaysChildrenAreMoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	bad := underHostileRelay(t, ctx, func(cfg Config, inner netip.AddrPort) netip.AddrPort {
		return dribblingRelay(t, ctx, inner, cfg.DeadAfter/5)
	})
	if bad > 0 {
		t.Fatalf("%d honest nodes did not get the package: their parent trickled bytes and was never given up", bad)
	}
}

// listeningTCP is every TCP port in LISTEN on this host (its network
// namespace), as a port scan of it would find.
func listeningTCP(t *testing.T) map[int]bool {
	ports := map[int]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 4 || fs[3] != "0A" {
				continue
			}
			i := strings.LastIndexByte(fs[1], ':')
			if p, err := strconv.ParseUint(fs[1][i+1:], 16, 16); err == nil {
				ports[int(p)] = true
			}
		}
	}
	return ports
}

// holdSeedPort finds the seed's child port as a port scan would (a TCP
// port that was not listening before), and holds 4 x maxConns connections
// to it, each sending a byte of a frame's magic every DeadAfter/2 and
// opened again as soon as the seed closes it. It says on up once all are
// open.
func holdSeedPort(ctx context.Context, t *testing.T, cfg Config, before map[int]bool, up chan<- int) {
	var port int
	for port == 0 {
		for p := range listeningTCP(t) {
			if !before[p] {
				port = p
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// Another host: another loopback address.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	var open sync.WaitGroup
	open.Add(4 * maxConns)
	for range 4 * maxConns {
		go func() {
			first := true
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				if first {
					first = false
					open.Done()
				}
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				stop := context.AfterFunc(ctx, func() { c.Close() })
				go func() {
					for i := 0; i < 4; i++ {
						select {
						case <-ctx.Done():
							return
						case <-time.After(cfg.DeadAfter / 2):
						}
						if _, err := c.Write([]byte{"TCST"[i]}); err != nil {
							return
						}
					}
				}()
				io.Copy(io.Discard, c) // until the seed closes it
				stop()
				c.Close()
			}
		}()
	}
	open.Wait()
	up <- port
}

// A host that is not in the session (here another loopback address)
// finds the seed's child port (a port scan of the seed's host, in the half
// second a receiver that answered mDNS and says nothing gives it before
// the plan) and opens 4 x 256 connections to it, each saying a byte now
// and then and opened again as soon as the seed closes it. The trees'
// roots still fetch, and every receiver gets the package.
func TestIdleConnectionsKeepNoChildFromTheSeed(t *testing.T) {
	for _, secret := range []bool{false, true} {
		t.Run(map[bool]string{false: "no secret", true: "secret"}[secret], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			cfg := testConfig()
			cfg.SessionGrace = 5 * time.Second
			var sec *Secret
			if secret {
				sec = testSecret(t, "the fleet's own secret, 32 bytes..")
			}
			path, _ := writePackage(t, 1<<20)
			nodes := startNodes(t, ctx, cfg, 4, func(_ int, o *ReceiverOptions, _ *context.Context) { o.Secret = sec })
			peers := peersOf(nodes)
			mute := serveLoopback(t, func(c net.Conn) { // answers mDNS, then nothing
				defer c.Close()
				<-ctx.Done()
			})
			peers = append(peers, Peer{ID: NodeID{0xee, 2}, Name: "mute", Addr: mute})
			before := listeningTCP(t)
			up := make(chan int, 1)
			go holdSeedPort(ctx, t, cfg, before, up)
			m, err := BuildManifest(ctx, path, 256<<10, time.Hour, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, key, _ := ed25519.GenerateKey(rand.Reader)
			begun := time.Now()
			rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers, Secret: sec})
			if err != nil {
				t.Fatalf("seed: %v", err)
			}
			select {
			case p := <-up:
				t.Logf("attacker held %d connections to the seed's port %d", 4*maxConns, p)
			default:
				t.Logf("attacker was not up before the session ended")
			}
			t.Logf("session took %s", time.Since(begun).Round(100*time.Millisecond))
			bad := 0
			for _, n := range rep.Nodes[:len(nodes)] {
				t.Logf("report: %s parents %v %s %q", n.Name, n.Parents, n.Status, n.Error)
				if n.Status != StatusOK {
					bad++
				}
			}
			if bad > 0 {
				t.Fatalf("%d of %d honest receivers did not get the package while a host held idle connections to the seed's child port", bad, len(nodes))
			}
		})
	}
}

// zeroIDRelay is a session member that takes the session as an honest
// receiver (inner) would, but its welcome to the seed names the zero node
// id, and it hangs up on every child.
func zeroIDRelay(t *testing.T, ctx context.Context, inner netip.AddrPort, zero bool) netip.AddrPort {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		first := make([]byte, headerLen+1)
		if _, err := io.ReadFull(c, first); err != nil {
			return
		}
		if first[headerLen] == roleData {
			return // a child: hang up
		}
		u, err := net.Dial("tcp", inner.String())
		if err != nil {
			return
		}
		defer u.Close()
		if _, err := u.Write(first); err != nil {
			return
		}
		go io.Copy(u, c)
		welcome := make([]byte, headerLen+16)
		if _, err := io.ReadFull(u, welcome); err != nil {
			return
		}
		if zero {
			clear(welcome[headerLen:]) // the node id
		}
		if _, err := c.Write(welcome); err != nil {
			return
		}
		io.Copy(c, u)
	})
}

// A relay whose welcome names the zero node id, which parent frames and
// complaints read as the seed, and which hangs up on its children, costs
// them nothing: it is refused, or they would complain of "the seed", have
// their complaints dropped as stale, and fail at the session's deadline.
func TestZeroIDWelcomeIsRefused(t *testing.T) {
	for _, zero := range []bool{false, true} { // false: the same relay under its own id, for comparison
		t.Run(map[bool]string{false: "own id", true: "zero id"}[zero], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			bad := underHostileRelay(t, ctx, func(_ Config, inner netip.AddrPort) netip.AddrPort {
				return zeroIDRelay(t, ctx, inner, zero)
			})
			if bad > 0 {
				t.Fatalf("%d honest nodes did not get the package: their parent hung up on them and they were never moved", bad)
			}
		})
	}
}

// A relay forwards only bytes it verified. A hostile parent puts a zstd
// skippable frame of its own bytes ahead of each block's frame: the block
// decompresses to the right data and is stored, and what the relay sends
// its children must not carry the parent's bytes.
func TestRelayForwardsOnlyVerifiedBytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const chunk = 256 << 10
	data := []byte(strings.Repeat("treecast relays verified blocks only. ", chunk/38+1))[:chunk]
	m := testManifest(data, chunk)
	sp := mustOpenSpool(t, t.TempDir(), m)
	cfg := testConfig()
	marker := []byte("NOT-VERIFIED: the hostile parent's own bytes")
	addr := fakeParent(t, cfg, m, func(conn net.Conn, c *ctrl, _ wantMsg) {
		leaves := hashBlocks(nil, data, m.BlockSize)
		writeFrame(conn, msgHashes, append(binary.BigEndian.AppendUint32(nil, 0), leaves...))
		for g := range m.Blocks() {
			block := data[g*m.BlockSize : g*m.BlockSize+m.BlockLen(g)]
			skip := binary.LittleEndian.AppendUint32(nil, 0x184D2A50)
			skip = binary.LittleEndian.AppendUint32(skip, uint32(len(marker)))
			skip = append(skip, marker...)
			z := squeeze(skip, block)
			if z == nil {
				t.Error("block does not compress")
				return
			}
			p := binary.BigEndian.AppendUint32(nil, uint32(g))
			p = append(p, blockFlagZstd)
			writeFrame(conn, msgBlock, append(p, z...))
		}
		c.expect(cfg.DeadAfter, msgHeld)
	})
	p := parentMsg{id: NodeID{9}, addr: addr, stripes: 1, stripe: 0}
	if err := fetch(ctx, p, helloMsg{role: roleData, id: NodeID{7}}, sp, cfg, keys{}, func(int) {}, func() {}, nil); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	// the relay feeds a child
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		defer b.Close()
		w := wantMsg{session: m.Session, stripes: 1, stripe: 0, have: newBitmap(m.Blocks())}
		feed(ctx, b, sp, newFeedPacer(cfg, m.BlockSize), m, w, cfg, feedOptions{up: newUplink(0)})
	}()
	sent, _ := io.ReadAll(a)
	if n := bytes.Count(sent, marker); n > 0 {
		t.Fatalf("the relay sent its child %d copies of bytes no one verified (%q)", n, marker)
	}
}

// A session member that connects to a relay again and again as a child
// under a fresh node id each time, and says it holds everything (a want
// with every bit set, then held), grows the relay's memory of its
// children no further than a bound. Under a seed that names the relay's
// children it is refused at once (TestFeedingAdmitsOnlyTheSeedsChildren);
// under a seed of an earlier build, which names none, it is fed, and
// remembered within the bound.
func TestFakeChildrenGrowNoUnboundedState(t *testing.T) {
	ctx := context.Background()
	f := newFeeding()
	f.owe(0, 2, nil)
	const conns = 3000
	for i := range conns {
		var id NodeID
		binary.BigEndian.PutUint64(id[:], uint64(i+1))
		c, d := net.Pipe()
		done, ok := f.admit(ctx, id, netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.1"), 0, c, time.Second, nil)
		if !ok {
			t.Fatalf("child %d refused where the seed names no children", i)
		}
		if !f.begin() {
			t.Fatalf("child %d: no feed begins", i)
		}
		f.end(0, id, true)
		done()
		c.Close()
		d.Close()
	}
	f.mu.Lock()
	n, open := len(f.served[0]), len(f.feeds)
	f.mu.Unlock()
	t.Logf("the relay remembers %d children that said held, %d feeds open", n, open)
	if n > maxConns || open != 0 {
		t.Fatalf("%d children left %d entries in the relay's memory of its children and %d feeds: it grows with every connection", conns, n, open)
	}
}

// underHostileRelay runs a one-tree session of four receivers, the first
// reached through hostile (in front of an honest receiver, at inner), and
// returns how many of the other three did not apply the package.
func underHostileRelay(t *testing.T, ctx context.Context, hostile func(cfg Config, inner netip.AddrPort) netip.AddrPort) int {
	t.Helper()
	cfg := testConfig()
	cfg.Trees = 1
	cfg.SessionGrace = 10 * time.Second
	path, _ := writePackage(t, 2<<20)
	nodes := startNodes(t, ctx, cfg, 4, nil)
	peers := peersOf(nodes)
	peers[0].Addr = hostile(cfg, peers[0].Addr)
	begun := time.Now()
	rep := seedSession(t, ctx, cfg, path, 256<<10, peers)
	t.Logf("session took %s", time.Since(begun).Round(100*time.Millisecond))
	bad := 0
	for i, n := range rep.Nodes {
		t.Logf("report: %s %s id %s parents %v %s %q", n.Name, n.Addr, n.ID[:8], n.Parents, n.Status, n.Error)
		if i > 0 && n.Status != StatusOK {
			bad++
		}
	}
	return bad
}

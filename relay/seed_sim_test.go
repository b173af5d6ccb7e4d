package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// fakeLink is a simulated node's control connection: it records what the
// seed sends and never blocks.
type fakeLink struct {
	sent    [32]int // by message type
	parents []parentMsg
	reports []reportMsg
	closed  bool
	// took is what the node's end acknowledged; deaf: what the seed sends
	// waits unacknowledged
	took uint64
	deaf bool
}

func (l *fakeLink) send(t msgType, ps ...[]byte) error {
	for _, p := range ps {
		l.sent[int(t)%len(l.sent)]++
		if t == msgParent {
			pm, err := decodeParent(p)
			if err != nil {
				return err
			}
			l.parents = append(l.parents, pm)
		}
		if t == msgReport {
			rm, err := decodeReport(p)
			if err != nil {
				return err
			}
			l.reports = append(l.reports, rm)
		}
	}
	return nil
}

func (l *fakeLink) sendFrames(fs ...frame) error {
	for _, f := range fs {
		if err := l.send(f.typ, f.payload); err != nil {
			return err
		}
	}
	return nil
}

func (l *fakeLink) end() {
	l.sent[msgEnd]++
	l.closed = true
}

func (l *fakeLink) close() { l.closed = true }

// delivered counts each frame sent as one byte, acknowledged at once
// unless the link is deaf.
func (l *fakeLink) delivered() (delivery, bool) {
	if !l.deaf {
		l.took = 0
		for _, c := range l.sent {
			l.took += uint64(c)
		}
	}
	return delivery{bytes: l.took, pending: l.deaf}, true
}

// simSeed is a seed's session with n simulated nodes, all accepted and
// planned, as RunSeed leaves it before its loop starts; no sockets.
func simSeed(n, trees int, now time.Time) *seedRun {
	cfg := DefaultConfig()
	cfg.Trees = trees
	m := &Manifest{Size: 4 << 30, ChunkSize: 4 << 20, BlockSize: DefaultBlockSize, Chunks: make([][32]byte, 1024)}
	s := &seedRun{cfg: cfg, opt: SeedOptions{Log: slog.New(slog.DiscardHandler)}, m: m, start: now, events: make(chan event, 64)}
	s.t = newTree(cfg.Trees, m.Size, m.ChunkSize, cfg.SlowAfter)
	ids := make([]int, n)
	for i := range ids {
		p := Peer{Name: fmt.Sprintf("n%d", i), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 7000)}
		rand.Read(p.ID[:])
		nd := &node{id: s.t.add(), peer: p, c: &fakeLink{}, seedAddr: netip.MustParseAddrPort("10.255.255.254:7000"),
			joined: true, state: stateActive, lastSeen: now, pinged: now, pingEvery: pingEvery(cfg, cfg.SeedTimeout)}
		s.nodes = append(s.nodes, nd)
		s.index(nd)
		ids[i] = nd.id
	}
	s.tell(s.t.plan(ids, now), false)
	return s
}

// progressFrame is a node's heartbeat.
func progressFrame(held, received int64) frame {
	return frame{typ: msgProgress, payload: progressMsg{held: uint64(held), received: uint64(received)}.encode()}
}

func linkOf(n *node) *fakeLink { return n.c.(*fakeLink) }

// The session loop's handling, driven by events as its goroutines would
// deliver them: heartbeats, a lost relay, a complaint, a tick.
func TestSeedLoopSimulated(t *testing.T) {
	for _, trees := range []int{1, 2} {
		t.Run(fmt.Sprintf("trees=%d", trees), func(t *testing.T) {
			ctx := context.Background()
			now := time.Now()
			s := simSeed(1000, trees, now)
			for _, n := range s.nodes {
				if l := linkOf(n); len(l.parents) != trees {
					t.Fatalf("node %s was told %d parents, want %d", n.label(), len(l.parents), trees)
				}
			}
			for i, n := range s.nodes {
				s.handle(ctx, event{n: n, f: progressFrame(int64(i%1024)<<22, int64(i))})
			}
			for i, n := range s.nodes {
				if got, want := s.t.node(n.id).held, int64(i%1024)<<22; got != want || n.received != int64(i) {
					t.Fatalf("node %d: tree holds %d bytes, want %d; received %d", i, got, want, n.received)
				}
			}

			// A relay's control connection fails: each of its children is
			// told its new parent, and the relay is reported failed.
			x := s.nodes[innerNode(s.t)-1]
			var children []*node
			for st := range trees {
				for _, c := range s.t.node(x.id).children[st] {
					children = append(children, s.nodes[c-1])
				}
			}
			told := map[*node]int{}
			for _, c := range children {
				told[c] = len(linkOf(c).parents)
			}
			xl := linkOf(x)
			s.handle(ctx, event{n: x, err: errors.New("connection reset")})
			if x.c != nil || !xl.closed || x.state != stateFailed {
				t.Fatalf("lost relay: link %v closed %v state %v", x.c, xl.closed, x.state)
			}
			for _, c := range children {
				if len(linkOf(c).parents) <= told[c] {
					t.Fatalf("child %s of the lost relay was not told a new parent", c.label())
				}
				if p := linkOf(c).parents[len(linkOf(c).parents)-1]; p.id == x.peer.ID {
					t.Fatalf("child %s sent back to the lost relay", c.label())
				}
			}

			// A child complains about its parent: it is told one new parent.
			st := trees - 1
			c := s.nodes[len(s.nodes)-1]
			for i := len(s.nodes) - 1; s.t.parentOf(c.id, st) <= seedID; i-- {
				c = s.nodes[i]
			}
			before := len(linkOf(c).parents)
			pid := s.nodes[s.t.parentOf(c.id, st)-1].peer.ID
			cm := complainMsg{parent: pid, kind: complainLost, detail: "connection refused", stripe: uint8(st)}
			s.handle(ctx, event{n: c, f: frame{typ: msgComplain, payload: cm.encode()}})
			if got := len(linkOf(c).parents) - before; got != 1 {
				t.Fatalf("complaining child was told %d parents, want 1", got)
			}
			if p := linkOf(c).parents[len(linkOf(c).parents)-1]; p.id == pid || int(p.stripe) != st {
				t.Fatalf("complaining child told %+v", p)
			}

			// A tick pings every live node once its ping is due: a third
			// of its seed timeout after the last.
			due := now.Add(pingEvery(s.cfg, s.cfg.SeedTimeout))
			for _, n := range s.nodes {
				n.lastSeen = due
			}
			s.tick(due.Add(-s.cfg.Heartbeat))
			for _, n := range s.nodes {
				if n.c != nil && linkOf(n).sent[msgPing] != 0 {
					t.Fatalf("node %s pinged before its ping was due", n.label())
				}
			}
			s.tick(due)
			for _, n := range s.nodes {
				if n.c != nil && linkOf(n).sent[msgPing] != 1 {
					t.Fatalf("node %s pinged %d times", n.label(), linkOf(n).sent[msgPing])
				}
			}
			if rep := s.report(); rep.Failed() != len(s.nodes) {
				// All are still active, so none reported ok.
				t.Fatalf("report counts %d not ok of %d", rep.Failed(), len(s.nodes))
			}
		})
	}
}

const campus = 10000

func BenchmarkTreePlan10000(b *testing.B) {
	for _, trees := range []int{1, 2} {
		b.Run(fmt.Sprintf("trees=%d", trees), func(b *testing.B) {
			for b.Loop() {
				tr := newTree(trees, 4<<30, 4<<20, 2*time.Second)
				ids := make([]int, campus)
				for i := range ids {
					ids[i] = tr.add()
				}
				tr.plan(ids, t0)
			}
		})
	}
}

// BenchmarkTreeRepair10000 loses an inner node and takes it back, over and
// over, mid-session (everyone holds a third of the package).
func BenchmarkTreeRepair10000(b *testing.B) {
	for _, trees := range []int{1, 2} {
		b.Run(fmt.Sprintf("trees=%d", trees), func(b *testing.B) {
			tr, _ := planned(trees, campus)
			for id := 1; id <= campus; id++ {
				tr.setHeld(id, tr.size/3)
			}
			var inner []int
			for i := range tr.nodes {
				if tr.feeds(&tr.nodes[i]) {
					inner = append(inner, i+1)
				}
			}
			moves, i := 0, 0
			for b.Loop() {
				id := inner[i%len(inner)]
				i++
				moves += len(tr.lose(id, false, t0))
				moves += len(tr.join(id, t0))
			}
			b.ReportMetric(float64(moves)/float64(i), "moves/op")
		})
	}
}

// BenchmarkSeedHeartbeats10000 is a second of a campus session at the
// seed: each op is one heartbeat round, every node's progress event
// through the loop's handle plus the loop's tick. The default heartbeat
// makes two rounds a second; cpu-% is the share of one core they take.
func BenchmarkSeedHeartbeats10000(b *testing.B) {
	for _, trees := range []int{1, 2} {
		b.Run(fmt.Sprintf("trees=%d", trees), func(b *testing.B) {
			ctx := context.Background()
			now := time.Now()
			heap := heapInUse()
			start := time.Now()
			s := simSeed(campus, trees, now)
			setup := time.Since(start)
			heap = heapInUse() - heap
			frames := make([]frame, len(s.m.Chunks)+1)
			for i := range frames {
				frames[i] = progressFrame(int64(i)*int64(s.m.ChunkSize), int64(i)*int64(s.m.ChunkSize))
			}
			round := 0
			for b.Loop() {
				round++
				now = now.Add(s.cfg.Heartbeat)
				for i, n := range s.nodes {
					s.handle(ctx, event{n: n, f: frames[min(round+i%7, len(s.m.Chunks)-1)]})
					n.lastSeen = now
				}
				s.tick(now)
			}
			perRound := float64(b.Elapsed().Nanoseconds()) / float64(round)
			b.ReportMetric(perRound/campus, "ns/heartbeat")
			b.ReportMetric(perRound*float64(time.Second/s.cfg.Heartbeat)/1e9*100, "cpu-%")
			// After the loop: b.Loop's first call drops metrics reported before it.
			b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(setup.Microseconds())/1000, "setup-ms")
		})
	}
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// pingLink records when the seed pinged a node.
type pingLink struct {
	fakeLink
	now   *time.Time
	pings []time.Time
}

func (l *pingLink) send(t msgType, ps ...[]byte) error {
	if t == msgPing {
		l.pings = append(l.pings, *l.now)
	}
	return l.fakeLink.send(t, ps...)
}

// The seed pings each node as often as that node's seed timeout needs
// (so two pings may go missing), and no more: on a large fleet, pings are
// what the seed's uplink carries beside the package. A node that does not
// say its timeout is pinged every DeadAfter/2, as before.
func TestSeedPingsAsOftenAsEachNodeNeeds(t *testing.T) {
	start := time.Now()
	now := start
	s := simSeed(4, 2, start)
	timeouts := []time.Duration{0, s.cfg.DeadAfter, s.cfg.SeedTimeout, 10 * time.Minute}
	links := make([]*pingLink, len(s.nodes))
	for i, n := range s.nodes {
		links[i] = &pingLink{now: &now}
		n.c, n.pingEvery = links[i], pingEvery(s.cfg, timeouts[i])
	}
	const span = 2 * time.Minute
	for now = start; now.Sub(start) < span; now = now.Add(s.cfg.Heartbeat) {
		for _, n := range s.nodes {
			n.lastSeen = now
		}
		s.tick(now)
	}
	for i, l := range links {
		waits := timeouts[i]
		if waits == 0 {
			waits = s.cfg.DeadAfter
		}
		last, longest := start, time.Duration(0)
		for _, at := range append(l.pings, now) {
			longest = max(longest, at.Sub(last))
			last = at
		}
		if longest > waits/2 {
			t.Errorf("node with seed timeout %s: %s without a ping", waits, longest)
		}
		if most := int(span/(waits/pingsPerTimeout)) + 1; timeouts[i] > 0 && len(l.pings) > most {
			t.Errorf("node with seed timeout %s: %d pings in %s, want at most %d", waits, len(l.pings), span, most)
		}
	}
	if old, said := len(links[0].pings), len(links[2].pings); said*5 > old {
		t.Errorf("a node waiting %s got %d pings, one of an earlier build %d: want far fewer", s.cfg.SeedTimeout, said, old)
	}
}

// A relay silent for three quarters of the time after which it counts as lost has its
// children told new parents, and is not dropped; if most nodes seem silent
// at once, the seed was slow to hear them, and nobody moves.
func TestSeedMovesASilentRelaysChildren(t *testing.T) {
	start := time.Now()
	s := simSeed(30, 2, start)
	x := s.t.seed[0][0]
	relay := s.nodes[x-1]
	kids := s.t.childrenOf(x)
	told := map[int]int{}
	for _, c := range kids {
		told[c] = len(linkOf(s.nodes[c-1]).parents)
	}
	at := start.Add(s.cfg.DeadAfter*quietFor/4 + s.cfg.Heartbeat)
	for _, n := range s.nodes {
		if n != relay {
			n.lastSeen = at
		}
	}
	s.tick(at)
	if relay.c == nil {
		t.Fatalf("the silent relay was dropped after %s; DeadAfter is %s", at.Sub(start), s.cfg.DeadAfter)
	}
	for _, c := range kids {
		if len(linkOf(s.nodes[c-1]).parents) == told[c] {
			t.Errorf("child %s of the silent relay was told no new parent", s.nodes[c-1].label())
		}
	}
	if k := s.t.childrenOf(x); len(k) > 0 {
		t.Errorf("the silent relay still feeds %v", k)
	}
	s.handle(context.Background(), event{n: relay, f: progressFrame(0, 0)})
	if !s.t.canFeed(s.t.node(x)) {
		t.Errorf("the relay, heard again, may not feed")
	}

	// Everyone silent: the seed's own loop was late.
	s = simSeed(30, 2, start)
	s.tick(at)
	for _, n := range s.nodes {
		if p := len(linkOf(n).parents); p != 2 {
			t.Fatalf("with every node silent, %s was told %d parents, want the plan's 2", n.label(), p)
		}
	}
}

// A relay silent for three eighths of the time after which it counts as lost has its
// children moved when its parent says its flow to it has taken nothing
// for stallAfter, or a child of it heard lately says the relay sent it
// nothing for as long: a node that says so of a node it is not linked to
// is not believed, and without such word the relay keeps its children
// until it has been silent for three quarters. The seed says so of its
// own roots from its uplink.
func TestSeedMovesAStarvedRelaysChildrenSooner(t *testing.T) {
	start := time.Now()
	cfg := DefaultConfig()
	at := start.Add(cfg.DeadAfter*starvedQuiet/8 + cfg.Heartbeat/2)
	stalled := func(x *node, stripe int) []stallReport {
		return []stallReport{{peer: x.peer.ID, addr: x.peer.Addr.Addr(), stripe: uint8(stripe), millis: uint32(stallAfter.Milliseconds()) + 500}}
	}
	// setup: a relay fed by a node in stripe 0, silent since start, and
	// everyone else heard at.
	setup := func() (*seedRun, *node, *node) {
		s := simSeed(30, 2, start)
		root := s.t.seed[0][0]
		x := s.t.node(root).children[0][0]
		for len(s.t.node(x).children[0]) == 0 {
			x = s.t.node(root).children[0][1]
		}
		for _, n := range s.nodes {
			if n.id != x {
				n.lastSeen = at
			}
		}
		return s, s.nodes[x-1], s.nodes[s.t.parentOf(x, 0)-1]
	}
	moved := func(s *seedRun, x *node) bool { return len(s.t.childrenOf(x.id)) == 0 }
	progress := func(s *seedRun, from *node, stalls []stallReport) {
		s.handle(context.Background(), event{n: from, f: frame{typ: msgProgress, payload: progressMsg{stalls: stalls}.encode()}})
		from.lastSeen = at
	}

	s, x, _ := setup()
	s.tick(at)
	if moved(s, x) {
		t.Fatalf("a relay silent for %s lost its children with no parent's word", at.Sub(start))
	}

	s, x, p := setup()
	other := s.nodes[s.t.seed[1][0]-1]
	progress(s, other, stalled(x, 0))
	progress(s, p, stalled(x, 1)) // its parent, in the wrong stripe
	s.tick(at)
	if moved(s, x) {
		t.Fatal("a relay lost its children on the word of a node that does not feed it")
	}
	impostor := stalled(x, 0)
	impostor[0].addr = netip.MustParseAddr("10.99.0.1") // a flow that only claims x's id
	progress(s, p, impostor)
	s.tick(at)
	if moved(s, x) {
		t.Fatal("a relay lost its children for a flow from another address that claimed its id")
	}

	progress(s, p, stalled(x, 0))
	s.tick(at)
	if !moved(s, x) {
		t.Fatalf("a relay silent for %s, whose parent says it takes nothing, still feeds %v", at.Sub(start), s.t.childrenOf(x.id))
	}
	if x.c == nil {
		t.Fatal("the starved relay was dropped, not only its children moved")
	}

	// Its child's word: x sent it nothing, not even a ping.
	s, x, _ = setup()
	other = s.nodes[s.t.seed[1][0]-1]
	starve := func(k *node, seen time.Time) {
		s.handle(context.Background(), event{n: k, f: frame{typ: msgProgress, payload: progressMsg{starved: stalled(x, 0)}.encode()}})
		k.lastSeen = seen
	}
	starve(other, at) // not its child
	k := s.nodes[s.t.childrenIn(x.id, 0)[0]-1]
	starve(k, at.Add(-s.cfg.DeadAfter)) // its child, heard too long ago to be believed
	s.tick(at)
	if moved(s, x) {
		t.Fatal("a relay lost its children on the word of a node not its child, or of a child not heard lately")
	}
	starve(k, at)
	s.tick(at)
	if !moved(s, x) {
		t.Fatalf("a relay silent for %s, whose child says it sends nothing, still feeds %v", at.Sub(start), s.t.childrenOf(x.id))
	}

	// A root: the seed sees its own flow stall.
	s, _, _ = setup()
	r := s.nodes[s.t.seed[0][0]-1]
	r.lastSeen = start
	s.up = newUplink(0)
	f := &fakeFlow{d: delivery{pending: true}}
	s.up.add(f, flowTo{child: r.peer.ID, addr: r.peer.Addr.Addr(), stripe: 0}, start)
	s.tick(at)
	if !moved(s, r) {
		t.Fatalf("a silent root whose flow from the seed stalled still feeds %v", s.t.childrenOf(r.id))
	}
}

// A node seen to report less often than every DeadAfter/4 (a longer
// heartbeat of its own) is not taken for silent between two reports,
// whatever its parent says.
func TestSeedWaitsOnANodesOwnReportGap(t *testing.T) {
	start := time.Now()
	s := simSeed(30, 2, start)
	every := s.cfg.DeadAfter / 2
	root := s.t.seed[0][0]
	x := s.t.node(root).children[0][0]
	for len(s.t.node(x).children[0]) == 0 {
		x = s.t.node(root).children[0][1]
	}
	relay := s.nodes[x-1]
	relay.reported, relay.every = start.Add(-every), every
	at := start.Add(every - 100*time.Millisecond)
	for _, n := range s.nodes {
		n.lastSeen = at
	}
	relay.lastSeen = start
	p := s.nodes[s.t.parentOf(x, 0)-1]
	s.handle(context.Background(), event{n: p, f: frame{typ: msgProgress, payload: progressMsg{
		stalls: []stallReport{{peer: relay.peer.ID, addr: relay.peer.Addr.Addr(), millis: 1500}}}.encode()}})
	p.lastSeen = at
	s.tick(at)
	if len(s.t.childrenOf(x)) == 0 {
		t.Fatalf("a relay that reports every %s, last heard %s ago, lost its children", every, at.Sub(start))
	}
}

// byID finds the first node with a receiver id, also after a node's id
// turned out other than it was announced as.
func TestSeedFindsNodesByID(t *testing.T) {
	s := simSeed(4, 2, time.Now())
	a, b := s.nodes[1], s.nodes[2]
	if s.byID(a.peer.ID) != a || s.byID(NodeID{}) != nil {
		t.Fatal("byID does not find a planned node, or finds one for the zero id")
	}
	// b was announced with a's id (a copy, say), and says it is c.
	announced := a.peer.ID
	b.peer.ID = announced
	var c NodeID
	c[0] = 0xcc
	s.rename(b, c)
	if s.byID(c) != b || s.byID(announced) != a {
		t.Fatalf("after b turned out to be c: byID(c) = %v, byID(a's id) = %v", s.byID(c), s.byID(announced))
	}
	// a turns out to be another still: its old id is nobody's now.
	var d NodeID
	d[0] = 0xdd
	s.rename(a, d)
	if s.byID(d) != a || s.byID(announced) != nil {
		t.Fatalf("after a turned out to be d: byID(d) = %v, byID(a's old id) = %v", s.byID(d), s.byID(announced))
	}
}

// The first plan's parent frames go to relays before their children, the
// roots first: a child that hears of its parent before the parent hears of
// it waits for that word, and near the seed the wait holds a subtree back.
func TestSeedTellsRelaysBeforeTheirChildren(t *testing.T) {
	for _, trees := range []int{1, 2} {
		for _, n := range []int{3, 16, 64, 128} {
			s := simSeed(n, trees, time.Now())
			// Tell the whole plan again, links recording the order.
			order := map[*node]int{}
			for _, nd := range s.nodes {
				nd.c = &orderLink{fakeLink: &fakeLink{}, at: func() { order[nd] = len(order) }}
				nd.kids = [maxStripes][]kid{}
			}
			var moves []move
			for _, nd := range s.nodes {
				for st := range s.t.stripes {
					moves = append(moves, move{node: nd.id, stripe: st, parent: s.t.parentOf(nd.id, st)})
				}
			}
			s.tell(moves, false)
			for _, nd := range s.nodes {
				for st := range s.t.stripes {
					for _, c := range s.t.childrenIn(nd.id, st) {
						k := s.nodes[c-1]
						if s.t.feedsIn(k.id, st) > 0 && order[k] < order[nd] {
							t.Errorf("%d trees, %d nodes: %s told before its parent %s in tree %d, where both relay", trees, n, k.label(), nd.label(), st)
						}
					}
				}
			}
		}
	}
}

// orderLink calls at on its first parent frames.
type orderLink struct {
	*fakeLink
	at   func()
	told bool
}

func (l *orderLink) sendFrames(fs ...frame) error {
	if !l.told {
		l.told = true
		l.at()
	}
	return l.fakeLink.sendFrames(fs...)
}

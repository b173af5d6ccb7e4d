package relay

import (
	"fmt"
	"math/bits"
	"slices"
	"testing"
	"time"
)

const (
	testSize  = 1 << 30
	testChunk = 1 << 20
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// planned returns a tree of n nodes, planned, and the plan's moves.
func planned(stripes, n int) (*tree, []move) {
	tr := newTree(stripes, testSize, testChunk, 2*time.Second)
	ids := make([]int, n)
	for i := range ids {
		ids[i] = tr.add()
	}
	return tr, tr.plan(ids, t0)
}

// ceilLog2 is ⌈log2(n+1)⌉, so ceilLog2(n)+1 is the depth bound of n nodes.
func ceilLog2(n int) int { return bits.Len(uint(n)) }

// checkMoves applies moves to before and compares with the tree: the
// moves must be exactly the changes, each node and stripe at most once.
func checkMoves(t *testing.T, tr *tree, before [][maxStripes]int, moves []move) {
	t.Helper()
	after := slices.Clone(before)
	for len(after) < len(tr.nodes) { // nodes added since
		after = append(after, [maxStripes]int{noParent, noParent})
	}
	seen := map[[2]int]bool{}
	for _, m := range moves {
		k := [2]int{m.node, m.stripe}
		if seen[k] {
			t.Fatalf("node %d moved twice in stripe %d: %v", m.node, m.stripe, moves)
		}
		seen[k] = true
		if after[m.node-1][m.stripe] == m.parent {
			t.Fatalf("move %+v changes nothing", m)
		}
		after[m.node-1][m.stripe] = m.parent
	}
	if got := tr.parents(); !slices.Equal(got, after) {
		for i := range got {
			if got[i] != after[i] {
				t.Fatalf("node %d: tree has parents %v, moves give %v", i+1, got[i], after[i])
			}
		}
	}
}

// shape is what checkTree allows.
type shape struct {
	depth    int // deepest node allowed
	seedKids int // most children the seed may have per stripe
	twice    int // most nodes that may feed in two trees: repairs with no better parent
}

// checkTree checks the invariants: every node in the trees has one parent
// per stripe, the seed or a node in the trees, which lists it once; no
// cycles, every node reachable from the seed; at most two children per
// node and stripe; with two trees at most sh.twice nodes feed in both;
// nodes out of the trees have neither parent nor children. It returns the
// deepest depth.
func checkTree(t *testing.T, tr *tree, sh shape) int {
	t.Helper()
	live, deepest, twice := 0, 0, 0
	for st := range tr.stripes {
		if len(tr.seed[st]) > sh.seedKids {
			t.Fatalf("stripe %d: the seed has %d children, want at most %d", st, len(tr.seed[st]), sh.seedKids)
		}
		for _, c := range tr.seed[st] {
			if tr.parentOf(c, st) != seedID {
				t.Fatalf("stripe %d: the seed lists %d, whose parent is %d", st, c, tr.parentOf(c, st))
			}
		}
	}
	for i := range tr.nodes {
		id, n := i+1, &tr.nodes[i]
		inner := 0
		for st := range tr.stripes {
			if !n.in {
				if n.parent[st] != noParent || len(n.children[st]) > 0 {
					t.Fatalf("node %d is out but has parent %d and children %v in stripe %d", id, n.parent[st], n.children[st], st)
				}
				continue
			}
			p := n.parent[st]
			if p == noParent {
				t.Fatalf("node %d has no parent in stripe %d", id, st)
			}
			if p != seedID && !tr.node(p).in {
				t.Fatalf("node %d's parent %d in stripe %d is out", id, p, st)
			}
			if k := *tr.kids(p, st); count(k, id) != 1 {
				t.Fatalf("node %d's parent %d in stripe %d lists %v", id, p, st, k)
			}
			if len(n.children[st]) > 2 {
				t.Fatalf("node %d has %d children in stripe %d", id, len(n.children[st]), st)
			}
			for _, c := range n.children[st] {
				if tr.parentOf(c, st) != id {
					t.Fatalf("node %d lists child %d in stripe %d, whose parent is %d", id, c, st, tr.parentOf(c, st))
				}
			}
			if len(n.children[st]) > 0 {
				inner++
			}
			d, ok := tr.depth(id, st, noParent)
			if !ok {
				t.Fatalf("node %d is not reachable from the seed in stripe %d", id, st)
			}
			deepest = max(deepest, d)
		}
		if n.in {
			live++
		}
		if inner > 1 {
			twice++
		}
	}
	if twice > sh.twice {
		t.Fatalf("%d nodes are inner in two trees, want at most %d", twice, sh.twice)
	}
	if live != tr.live {
		t.Fatalf("tree counts %d live nodes, has %d", tr.live, live)
	}
	if deepest > sh.depth {
		t.Fatalf("a node is at depth %d, want at most %d", deepest, sh.depth)
	}
	return deepest
}

func TestTreePlan(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		for n := 1; n <= 300; n++ {
			tr, moves := planned(stripes, n)
			t.Run(fmt.Sprintf("trees=%d/N=%d", stripes, n), func(t *testing.T) {
				checkMoves(t, tr, newTreeLike(tr, n).parents(), moves)
				checkTree(t, tr, shape{depth: ceilLog2(n) + 1, seedKids: tr.roots})
				for st := range stripes {
					if want := min(n, tr.roots); len(tr.seed[st]) != want {
						t.Errorf("stripe %d: the seed feeds %d roots, want %d", st, len(tr.seed[st]), want)
					}
				}
			})
		}
	}
}

// newTreeLike is tr's shape before plan: n nodes outside the trees.
func newTreeLike(tr *tree, n int) *tree {
	u := newTree(tr.stripes, tr.size, int(tr.chunk), tr.slowAfter)
	for range n {
		u.add()
	}
	return u
}

// innerNode is a node with two children in stripe 0 that is not a root, or
// a root, or 0.
func innerNode(tr *tree) int {
	for i := range tr.nodes {
		if len(tr.nodes[i].children[0]) == 2 && tr.nodes[i].parent[0] != seedID {
			return i + 1
		}
	}
	for i := range tr.nodes {
		if len(tr.nodes[i].children[0]) == 2 {
			return i + 1
		}
	}
	return 0
}

func count(list []int, id int) int {
	k := 0
	for _, x := range list {
		if x == id {
			k++
		}
	}
	return k
}

// repairShape is what the trees may look like after lost nodes: with one
// tree a leaf takes each lost inner node's place, so no node moves deeper;
// with two a lost node's orphan may hang below a deep node, as no node
// feeds in both trees: an orphan's subtree, no taller than D−2 (orphans
// sit at depth 2 or more), below a node at depth ≤ D reaches 2D−1 at most,
// so each loss at most doubles the depth. Each lost node can take one
// free slot more than it leaves, which the seed may have to provide.
func repairShape(tr *tree, n, lost int) shape {
	d := ceilLog2(n) + 1
	if tr.stripes > 1 {
		for range lost {
			d = 2*d - 1
		}
	}
	return shape{depth: d, seedKids: tr.roots + lost, twice: lost}
}

// losing runs the tree's lose for each of lost, checking the moves and
// the trees after each.
// lostInner plans n nodes in stripes trees and loses an inner node,
// which it returns (0: the plan has none, and nothing is lost).
func lostInner(t *testing.T, stripes, n int) (*tree, int) {
	t.Helper()
	tr, _ := planned(stripes, n)
	p := innerNode(tr)
	if p != 0 {
		losing(t, tr, n, p)
	}
	return tr, p
}

func losing(t *testing.T, tr *tree, n int, lost ...int) {
	t.Helper()
	for i, id := range lost {
		before := tr.parents()
		moves := tr.lose(id, false, t0)
		checkMoves(t, tr, before, moves)
		checkTree(t, tr, repairShape(tr, n, i+1))
		for st := range tr.stripes {
			if tr.parentOf(id, st) != noParent || len(tr.node(id).children[st]) > 0 {
				t.Fatalf("lost node %d still has parent %d, children %v in stripe %d", id, tr.parentOf(id, st), tr.node(id).children[st], st)
			}
		}
	}
}

func TestTreeRepairs(t *testing.T) {
	worst := map[string]int{}
	for _, stripes := range []int{1, 2} {
		for n := 1; n <= 300; n++ {
			run := func(name string, f func(t *testing.T, tr *tree)) {
				t.Run(fmt.Sprintf("trees=%d/N=%d/%s", stripes, n, name), func(t *testing.T) {
					tr, _ := planned(stripes, n)
					f(t, tr)
					if d := checkTree(t, tr, shape{depth: 1 << 30, seedKids: 1 << 30, twice: 1 << 30}) - ceilLog2(n) - 1; d > worst[name] {
						worst[name] = d
					}
				})
			}
			run("root", func(t *testing.T, tr *tree) { losing(t, tr, n, tr.seed[0][0]) })
			p := innerNode(tr0(stripes, n))
			if p == 0 {
				continue
			}
			run("inner", func(t *testing.T, tr *tree) { losing(t, tr, n, p) })
			run("parent and child", func(t *testing.T, tr *tree) { losing(t, tr, n, p, tr.node(p).children[0][0]) })
			run("child and parent", func(t *testing.T, tr *tree) { losing(t, tr, n, tr.node(p).children[0][0], p) })
			run("siblings", func(t *testing.T, tr *tree) { losing(t, tr, n, slices.Clone(tr.node(p).children[0])...) })
			run("rejoin", func(t *testing.T, tr *tree) {
				losing(t, tr, n, p)
				// Mid-session: the others went on while it was away.
				for id := 1; id <= n; id++ {
					tr.setHeld(id, testSize/2)
				}
				tr.setHeld(p, testSize/3)
				before := tr.parents()
				moves := tr.join(p, t0)
				checkMoves(t, tr, before, moves)
				checkTree(t, tr, repairShape(tr, n, 1))
				for st := range stripes {
					if tr.parentOf(p, st) == noParent {
						t.Fatalf("rejoined node has no parent in stripe %d", st)
					}
				}
			})
			run("lost for good", func(t *testing.T, tr *tree) {
				checkMoves(t, tr, tr.parents(), tr.lose(p, true, t0))
				if moves := tr.join(p, t0); moves != nil || tr.node(p).in {
					t.Fatalf("a node lost for good rejoined: %v", moves)
				}
				for range 5 {
					id := tr.add()
					checkMoves(t, tr, tr.parents(), tr.join(id, t0))
				}
				checkTree(t, tr, repairShape(tr, tr.live, 1))
				for st := range stripes {
					if len(tr.node(p).children[st]) > 0 {
						t.Fatalf("a node lost for good has children %v", tr.node(p).children[st])
					}
				}
			})
		}
	}
	t.Logf("deepest beyond the plan's bound: %v", worst)
}

// tr0 is a freshly planned tree.
func tr0(stripes, n int) *tree {
	tr, _ := planned(stripes, n)
	return tr
}

func TestTreeLateJoiners(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		for n := 1; n <= 300; n += 1 + n/32 { // every size to 32, then a sample: each costs N²
			t.Run(fmt.Sprintf("trees=%d/N=%d", stripes, n), func(t *testing.T) {
				tr, _ := planned(stripes, n)
				// One, then as many again as planned: each is placed within
				// the bound of the grown fleet, nobody feeding in both trees.
				for range n + 1 {
					before := tr.parents()
					id := tr.add()
					moves := tr.join(id, t0)
					checkMoves(t, tr, before, moves)
					// One move per stripe for the joiner, and where no node
					// has room, one for the leaf whose place it takes.
					own := 0
					for _, m := range moves {
						if m.node == id {
							own++
						} else if tr.parentOf(m.node, m.stripe) != id || len(tr.node(m.node).children[m.stripe]) > 0 {
							t.Fatalf("joiner %d: moves %v move more than a leaf below it", id, moves)
						}
					}
					if own != stripes || len(moves) > 2*stripes {
						t.Fatalf("joiner %d: moves %v", id, moves)
					}
					checkTree(t, tr, shape{depth: ceilLog2(tr.live) + 1, seedKids: tr.roots})
				}
			})
		}
	}
}

// flow plays a session forward: per stripe, each node gains what its own
// link brings, never more than its parent holds there.
type flow struct {
	tr   *tree
	held [][maxStripes]int64
	link []int64 // each node's download rate, bytes per second
}

func newFlow(tr *tree, rate int64) *flow {
	f := &flow{tr: tr, held: make([][maxStripes]int64, len(tr.nodes)), link: make([]int64, len(tr.nodes))}
	for i := range f.link {
		f.link[i] = rate
	}
	return f
}

func (f *flow) step(dt time.Duration) {
	tr := f.tr
	share := tr.size / int64(tr.stripes)
	for st := range tr.stripes {
		level := slices.Clone(tr.seed[st])
		for len(level) > 0 {
			var next []int
			for _, id := range level {
				limit := share
				if p := tr.parentOf(id, st); p > seedID {
					limit = f.held[p-1][st]
				}
				h := &f.held[id-1][st]
				*h = max(*h, min(*h+f.link[id-1]*int64(dt)/int64(time.Second)/int64(tr.stripes), limit))
				next = append(next, tr.node(id).children[st]...)
			}
			level = next
		}
	}
	for i := range f.held {
		var sum int64
		for st := range tr.stripes {
			sum += f.held[i][st]
		}
		tr.setHeld(i+1, sum)
	}
}

// reportAll has every node report its progress at now on its clock.
func reportAll(tr *tree, now time.Time) {
	for i := range tr.nodes {
		tr.reported(i+1, now.Sub(t0), now)
	}
}

func TestTreeSlowRelay(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		for n := 4; n <= 300; n += 1 + n/16 {
			t.Run(fmt.Sprintf("trees=%d/N=%d", stripes, n), func(t *testing.T) {
				tr, _ := planned(stripes, n)
				x := innerNode(tr)
				if n%2 == 0 {
					x = tr.seed[0][0] // a root
				}
				f := newFlow(tr, 10<<20)
				f.link[x-1] = 256 << 10 // a fortieth of the others
				now := t0
				for range 20 {
					now = now.Add(500 * time.Millisecond)
					f.step(500 * time.Millisecond)
					reportAll(tr, now)
					before := tr.parents()
					root := slices.Contains(tr.seed[0], x)
					moves, slow := tr.checkRates(now)
					checkMoves(t, tr, before, moves)
					checkTree(t, tr, shape{depth: 2*(ceilLog2(n)+1) - 1, seedKids: tr.roots + 1, twice: 2})
					if root && slices.Contains(slow, x) && slices.Contains(tr.seed[0], x) && len(tr.seed[0]) > tr.roots {
						t.Fatalf("the seed feeds %v in stripe 0: the slow root kept its place, and its children took more", tr.seed[0])
					}
					if !root && slices.ContainsFunc(moves, func(m move) bool { return m.node == x }) {
						// It swapped places with an idle leaf: the trees
						// keep the plan's shape.
						checkTree(t, tr, shape{depth: ceilLog2(n) + 1, seedKids: tr.roots})
					}
					for _, id := range slow {
						if id != x {
							t.Fatalf("node %d found slow; only %d is", id, x)
						}
					}
				}
				if !tr.isSlow(x) || tr.feeds(tr.node(x)) {
					t.Fatalf("slow relay %d: slow %v, children %v", x, tr.isSlow(x), tr.node(x).children)
				}
				for st := range stripes {
					if tr.parentOf(x, st) == noParent {
						t.Fatalf("the slow relay lost its own parent in stripe %d", st)
					}
				}
				// It takes no children later either.
				for range 4 {
					id := tr.add()
					tr.join(id, now)
					for st := range stripes {
						if tr.parentOf(id, st) == x {
							t.Fatalf("joiner %d placed below the slow relay", id)
						}
					}
				}
			})
		}
	}
}

// A child that every parent fails, at once and for ever, gets a new parent
// at most once per back-off: never again from a parent that just failed
// it, and a handful of times a minute, not thousands a second.
func TestTreeComplaintsBackOff(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		for _, n := range []int{1, 2, 5, 40} {
			t.Run(fmt.Sprintf("trees=%d/N=%d", stripes, n), func(t *testing.T) {
				tr, _ := planned(stripes, n)
				c, st := n, stripes-1
				failed := map[int]time.Time{}
				placed := 0
				check := func(now time.Time, moves []move) {
					for _, m := range moves {
						if m.node != c || m.stripe != st {
							t.Fatalf("move %+v: only node %d's stripe %d is failing", m, c, st)
						}
						if m.parent == noParent {
							continue
						}
						placed++
						if f, ok := failed[m.parent]; ok && now.Sub(f) < retryFirst {
							t.Fatalf("at %s: back to parent %d, which failed it %s ago", now.Sub(t0), m.parent, now.Sub(f))
						}
					}
				}
				for now := t0; now.Before(t0.Add(time.Minute)); now = now.Add(time.Millisecond) {
					before := tr.parents()
					moves := tr.retry(now)
					checkMoves(t, tr, before, moves)
					check(now, moves)
					if p := tr.parentOf(c, st); p != noParent {
						failed[p] = now
						before := tr.parents()
						moves := tr.complain(c, st, p, now)
						checkMoves(t, tr, before, moves)
						check(now, moves)
					}
				}
				if placed < 5 || placed > 10 {
					t.Fatalf("placed %d times in a minute, want a handful", placed)
				}
				// A complaint about a parent it no longer has changes nothing.
				tr2, _ := planned(stripes, n)
				if p := tr2.parentOf(c, st); tr2.complain(c, st, p+1, t0) != nil || tr2.parentOf(c, st) != p {
					t.Fatalf("a stale complaint moved node %d", c)
				}
			})
		}
	}
}

func TestTreeFailedNode(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		tr, _ := planned(stripes, 40)
		x, y := innerNode(tr), 0
		for i := range tr.nodes {
			if id := i + 1; id != x && tr.feeds(&tr.nodes[i]) {
				y = id
			}
		}
		// Incomplete, it leaves the trees: its children wait for what it
		// will never fetch.
		before := tr.parents()
		checkMoves(t, tr, before, tr.fail(x, t0))
		checkTree(t, tr, repairShape(tr, 40, 1))
		if tr.node(x).in {
			t.Fatalf("trees=%d: a failed incomplete node stays in", stripes)
		}
		// Complete, it keeps feeding its children, but takes no more.
		tr.setHeld(y, testSize)
		kids := fmt.Sprint(tr.node(y).children)
		if moves := tr.fail(y, t0); moves != nil || fmt.Sprint(tr.node(y).children) != kids {
			t.Fatalf("trees=%d: a failed complete node lost its children: %v", stripes, moves)
		}
		for range 20 {
			id := tr.add()
			tr.join(id, t0)
			for st := range stripes {
				if tr.parentOf(id, st) == y {
					t.Fatalf("trees=%d: joiner %d placed below failed node %d", stripes, id, y)
				}
			}
		}
	}
}

// A retired node (done, its children too, let go) keeps its place on
// record and is never given a child again: not a joiner, not an orphan.
func TestTreeRetiredNode(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		tr, _ := planned(stripes, 40)
		r := innerNode(tr)
		kids := tr.childrenOf(r)
		if len(kids) == 0 {
			t.Fatalf("trees=%d: inner node %d has no children", stripes, r)
		}
		was := fmt.Sprint(tr.node(r).parent, tr.node(r).children)
		tr.setHeld(r, testSize)
		tr.retire(r)
		if fmt.Sprint(tr.node(r).parent, tr.node(r).children) != was {
			t.Fatalf("trees=%d: retiring %d changed its place", stripes, r)
		}
		for range 20 {
			id := tr.add()
			tr.join(id, t0)
		}
		for _, lost := range []int{innerNode(tr)} {
			if lost != r {
				tr.lose(lost, false, t0)
			}
		}
		for i := range tr.nodes {
			for st := range stripes {
				if id := i + 1; tr.parentOf(id, st) == r && !slices.Contains(kids, id) {
					t.Fatalf("trees=%d: node %d placed below retired node %d", stripes, id, r)
				}
			}
		}
	}
}

// A relay lags its parent when it holds far less of a stripe than the
// parent does (the seed holds every stripe): a root that never fetched
// lags, one that keeps up with its parent does not.
func TestTreeLagsParent(t *testing.T) {
	tr, _ := planned(2, 14)
	root, kid := tr.seed[0][0], 0
	if kids := tr.node(root).children[0]; len(kids) > 0 {
		kid = kids[0]
	}
	if kid == 0 {
		t.Fatal("the stripe-0 root has no child")
	}
	half := tr.stripeBytes(0) / 2
	tr.setStripeHeld(root, []int64{0, 0})
	tr.setStripeHeld(kid, []int64{0, 0})
	if !tr.lagsParent(root, 0) {
		t.Error("a root holding none of its stripe does not lag the seed")
	}
	if tr.lagsParent(kid, 0) {
		t.Error("a child holding what its empty parent holds lags it")
	}
	tr.setStripeHeld(root, []int64{tr.stripeBytes(0), 0})
	if tr.lagsParent(root, 0) {
		t.Error("a root holding its whole stripe lags the seed")
	}
	tr.setStripeHeld(kid, []int64{half, 0})
	if !tr.lagsParent(kid, 0) {
		t.Error("a child holding half of what its parent holds does not lag it")
	}
	tr.setStripeHeld(kid, []int64{tr.stripeBytes(0) - tr.starveSlack()/2, 0})
	if tr.lagsParent(kid, 0) {
		t.Error("a child within the slack of its parent lags it")
	}
}

// A node's claims are believed only as far as its parents reach: a root
// may hold its whole stripe, a node below an honest parent at most what
// that parent holds (and a chunk, and what it held when it joined).
func TestTreeBelievesClaimsAsFarAsParentsReach(t *testing.T) {
	tr, _ := planned(2, 7)
	var root, child int
	for id := 1; id <= 7; id++ {
		if p := tr.parentOf(id, 0); p == seedID {
			root = id
		}
	}
	for id := 1; id <= 7; id++ {
		if tr.parentOf(id, 0) == root {
			child = id
		}
	}
	if root == 0 || child == 0 {
		t.Fatalf("no root with a child in stripe 0: %v", tr.parents())
	}
	half := tr.stripeBytes(0)
	claim := func(id int, st0 int64) int64 {
		tr.setHeld(id, min(testSize, 2*st0))
		tr.setStripeHeld(id, []int64{st0, 0})
		return tr.stripeHeld(tr.node(id), 0)
	}
	if got := claim(root, 100<<20); got != 100<<20 {
		t.Errorf("the root fed by the seed: believed %d of its claimed %d", got, 100<<20)
	}
	if got := claim(child, half); got != 100<<20+testChunk {
		t.Errorf("a child claiming its whole stripe under a parent holding 100 MiB: believed %d, want %d", got, 100<<20+testChunk)
	}
	if got := claim(child, 50<<20); got != 50<<20 {
		t.Errorf("a child claiming less than its parent: believed %d, want %d", got, 50<<20)
	}
	// What it once could have had stays believable after a move.
	claim(root, 0)
	if got := claim(child, 90<<20); got != 90<<20 {
		t.Errorf("after its parent's claim dropped: believed %d, want %d", got, 90<<20)
	}
	other := tr.add()
	tr.setBase(other, 10<<20)
	tr.enter(other, t0)
	if got := tr.node(other).held; got != 10<<20 {
		t.Errorf("a joiner's own word on what it holds: %d", got)
	}
}

// A root its children keep complaining of gives its place at the seed to
// one of them and becomes a leaf: the seed's share of its stripe reaches
// the tree again. A small package's root that fetched none of its stripe
// lags the seed, so such complaints count against it.
func TestTreeDistrustedRoot(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		tr := newTree(stripes, 4_000_000, testChunk, 2*time.Second)
		ids := make([]int, 9)
		for i := range ids {
			ids[i] = tr.add()
		}
		tr.plan(ids, t0)
		st := stripes - 1
		root := tr.seed[st][0]
		kids := slices.Clone(tr.node(root).children[st])
		if len(kids) == 0 {
			t.Fatalf("trees=%d: the root has no children", stripes)
		}
		for _, id := range ids {
			tr.setStripeHeld(id, make([]int64, stripes))
		}
		if !tr.lagsParent(root, st) {
			t.Fatalf("trees=%d: a root holding none of a 4 MB package's stripe does not lag the seed", stripes)
		}
		before := tr.parents()
		moves := tr.distrust(root, t0)
		checkMoves(t, tr, before, moves)
		checkTree(t, tr, shape{depth: ceilLog2(9) + 2, seedKids: tr.roots, twice: 1})
		if slices.Contains(tr.seed[st], root) {
			t.Errorf("trees=%d: the distrusted root keeps its place at the seed", stripes)
		}
		if !slices.ContainsFunc(tr.seed[st], func(c int) bool { return slices.Contains(kids, c) }) {
			t.Errorf("trees=%d: none of the root's children %v took its place; the seed feeds %v", stripes, kids, tr.seed[st])
		}
		if k := tr.childrenOf(root); len(k) > 0 {
			t.Errorf("trees=%d: the distrusted root still feeds %v", stripes, k)
		}
	}
}

// A relay that lags its parent in one tree only, starved in the other by
// a parent that crawls there, is convicted of a slow link by a second
// slow sample, not the first: TCP gives one child of a parent less for a
// while. One that lags in every tree is convicted by the first.
func TestTreeSlowInOneTreeNeedsTwoSamples(t *testing.T) {
	for _, everywhere := range []bool{false, true} {
		tr, _ := planned(2, 14)
		x := innerNode(tr)
		p0 := tr.parentOf(x, 0)
		if p0 == seedID {
			t.Fatalf("inner node %d is a root", x)
		}
		found := foundSlowAt(t, tr, x, func(id int, normal, slow int64) []int64 {
			switch {
			case id == x:
				return []int64{slow, slow}
			case id == p0 && !everywhere:
				return []int64{slow, normal}
			}
			return []int64{normal, normal}
		})
		// Samples end every 2 s; judging starts after two.
		want := 6 * time.Second
		if everywhere {
			want = 4 * time.Second
		}
		if found != want {
			t.Errorf("everywhere=%v: relay %d found slow at %s, want %s", everywhere, x, found, want)
		}
	}
}

// A root on a slow link holds back its whole tree, and the seed always has
// data for it, so it is judged after one window, not two; an inner relay
// on the same link still gets two, for its parent's flow to settle.
func TestTreeSlowRootFoundInTheFirstWindow(t *testing.T) {
	for _, root := range []bool{true, false} {
		tr, _ := planned(2, 14)
		x := innerNode(tr)
		if root {
			x = tr.seed[0][0]
		}
		f := newFlow(tr, 10<<20)
		f.link[x-1] = 256 << 10
		found := time.Duration(-1)
		for now := t0; found < 0 && now.Sub(t0) < 10*time.Second; {
			now = now.Add(500 * time.Millisecond)
			f.step(500 * time.Millisecond)
			for range ceilLog2(len(tr.nodes)) + 1 { // as nodes report, stripe by stripe
				for i := range tr.nodes {
					tr.setStripeHeld(i+1, f.held[i][:tr.stripes])
				}
			}
			reportAll(tr, now)
			_, slow := tr.checkRates(now)
			for _, id := range slow {
				if id != x {
					t.Fatalf("root=%v: node %d found slow; only %d is", root, id, x)
				}
				found = now.Sub(t0)
			}
		}
		want := 2 * tr.slowAfter
		if root {
			want = tr.slowAfter / rootWindow
		}
		if found != want {
			t.Errorf("root=%v: relay %d on a slow link found at %s, want %s", root, x, found, want)
		}
	}
}

// A relay the seed has not heard from for a while (its link went down,
// it hangs) loses its children at once, before it counts as lost, keeps
// its own place, takes no new children while quiet, and may feed again
// once heard.
func TestTreeQuietRelay(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		for _, root := range []bool{false, true} {
			tr, _ := planned(stripes, 14)
			x := innerNode(tr)
			if root {
				x = tr.seed[0][0]
			}
			kids := tr.childrenOf(x)
			before := tr.parents()
			moves := tr.hush(x, t0)
			checkMoves(t, tr, before, moves)
			// As for a slow relay: a root, no longer one, may end up
			// below the seed beside its successor, as the last resort.
			checkTree(t, tr, shape{depth: 2*(ceilLog2(14)+1) - 1, seedKids: tr.roots + 1, twice: 2})
			if k := tr.childrenOf(x); len(k) > 0 {
				t.Fatalf("trees=%d root=%v: quiet relay %d still feeds %v", stripes, root, x, k)
			}
			for _, c := range kids {
				if !slices.ContainsFunc(moves, func(m move) bool { return m.node == c }) {
					t.Fatalf("trees=%d root=%v: child %d of the quiet relay was not moved: %v", stripes, root, c, moves)
				}
			}
			for st := range stripes {
				if tr.parentOf(x, st) == noParent {
					t.Fatalf("trees=%d root=%v: the quiet relay lost its own parent in stripe %d", stripes, root, st)
				}
			}
			if again := tr.hush(x, t0); len(again) > 0 {
				t.Fatalf("trees=%d root=%v: hushed twice, moved %v", stripes, root, again)
			}
			id := tr.add()
			tr.join(id, t0)
			for st := range stripes {
				if tr.parentOf(id, st) == x {
					t.Fatalf("trees=%d root=%v: joiner placed below the quiet relay", stripes, root)
				}
			}
			tr.heard(x)
			if !tr.canFeed(tr.node(x)) {
				t.Fatalf("trees=%d root=%v: relay %d may not feed once heard again", stripes, root, x)
			}
		}
	}
}

// A root that lags the seed is convicted by its first slow sample even
// where its parent in the other tree is held back too (it looks starved
// there): the seed always has data for it.
func TestTreeSlowRootStarvedInTheOtherTree(t *testing.T) {
	tr, _ := planned(2, 14)
	x := tr.seed[0][0]
	p1 := tr.parentOf(x, 1)
	if p1 <= seedID {
		t.Fatalf("root %d of tree 0 is fed by the seed in tree 1 too", x)
	}
	found := foundSlowAt(t, tr, x, func(id int, normal, slow int64) []int64 {
		switch id {
		case x:
			return []int64{slow, slow}
		case p1:
			return []int64{normal, 2 * slow}
		}
		return []int64{normal, normal}
	})
	if want := tr.slowAfter / rootWindow; found != want {
		t.Errorf("root %d found slow at %s, want %s", x, found, want)
	}
}

// foundSlowAt moves the clock a second at a time for up to 6 s, each node
// reporting, stripe by stripe, what held says it holds when a healthy link
// has brought normal bytes of a stripe and a crawling one slow, and
// returns when relay x was found slow (-1: never). Any other node found
// slow fails the test.
func foundSlowAt(t *testing.T, tr *tree, x int, held func(id int, normal, slow int64) []int64) time.Duration {
	t.Helper()
	const healthy, crawl = 5 << 20, 256 << 10 // bytes per second in one stripe
	for step := time.Duration(1); step <= 6; step++ {
		normal, slow := int64(healthy*step), int64(crawl*step)
		for range 2 { // a claim is believed as far as the parent's reaches
			for i := range tr.nodes {
				h := held(i+1, normal, slow)
				tr.setHeld(i+1, h[0]+h[1])
				tr.setStripeHeld(i+1, h)
			}
		}
		reportAll(tr, t0.Add(step*time.Second))
		_, slowOnes := tr.checkRates(t0.Add(step * time.Second))
		if slices.Contains(slowOnes, x) {
			return step * time.Second
		}
		if len(slowOnes) > 0 {
			t.Fatalf("%v found slow at %s; only %d is", slowOnes, step*time.Second, x)
		}
	}
	return -1
}

// A relay's progress reports held up on the wire (its uplink busy, a lost
// segment sent again) stop for a while and then arrive late, the oldest
// first: neither is a slow link. Its rate is measured on its own clock,
// and a relay whose last report is stale is not judged at all: silence is
// for hush to act on.
func TestTreeLateReportsAreNoSlowLink(t *testing.T) {
	tr, _ := planned(2, 14)
	x := innerNode(tr)
	f := newFlow(tr, 10<<20)
	type report struct {
		clock time.Duration
		held  [maxStripes]int64
	}
	var stuck []report
	var heard report // what the seed last heard from x
	for now := t0; now.Sub(t0) < 10*time.Second; {
		now = now.Add(500 * time.Millisecond)
		f.step(500 * time.Millisecond)
		tr.setHeld(x, heard.held[0]+heard.held[1])
		at := now.Sub(t0)
		for i := range tr.nodes {
			if i+1 != x {
				tr.setStripeHeld(i+1, f.held[i][:tr.stripes])
				tr.reported(i+1, at, now)
			}
		}
		// x's reports written from 2.5 s to 5 s are held up: the first
		// arrives at 5 s, the rest at 5.5 s.
		stuck = append(stuck, report{at, f.held[x-1]})
		var arrive []report
		switch {
		case at >= 2500*time.Millisecond && at < 5*time.Second:
		case at == 5*time.Second:
			arrive, stuck = stuck[:1], stuck[1:]
		default:
			arrive, stuck = stuck, nil
		}
		for _, r := range arrive {
			heard = r
			tr.setHeld(x, r.held[0]+r.held[1])
			tr.setStripeHeld(x, r.held[:tr.stripes])
			tr.reported(x, r.clock, now)
		}
		moves, slow := tr.checkRates(now)
		if len(slow) > 0 || len(moves) > 0 {
			t.Fatalf("at %s (relay %d's reports late): %v found slow, moves %v", at, x, slow, moves)
		}
	}
}

// A node that joins again reports on a new session clock, from zero: its
// rate is sampled on that clock at once, not only once the new clock has
// passed the old one.
func TestTreeRejoinerClockStartsAgain(t *testing.T) {
	tr, _ := planned(2, 6)
	x := innerNode(tr)
	now := t0.Add(time.Minute)
	tr.reported(x, time.Minute, now) // its first session's clock
	tr.lose(x, false, now)
	tr.setBase(x, 1<<20)
	tr.join(x, now)
	tr.setHeld(x, 3<<20)
	tr.reported(x, 2*time.Second, now.Add(2*time.Second)) // the new session's clock
	tr.checkRates(now.Add(2 * time.Second))
	if got := tr.node(x).rate; got != 1<<20 {
		t.Fatalf("rate after rejoining %.0f B/s, want %d (2 MiB in 2 s)", got, 1<<20)
	}
}

// A node that comes back behind the others never takes the place of a
// leaf that holds more of that stripe: the leaf would wait for it, and it
// gets the stripe no faster than the leaf did (16 @ 100 Mbit/s: a leaf
// moved under the rejoined relay ended 1.8 s after the rest).
func TestTreeRejoinerFeedsNoOneAhead(t *testing.T) {
	inserted := 0
	for _, stripes := range []int{1, 2} {
		for n := 3; n <= 64; n++ {
			tr, p := lostInner(t, stripes, n)
			if p == 0 {
				continue
			}
			// Behind by less than placeSlack in all, more than
			// starveSlack in each stripe.
			for id := 1; id <= n; id++ {
				tr.setHeld(id, testSize/2)
			}
			tr.setHeld(p, testSize/2-tr.placeSlack()*4/5)
			before := tr.parents()
			moves := tr.join(p, t0)
			checkMoves(t, tr, before, moves)
			for _, m := range moves {
				if m.parent != p {
					continue
				}
				inserted++
				if c, q := tr.stripeHeld(tr.node(m.node), m.stripe), tr.stripeHeld(tr.node(p), m.stripe); c > q+tr.starveSlack() {
					t.Fatalf("trees=%d N=%d: rejoined %d, holding %d of stripe %d, feeds %d, which holds %d", stripes, n, p, q, m.stripe, m.node, c)
				}
			}
		}
	}
	t.Logf("moves under the rejoined node: %d", inserted)
}

// Nor the place of a leaf it is even with in that stripe but behind in
// all, or behind by now: it has more to download, and would complete the
// stripe later than the leaf does.
func TestTreeRejoinerBehindInAllFeedsNoOne(t *testing.T) {
	now := t0.Add(10 * time.Second)
	for _, stale := range []bool{false, true} {
		inserted := 0
		for n := 3; n <= 64; n++ {
			tr, p := lostInner(t, 2, n)
			if p == 0 {
				continue
			}
			h, ahead := int64(testSize/8), tr.placeSlack()/2
			if stale {
				ahead = 0 // even when they reported, a second ago, 9 s into their session
			}
			for range 2 { // a second pass: parents' holdings bound their children's
				for id := 1; id <= n; id++ {
					if id != p {
						tr.setHeld(id, 2*h+ahead)
						tr.setStripeHeld(id, []int64{h + ahead, h})
						tr.reported(id, 9*time.Second, now.Add(-time.Second))
					}
				}
			}
			tr.setBase(p, 2*h)
			for _, m := range tr.join(p, now) {
				if m.parent != p {
					continue
				}
				inserted++
				if by := tr.heldBy(tr.node(m.node), now); by > tr.heldOf(p) {
					t.Errorf("stale=%v N=%d: rejoined %d, holding %d in all, feeds %d, which holds %d by now", stale, n, p, tr.heldOf(p), m.node, by)
				}
			}
		}
		t.Logf("stale=%v: moves under the rejoined node: %d", stale, inserted)
	}
}

// holdAll sets every node but skip to held, reported at clock, at.
func holdAll(tr *tree, skip int, held int64, clock time.Duration, at time.Time) {
	for id := 1; id <= len(tr.nodes); id++ {
		if id != skip {
			tr.setHeld(id, held)
			tr.reported(id, clock, at)
		}
	}
}

// A leaf re-placed mid-session (its parent lost, no room within the depth
// bound) that is even with every other leaf (same holdings, reported at
// the same time, at the same rate) is behind none of them by now, so it
// may take a leaf's place, instead of going deep or onto the seed beyond
// its share: both are reckoned as of now.
func TestTreeEvenNodeTakesALeafsPlace(t *testing.T) {
	now := t0.Add(10 * time.Second)
	for n := 4; n <= 32; n++ {
		tr, _ := planned(1, n)
		holdAll(tr, 0, testSize/4, 9*time.Second, now.Add(-time.Second))
		c := 0
		for id := 1; id <= n; id++ {
			if !tr.feeds(tr.node(id)) && tr.parentOf(id, 0) != seedID {
				c = id
				break
			}
		}
		if c == 0 {
			continue
		}
		want := false // another leaf whose place c may take
		for id := 1; id <= n; id++ {
			if id != c && !tr.feeds(tr.node(id)) {
				if _, ok := tr.depth(id, 0, c); ok {
					want = true
				}
			}
		}
		if _, _, ok := tr.insert(c, 0, now); want && !ok {
			t.Errorf("N=%d: leaf %d, even with every leaf, takes no leaf's place", n, c)
		}
	}
}

// A leaf that says it got what it holds in 1 ms of its session (its clock
// is its word; the seed only bounds it from above) is not reckoned to
// hold the whole package a second later: it keeps no place from a node
// that comes back holding twice what it does.
func TestTreeLeafClockOfAMillisecondKeepsNoPlace(t *testing.T) {
	now := t0.Add(10 * time.Second)
	found := false
	for n := 6; n <= 32; n++ {
		tr, p := lostInner(t, 2, n)
		if p == 0 {
			continue
		}
		h := int64(testSize / 8)
		holdAll(tr, p, 3*h, 9*time.Second, now.Add(-time.Second)) // ahead of p
		x := 0
		for id := 1; id <= n; id++ {
			if id != p && len(tr.node(id).children[0]) == 0 && tr.parentOf(id, 0) != noParent {
				x = id
				break
			}
		}
		if x == 0 {
			continue
		}
		tr.setHeld(x, h)
		tr.reported(x, time.Millisecond, now.Add(-time.Second)) // the liar
		tr.setBase(p, 2*h)
		tr.enter(p, now)
		found = true
		if got, _, ok := tr.insert(p, 0, now); !ok || got != x {
			t.Errorf("N=%d: returning node %d (holding %d) may not take the place of leaf %d (holding %d, by now %d on its 1 ms clock): got %d %v",
				n, p, tr.heldOf(p), x, tr.heldOf(x), tr.heldBy(tr.node(x), now), got, ok)
		}
	}
	if !found {
		t.Fatal("setup: no case")
	}
}

// A plan's moves go level by level across the trees: the roots of every
// tree first, and no node before its parent, so the seed tells the nodes
// that start the trees before the many that wait deep in them.
func TestPlanTellsLevelByLevel(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		tr, moves := planned(stripes, 128)
		roots := 0
		for _, m := range moves {
			if m.parent == seedID {
				roots++
			}
		}
		told := map[[2]int]bool{}
		for i, m := range moves {
			if i < roots && m.parent != seedID {
				t.Fatalf("stripes=%d: move %d (%+v) comes before a root is told", stripes, i, m)
			}
			if m.parent != seedID && !told[[2]int{m.parent, m.stripe}] {
				t.Fatalf("stripes=%d: node %d told its parent %d in stripe %d before that parent was told its own", stripes, m.node, m.parent, m.stripe)
			}
			told[[2]int{m.node, m.stripe}] = true
		}
		if len(told) != 128*tr.stripes {
			t.Fatalf("stripes=%d: %d nodes and stripes told, want %d", stripes, len(told), 128*tr.stripes)
		}
	}
}

// A relay is believed to hold no more than its parents were believed to
// hold at their last reports. When those come late, a fast relay's claims
// are capped below what it holds, its believed rate drops, and once its
// parents' reports land it lags them: that is not a slow link, and a relay
// whose last claim was capped is not judged.
func TestTreeCappedClaimIsNotJudged(t *testing.T) {
	tr, _ := planned(2, 14)
	x := innerNode(tr)
	var parents []int
	for st := range tr.stripes {
		if p := tr.parentOf(x, st); p > seedID {
			parents = append(parents, p)
		}
	}
	f := newFlow(tr, 10<<20)
	now := t0
	for step := range 24 {
		now = now.Add(500 * time.Millisecond)
		f.step(500 * time.Millisecond)
		report := func(id int) {
			tr.setStripeHeld(id, f.held[id-1][:tr.stripes])
			tr.reported(id, now.Sub(t0), now)
		}
		for id := 1; id <= len(tr.nodes); id++ {
			if !slices.Contains(parents, id) {
				report(id)
			}
		}
		if step%6 == 5 { // x's parents' reports come late, six at once, after x's
			for _, p := range parents {
				report(p)
			}
		}
		if _, slow := tr.checkRates(now); len(slow) > 0 {
			t.Fatalf("at %s: %v found slow; every link is as fast (x = %d, its parents %v report late)", now.Sub(t0), slow, x, parents)
		}
	}
}

// When a root is lost and its children hold more than every node with room
// for a child, the seed does not take both: fed three flows, its uplink
// would give the other tree's root a third, and every node would slow to
// the end. The second child goes under a node that lags it instead.
func TestTreeLostRootDoesNotOverloadTheSeed(t *testing.T) {
	for _, n := range []int{8, 16, 31, 64} {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			tr, _ := planned(2, n)
			root := tr.seed[0][0]
			orphans := slices.Clone(tr.node(root).children[0])
			for id := 1; id <= n; id++ {
				held := int64(64 << 20)
				if slices.Contains(orphans, id) {
					held += 4 * tr.placeSlack()
				}
				tr.setHeld(id, held)
			}
			tr.lose(root, false, t0.Add(time.Second))
			for st := range tr.stripes {
				if len(tr.seed[st]) > tr.roots {
					t.Errorf("stripe %d: the seed feeds %v, more than its %d", st, tr.seed[st], tr.roots)
				}
			}
			for id := 1; id <= n; id++ {
				for st := range tr.stripes {
					if id != root && tr.parentOf(id, st) == noParent {
						t.Errorf("node %d has no parent in stripe %d", id, st)
					}
				}
			}
		})
	}
}

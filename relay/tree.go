package relay

import (
	"math/bits"
	"slices"
	"time"
)

// Node ids in a tree: nodes are numbered from 1 in the order the seed
// learns of them; 0 is the seed, the root of every tree.
const (
	seedID   = 0
	noParent = -1 // in no tree: not placed, lost, failed, or waiting to retry
)

// move is one parent change: node fetches stripe from parent from now on.
// A move to noParent takes the node out of that stripe's tree; there is
// nothing to tell it.
type move struct {
	node, stripe, parent int
}

// The rules' numbers, one reason each.
const (
	// A new parent may hold this much less than the node it takes, a
	// fiftieth of the package and at least 8 chunks: a leaf's uplink is
	// idle, the seed's is not, and the parent keeps moving.
	placeSlackChunks = 8
	placeSlackShare  = 50
	// A relay that holds all but a hundredth of the package (at least 4
	// chunks) of what its parents hold is starved, not slow; but never all
	// but more than a quarter of a stripe: in a package of a few chunks, a
	// root that fetched none of its stripe lags the seed.
	starveSlackChunks      = 4
	starveSlackShare       = 100
	starveSlackStripeShare = 4
	// slowFactor: a relay at under a quarter of a healthy rate loses its children.
	slowFactor = 4
	// healthyPercentile: what the fastest tenth reach is what a healthy link does here.
	healthyPercentile = 90
	// minRates: fewer nodes than this say nothing about what is healthy.
	minRates = 3
	// slowWarmup: a node's rate counts only after this many SlowAfter
	// windows with its parent: TCP and the pacer settle in the first.
	slowWarmup = 2
	// rootWarmup: a root's, after this many. The seed always has data
	// for it, so its first window is its link's, and a slow root holds
	// back its whole tree: every window it keeps its place costs the
	// session a window (16 @ 100 Mbit/s, a root at 10: found at 4 s,
	// the others done at 9.5 s against 6 s without it). A root's windows
	// are shorter too, a rootWindow-th of SlowAfter: until a slow root is
	// found, every healthy node gets half a link (2.5 s with whole
	// windows, 1.0-1.5 s with halves; the healthy nodes then done in
	// 6.7-7.2 s against 8.5-8.9 s).
	rootWarmup = 1
	rootWindow = 2
	// retryFirst is how long a parent that failed a child is passed over
	// for it, and how long a child failing twice in a row waits for a new
	// parent; each failure in a row doubles both, up to retryMax.
	retryFirst = time.Second
	retryMax   = 30 * time.Second
	// retryForget: a child that no parent has failed for this long starts afresh.
	retryForget = 2 * retryMax
)

// tree is the seed's plan of who feeds whom: per stripe, each node's parent
// and children, and per node what the rules weigh. It knows nothing of the
// network: its methods apply the rules and return the parent changes, and
// the session sends them.
//
// The rules: a parent has at most two children per stripe, and the seed its
// design share (two roots with one tree, one per tree with two). With two
// trees a node feeds in at most one of them, so every uplink carries about
// one copy. A new parent is live, not slow, not failed, not in the child's
// own subtree, and holds about what the child holds; among those the seed
// while it has a free root, then one that keeps the tree within
// depthBound, then one whose uplink is idle, then the shallowest, then the
// one holding most; failing all, a node that feeds in the other tree;
// the seed beyond its share is the last resort.
type tree struct {
	stripes    int
	stripeSize [maxStripes]int64 // bytes of each stripe; zero: an even share of size
	healthy    float64           // the best healthy rate seen in a stripe, bytes per second
	roots      int               // the seed's children per stripe by design
	size       int64
	chunk      int64
	slowAfter  time.Duration
	nodes      []tnode // node id i at nodes[i-1]
	seed       [maxStripes][]int
	live       int // nodes in the trees
}

// tnode is one node as the tree sees it.
type tnode struct {
	in       bool // accepted and reachable: placed in every stripe, or waiting to be
	gone     bool // lost for good (it lied): never placed again
	failed   bool // its session failed: it takes no children
	slow     bool // its own link is too slow to feed anyone
	suspect  bool // children keep complaining of it: it feeds no one
	retired  bool // applied, its children too, and let go: it feeds no one
	quiet    bool // silent to the seed for a while: it feeds no one until heard again
	held     int64
	inStripe [maxStripes]int64 // held per stripe, as far as the node's claims are believed
	base     int64             // what it held when it joined: its word, as nothing else can say
	ceil     [maxStripes]int64 // the most any of its parents was believed to hold, per stripe
	capped   bool              // its last claim was more than its parents were believed to hold
	byStripe bool              // inStripe is known; else each stripe holds a share of held
	parent   [maxStripes]int
	children [maxStripes][]int

	started time.Time // when it last got a parent: its rate before says how the old one fed it
	// reportClock is the node's own clock at the last report the seed
	// heard of what it holds. A sample of its rate runs from one report to
	// the first at least SlowAfter later on that clock, so a report late
	// on the wire slows no sample.
	reportClock time.Duration
	reportAt    time.Time     // when the seed got that report
	rateHeld    int64         // held when the current sample began
	rateSeen    time.Time     // when the seed got the report that began it
	rateClock   time.Duration // the node's clock then
	rateAt      time.Time     // when the last sample ended, or started
	rate        float64       // bytes per second over the last sample
	// suspectAt is the end of the first sample in which its link looked
	// slow in some stripes only; zero: not suspected.
	suspectAt time.Time

	stripeRateHeld [maxStripes]int64   // stripeHeld at rateAt
	stripeRate     [maxStripes]float64 // bytes per second in each stripe over the last sample
	stripeSeen     [maxStripes]float64 // the same on the seed's clock, if that ran longer: what is healthy

	retry [maxStripes]retryState
}

// retryState is one node's back-off in one stripe.
type retryState struct {
	strikes int       // parents that failed it in a row
	last    time.Time // the last such failure
	at      time.Time // when it gets a parent again; zero: not waiting
	avoid   []avoided // parents that failed it lately
}

type avoided struct {
	parent int
	until  time.Time
}

// newTree returns an empty tree for a package of size bytes in chunks of
// chunkSize, streamed down stripes trees.
func newTree(stripes int, size int64, chunkSize int, slowAfter time.Duration) *tree {
	t := &tree{stripes: min(max(stripes, 1), maxStripes), roots: 2, size: size, chunk: int64(chunkSize), slowAfter: slowAfter}
	if t.stripes > 1 {
		t.roots = 1
	}
	return t
}

// add registers a node, outside the trees, and returns its id.
func (t *tree) add() int {
	var n tnode
	for st := range n.parent {
		n.parent[st] = noParent
	}
	t.nodes = append(t.nodes, n)
	return len(t.nodes)
}

func (t *tree) node(id int) *tnode { return &t.nodes[id-1] }

// parentOf is id's parent in stripe st: a node id, seedID or noParent.
func (t *tree) parentOf(id, st int) int { return t.node(id).parent[st] }

// feedsIn is how many children id feeds in stripe st.
func (t *tree) feedsIn(id, st int) int { return len(t.node(id).children[st]) }

// in reports whether id is in the trees (placed, or waiting for a place).
func (t *tree) in(id int) bool { return t.node(id).in }

// setHeld records how many bytes of the package id holds.
func (t *tree) setHeld(id int, held int64) { t.node(id).held = min(max(held, 0), t.size) }

// setStripeHeld records how many bytes of each stripe id holds.
// setStripeHeld records what id says it holds of each stripe, believed
// only as far as its parents can have given it: what it held when it
// joined, plus the most any parent it had in the stripe was believed to
// hold (the seed holds it all). So a node cannot claim what no one it
// fetched from had, and a liar attracts children only as far as the
// honest nodes above it reach.
func (t *tree) setStripeHeld(id int, held []int64) {
	if len(held) != t.stripes {
		return
	}
	n := t.node(id)
	var sum int64
	n.capped = false
	for st, h := range held {
		size := t.stripeBytes(st)
		switch p := n.parent[st]; p {
		case noParent:
		case seedID:
			n.ceil[st] = size
		default:
			n.ceil[st] = max(n.ceil[st], t.stripeHeld(t.node(p), st))
		}
		limit := min(size, n.base/int64(t.stripes)+t.chunk+n.ceil[st])
		n.inStripe[st] = min(max(h, 0), limit)
		n.capped = n.capped || h > limit
		sum += n.inStripe[st]
	}
	n.byStripe = true
	n.held = min(n.held, sum)
}

// heldOf is what id is believed to hold.
func (t *tree) heldOf(id int) int64 { return t.node(id).held }

// reported records that what id holds was as of clock on its own clock,
// in a report the seed got at at.
func (t *tree) reported(id int, clock time.Duration, at time.Time) {
	n := t.node(id)
	n.reportClock, n.reportAt = clock, at
}

// clockSlack is how much later than a node sent it the seed may handle a
// report: 80-200 ms with 128 nodes on a busy 2-core machine.
const clockSlack = 500 * time.Millisecond

// setBase records what id holds as it joins the session. A node that joins
// again starts its session clock again.
func (t *tree) setBase(id int, held int64) {
	n := t.node(id)
	n.base = min(max(held, 0), t.size)
	n.held, n.reportClock, n.reportAt = n.base, 0, time.Time{}
}

// stripeBytes is the size of stripe st.
func (t *tree) stripeBytes(st int) int64 {
	if s := t.stripeSize[st]; s > 0 {
		return s
	}
	return t.size / int64(t.stripes)
}

// stripeHeld is what n holds of stripe st, or its share of what it holds.
func (t *tree) stripeHeld(n *tnode, st int) int64 {
	if n.byStripe {
		return n.inStripe[st]
	}
	return n.held / int64(t.stripes)
}

// heldBy is what n may hold by now: what it last reported, and what it
// gets at its rate (before its first sample, its average over its session
// so far, over a sample's window at least: its clock is its word) since
// the seed heard it.
func (t *tree) heldBy(n *tnode, now time.Time) int64 {
	rate := n.rate
	if rate <= 0 && n.reportClock > 0 {
		rate = float64(n.held-n.base) / max(n.reportClock, t.window(n)).Seconds()
	}
	if n.reportAt.IsZero() || !now.After(n.reportAt) || rate <= 0 {
		return n.held
	}
	return min(t.size, n.held+int64(rate*now.Sub(n.reportAt).Seconds()))
}

// resetRate starts n's rate afresh, with a new parent.
func (t *tree) resetRate(n *tnode, now time.Time) {
	n.started, n.rateAt, n.rateHeld, n.rateClock, n.rateSeen, n.rate, n.suspectAt = now, now, n.held, n.reportClock, n.reportAt, 0, time.Time{}
	for st := range t.stripes {
		n.stripeRateHeld[st], n.stripeRate[st], n.stripeSeen[st] = t.stripeHeld(n, st), 0, 0
	}
}

// depthBound is the depth plan keeps every node within, and repairs where
// they can: ⌈log2(live+1)⌉ + 1.
func (t *tree) depthBound() int { return bits.Len(uint(t.live)) + 1 }

// plan places the given nodes, outside the trees, in binary trees below the
// seed in the order given. With one tree the seed feeds two roots and node
// i's children are 2i+2 and 2i+3: the seed and every inner node upload the
// package twice. With two trees each carries every other chunk from one
// root the seed feeds (node i's children are 2i+1 and 2i+2), and the second
// tree takes the nodes in reverse order, so a node inner in one tree is a
// leaf in the other: the seed and every node upload about one copy.
func (t *tree) plan(ids []int, now time.Time) []move {
	var order []int
	for _, id := range ids {
		if n := t.node(id); !n.in && !n.gone {
			t.enter(id, now)
			order = append(order, id)
		}
	}
	orders := make([][]int, t.stripes)
	for st := range orders {
		orders[st] = order
		if st == 1 {
			orders[st] = slices.Clone(order)
			slices.Reverse(orders[st])
		}
	}
	// Level by level across the trees: the seed tells the roots of both
	// first, so no tree starts later for the other's many parent frames
	// (128 nodes: the second root was told 0.11 s after the first).
	var moves []move
	for i := range order {
		for st, o := range orders {
			id, p := o[i], seedID
			if i >= t.roots {
				p = o[(i-t.roots)/2]
			}
			t.link(id, st, p)
			moves = append(moves, move{id, st, p})
		}
	}
	return moves
}

// join places a node that arrives late, or comes back after it was lost,
// in every stripe. A node lost for good stays out.
func (t *tree) join(id int, now time.Time) []move {
	n := t.node(id)
	if n.in || n.gone {
		return nil
	}
	t.enter(id, now)
	var moves []move
	for st := range t.stripes {
		moves = t.place(id, st, now, moves)
	}
	return moves
}

// enter counts id in, with a fresh record.
func (t *tree) enter(id int, now time.Time) {
	n := t.node(id)
	n.in, n.failed = true, false
	n.retry = [maxStripes]retryState{}
	t.resetRate(n, now)
	t.live++
}

// lose takes a node whose connection failed out of the trees and gives its
// children new parents. One lost for good (it lied) never comes back.
func (t *tree) lose(id int, forGood bool, now time.Time) []move {
	n := t.node(id)
	n.gone = n.gone || forGood
	if !n.in {
		return nil
	}
	return t.takeOut(id, now)
}

// fail marks a node whose session failed: it takes no more children, and if
// it lacks part of the package, which it will now never fetch, it leaves the
// trees and its children move.
func (t *tree) fail(id int, now time.Time) []move {
	n := t.node(id)
	n.failed = true
	if !n.in || n.held >= t.size {
		return nil
	}
	return t.takeOut(id, now)
}

// takeOut removes id from every tree and places its children. With two
// children and a node idle in every tree at hand, that node takes id's
// place, so no subtree moves deeper; otherwise each child is placed by the
// rules.
func (t *tree) takeOut(id int, now time.Time) []move {
	before := t.parents()
	n := t.node(id)
	n.in = false
	t.live--
	for st := range t.stripes {
		n.retry[st].at = time.Time{}
		up := n.parent[st]
		orphans := slices.Clone(n.children[st])
		t.unlink(id, st)
		for _, c := range orphans {
			t.unlink(c, st)
		}
		if len(orphans) == 2 {
			if sub, ok := t.substitute(up, orphans, st, now); ok {
				t.relink(sub, st, up, now, nil)
				for _, c := range orphans {
					if c != sub {
						t.relink(c, st, sub, now, nil)
					}
				}
				continue
			}
		}
		for _, c := range orphans {
			t.place(c, st, now, nil)
		}
	}
	return t.changes(before)
}

// substitute finds a node idle in every tree that can take the place below
// up of a node whose children are orphans: a leaf anywhere, even below the
// orphans (it has no subtree to take along), or an orphan itself.
func (t *tree) substitute(up int, orphans []int, st int, now time.Time) (int, bool) {
	if up == noParent {
		return 0, false
	}
	slack := t.placeSlack()
	best := noParent
	for i := range t.nodes {
		id := i + 1
		s := &t.nodes[i]
		if id == up || !t.canFeed(s) || t.feeds(s) || s.retry[st].avoids(up, now) {
			continue
		}
		if up != seedID && t.node(up).held+slack < s.held {
			continue
		}
		if s.parent[st] == noParent && !slices.Contains(orphans, id) {
			continue // waiting for a parent of its own
		}
		fits := true
		for _, c := range orphans {
			if c != id && (s.held+slack < t.node(c).held || t.node(c).retry[st].avoids(id, now)) {
				fits = false
				break
			}
		}
		if fits && (best == noParent || s.held > t.node(best).held) {
			best = id
		}
	}
	return best, best != noParent
}

// complain handles id's report that parent failed it in stripe st. The
// first failure moves it at once to another parent; each further failure in
// a row makes it wait twice as long first, and the parents that failed it
// are passed over for a while, so a child and a parent that cannot get along
// never loop. A complaint about a parent id no longer has is stale, and
// one while it waits for a parent is about no one.
func (t *tree) complain(id, st, parent int, now time.Time) []move {
	if id < 1 || id > len(t.nodes) || st < 0 || st >= t.stripes {
		return nil
	}
	n := t.node(id)
	if !n.in || parent == noParent || n.parent[st] != parent {
		return nil
	}
	r := &n.retry[st]
	if now.Sub(r.last) > retryForget {
		r.strikes = 0
	}
	r.strikes++
	r.last = now
	r.avoid = slices.DeleteFunc(r.avoid, func(a avoided) bool { return !now.Before(a.until) || a.parent == parent })
	r.avoid = append(r.avoid, avoided{parent, now.Add(backoff(r.strikes))})
	if r.strikes == 1 {
		return t.place(id, st, now, nil)
	}
	t.unlink(id, st)
	r.at = now.Add(backoff(r.strikes - 1))
	return []move{{id, st, noParent}}
}

// forgive takes back id's last strike in stripe st, for a parent found at
// fault: if that strike made it wait, it is placed now. The failed parent
// stays avoided.
func (t *tree) forgive(id, st int, now time.Time) []move {
	if id < 1 || id > len(t.nodes) || st < 0 || st >= t.stripes {
		return nil
	}
	n := t.node(id)
	r := &n.retry[st]
	r.strikes = max(0, r.strikes-1)
	if !n.in || r.at.IsZero() {
		return nil
	}
	r.at = time.Time{}
	return t.place(id, st, now, nil)
}

// backoff is retryFirst doubled for each strike after the first, at most retryMax.
func backoff(strikes int) time.Duration {
	d := retryFirst
	for i := 1; i < strikes && d < retryMax; i++ {
		d *= 2
	}
	return min(d, retryMax)
}

// avoids reports whether p failed this node lately.
func (r *retryState) avoids(p int, now time.Time) bool {
	for _, a := range r.avoid {
		if a.parent == p && now.Before(a.until) {
			return true
		}
	}
	return false
}

// retry places the nodes whose wait is over. One placed in a leaf's
// place may move a node placed before it, so it returns the net change.
// Most heartbeats place no one, and copy no parents.
func (t *tree) retry(now time.Time) []move {
	var before [][maxStripes]int
	for i := range t.nodes {
		n := &t.nodes[i]
		if !n.in {
			continue
		}
		for st := range t.stripes {
			if r := &n.retry[st]; !r.at.IsZero() && !now.Before(r.at) {
				if before == nil {
					before = t.parents()
				}
				r.at = time.Time{}
				t.place(i+1, st, now, nil)
			}
		}
	}
	if before == nil {
		return nil
	}
	return t.changes(before)
}

// isRoot reports whether the seed feeds n in some stripe.
func (t *tree) isRoot(n *tnode) bool { return slices.Contains(n.parent[:t.stripes], seedID) }

// netChange runs f, which rearranges the trees, and returns its moves as
// the net change (see changes).
func (t *tree) netChange(f func()) []move {
	before := t.parents()
	f()
	return t.changes(before)
}

// parents is every node's parent in every stripe, for changes.
func (t *tree) parents() [][maxStripes]int {
	out := make([][maxStripes]int, len(t.nodes))
	for i := range t.nodes {
		out[i] = t.nodes[i].parent
	}
	return out
}

// changes is the moves from before (of as many nodes) to now, one per node and stripe that
// changed: where one slow relay's bypass moves a node that the next one
// moves again, the node hears only where it ends up.
func (t *tree) changes(before [][maxStripes]int) []move {
	var moves []move
	for i := range t.nodes {
		for st := range t.stripes {
			if p := t.nodes[i].parent[st]; p != before[i][st] {
				moves = append(moves, move{i + 1, st, p})
			}
		}
	}
	return moves
}

// hush marks id quiet: the seed has not heard from it for a while, not yet
// long enough to count it lost. Its children move to other parents at
// once, as a slow relay's do (see bypass): a relay whose link went down or
// that hangs holds its subtree until it counts as lost, and one that was
// only slow to report loses its children and nothing else. It takes no
// children until heard.
func (t *tree) hush(id int, now time.Time) []move {
	n := t.node(id)
	if n.quiet || !n.in {
		return nil
	}
	n.quiet = true
	if !t.feeds(n) {
		return nil
	}
	return t.netChange(func() { t.bypassAll(id, now) })
}

// heard clears id's quiet mark: the seed heard from it.
func (t *tree) heard(id int) { t.node(id).quiet = false }

// distrust makes id a leaf for good: it keeps its place as a receiver, and
// its children move to other parents (see demote).
func (t *tree) distrust(id int, now time.Time) []move {
	if id < 1 || id > len(t.nodes) || t.node(id).suspect {
		return nil
	}
	t.node(id).suspect = true
	return t.netChange(func() {
		for st := range t.stripes {
			t.demote(id, st, now)
		}
	})
}

// isSlow reports whether id lost its children for a slow link.
func (t *tree) isSlow(id int) bool { return t.node(id).slow }

// lagsParent reports whether id holds less of stripe st than its own
// parent there (the seed holds it all) by more than the slack: a relay
// that is not fetching what its parent has. One that does not lag is
// starved there: slow because its parent is, not because of its own link.
// A stripe it waits for a parent in starves it too.
func (t *tree) lagsParent(id, st int) bool {
	n := t.node(id)
	switch p := n.parent[st]; p {
	case noParent:
		return false
	case seedID:
		return t.stripeHeld(n, st) < t.stripeBytes(st)-t.starveSlack()
	default:
		return t.holdsMore(p, id, st)
	}
}

// holdsMore reports whether p holds more of stripe st than id, by more
// than starveSlack: a parent that had data to send.
func (t *tree) holdsMore(p, id, st int) bool {
	return t.stripeHeld(t.node(p), st) > t.stripeHeld(t.node(id), st)+t.starveSlack()
}

// starveSlack is how much less than its parent a node may hold of a
// stripe and still count as having all the parent had.
func (t *tree) starveSlack() int64 {
	stripe := t.size / int64(t.stripes)
	return min(max(starveSlackChunks*t.chunk, t.size/starveSlackShare)/int64(t.stripes), stripe/starveSlackStripeShare)
}

func (t *tree) placeSlack() int64 {
	return max(placeSlackChunks*t.chunk, t.size/placeSlackShare)
}

// canFeed reports whether n may take children at all.
func (t *tree) canFeed(n *tnode) bool {
	return n.in && !n.failed && !n.slow && !n.suspect && !n.retired && !n.quiet
}

// childrenIn returns id's children in stripe st.
func (t *tree) childrenIn(id, st int) []int { return t.node(id).children[st] }

// childrenOf returns id's children in every stripe.
func (t *tree) childrenOf(id int) []int {
	var all []int
	for st := range t.stripes {
		all = append(all, t.node(id).children[st]...)
	}
	return all
}

// retire marks id as done with the session: it takes no children again.
// Its children, done too, keep it as their parent on record.
func (t *tree) retire(id int) { t.node(id).retired = true }

// feeds reports whether n has children in any stripe.
func (t *tree) feeds(n *tnode) bool {
	for st := range t.stripes {
		if len(n.children[st]) > 0 {
			return true
		}
	}
	return false
}

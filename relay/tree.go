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

// checkRates samples each node's progress and moves the children of a
// relay whose own link is far slower than a healthy one to faster
// parents, so one slow link does not set the pace of a whole subtree. A
// relay's whole rate is held against what one healthy tree delivers (the
// best seen), so a slow root that holds back all of its tree, and with it
// every node's whole rate, is still found. A relay slow only because its
// parents are (it holds about all they hold, stripe by stripe) is not to
// blame, and keeps its children. One that lags its parent in some stripes
// only, starved in the others, is convicted by a second slow sample (see
// slowLink and tnode.suspectAt): TCP splits a parent's uplink unevenly for
// seconds at a time, and the child on the short side looks like a slow
// link for one sample. A slow relay swaps places with
// an idle leaf where one can take its two children (see bypass). It
// returns the moves and the relays it found slow.
func (t *tree) checkRates(now time.Time) (moves []move, slow []int) {
	var rates []float64
	for i := range t.nodes {
		n := &t.nodes[i]
		if !n.in || n.failed || n.held >= t.size {
			continue
		}
		if dt := (n.reportClock - n.rateClock).Seconds(); dt >= t.window(n).Seconds() {
			// What is healthy is measured on the seed's clock too, at
			// the longer of the two: a node whose clock stood still while
			// its claims grew would have it believe a rate no link had,
			// and every honest relay slow against it. The node's own
			// clock judges the node: its reports may come late, not it.
			began := n.rateSeen
			if began.IsZero() {
				began = n.rateAt // no report yet when the sample began
			}
			seen := max(dt, (n.reportAt.Sub(began) - clockSlack).Seconds())
			n.rate = float64(n.held-n.rateHeld) / dt
			n.rateHeld, n.rateClock, n.rateAt, n.rateSeen = n.held, n.reportClock, now, n.reportAt
			for st := range t.stripes {
				h := t.stripeHeld(n, st)
				n.stripeRate[st] = float64(h-n.stripeRateHeld[st]) / dt
				n.stripeSeen[st] = float64(h-n.stripeRateHeld[st]) / seen
				n.stripeRateHeld[st] = h
			}
		}
		if t.judged(n, now) {
			for st := range t.stripes {
				if t.stripeHeld(n, st) < t.stripeBytes(st) {
					rates = append(rates, n.stripeSeen[st])
				}
			}
		}
	}
	if len(rates) >= minRates {
		slices.Sort(rates)
		// What a healthy tree delivers, the best seen: a relay whose
		// whole download is a fraction of it is slow whatever holds its
		// trees back, and once one slow relay holds back a whole tree and
		// the other tree is done, every rate is low.
		t.healthy = max(t.healthy, rates[len(rates)*healthyPercentile/100])
	}
	if t.healthy == 0 {
		return nil, nil
	}
	for i := range t.nodes {
		p := &t.nodes[i]
		// A node that claims more than its parents were believed to hold
		// is not judged: its believed rate is theirs, from reports up to a
		// progress period older than its own, and it lags them by that
		// much at every level (16 @ 100 Mbit/s: a relay that downloaded
		// 11.5 MB/s was believed at 1.8 and moved as slow).
		if p.slow || p.capped || !p.in || p.held >= t.size || !t.judged(p, now) || !t.feeds(p) {
			continue
		}
		looks, sure := t.slowLink(i + 1)
		switch {
		case !looks:
			p.suspectAt = time.Time{}
		case sure || !p.suspectAt.IsZero() && p.suspectAt.Before(p.rateAt):
			p.slow = true // before any child moves, so none moves to another slow relay
			slow = append(slow, i+1)
		case p.suspectAt.IsZero():
			p.suspectAt = p.rateAt
		}
	}
	if len(slow) == 0 {
		return nil, nil
	}
	return t.netChange(func() {
		for _, id := range slow {
			t.bypassAll(id, now)
		}
	}), slow
}

// judged reports whether n's rate can be judged: it has had its parents
// long enough (slowWarmup windows, or rootWarmup for a root), and a
// sample of its rate with them has ended.
func (t *tree) judged(n *tnode, now time.Time) bool {
	windows := time.Duration(slowWarmup)
	if t.isRoot(n) {
		windows = rootWarmup
	}
	return now.Sub(n.started) >= windows*t.window(n) && n.rateAt.After(n.started)
}

// isRoot reports whether the seed feeds n in some stripe.
func (t *tree) isRoot(n *tnode) bool { return slices.Contains(n.parent[:t.stripes], seedID) }

// window is how long a sample of n's rate runs: SlowAfter, or a
// rootWindow-th of it for a root.
func (t *tree) window(n *tnode) time.Duration {
	if t.isRoot(n) {
		return t.slowAfter / rootWindow
	}
	return t.slowAfter
}

// slowLink reports whether id's own link looks too slow to feed anyone
// (looks): its whole rate in the last sample is under a quarter of what
// one healthy tree delivers, and it lags its parent in some stripe; and
// whether that is sure at once (sure): it lags in every stripe it
// lacks, when none of its parents gets data through to it, or it lags the
// seed, which always has data for it (a root whose other stripe comes
// from a parent itself held back looks starved there).
func (t *tree) slowLink(id int) (looks, sure bool) {
	n := t.node(id)
	if n.rate*slowFactor >= t.healthy {
		return false, false
	}
	lagging, lacking, seed := 0, 0, false
	for st := range t.stripes {
		if t.stripeHeld(n, st) >= t.stripeBytes(st) {
			continue
		}
		lacking++
		if t.lagsParent(id, st) {
			lagging++
			seed = seed || n.parent[st] == seedID
		}
	}
	return lagging > 0, lagging > 0 && (lagging == lacking || seed)
}

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

// bypass moves slow relay id's children in stripe st to other parents.
// With two of them and a node idle in every tree at hand, the two swap
// places: the idle node takes id's place and children, and id the leaf's
// place it left, so no subtree moves deeper and nobody feeds in two trees.
// Otherwise each child is placed by the rules.
func (t *tree) bypass(id, st int, now time.Time) {
	kids := slices.Clone(t.node(id).children[st])
	up := t.node(id).parent[st]
	if len(kids) == 2 && up != noParent {
		for _, c := range kids {
			t.unlink(c, st)
		}
		if sub, ok := t.substitute(up, kids, st, now); ok && !slices.Contains(kids, sub) && t.node(sub).parent[st] != noParent {
			q := t.node(sub).parent[st]
			t.relink(id, st, q, now, nil)
			t.relink(sub, st, up, now, nil)
			for _, c := range kids {
				t.relink(c, st, sub, now, nil)
			}
			return
		}
		for _, c := range kids {
			t.link(c, st, id) // as they were, for the rules to place
		}
	}
	t.demote(id, st, now)
}

// bypassAll moves id's children in every stripe (see bypass).
func (t *tree) bypassAll(id int, now time.Time) {
	for st := range t.stripes {
		t.bypass(id, st, now)
	}
}

// demote makes id a leaf of stripe st: its children get other parents by
// the rules, and a root first gives its place at the seed up, so one of
// them can take it, and is then placed itself. Below a root that feeds no
// one or feeds slowly, the seed's share of a stripe would go to waste.
func (t *tree) demote(id, st int, now time.Time) {
	n := t.node(id)
	root := n.parent[st] == seedID
	if root {
		t.unlink(id, st)
	}
	for _, c := range slices.Clone(n.children[st]) {
		t.place(c, st, now, nil)
	}
	if root {
		t.place(id, st, now, nil)
	}
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

// place gives id a parent in stripe st by the rules, or, when every parent
// left failed it lately, leaves it waiting until the first of them may be
// tried again. It appends the change, if any, to moves.
func (t *tree) place(id, st int, now time.Time, moves []move) []move {
	n := t.node(id)
	old := n.parent[st]
	t.unlink(id, st)
	p, over, ok := t.choose(id, st, now)
	if ok && (over > 0 || p == seedID && len(t.seed[st]) >= t.roots || p != seedID && t.feedsElsewhere(t.node(p), st)) {
		// Better than a deep place, a seed beyond its share or a node in
		// two trees: the place of a shallow leaf.
		if x, d, ok := t.insert(id, st, now); ok && (over == 0 || d+1 <= t.depthBound()) {
			// id takes x's place and feeds it.
			p = t.node(x).parent[st]
			t.link(id, st, p)
			t.resetRate(n, now)
			if p != old {
				moves = append(moves, move{id, st, p})
			}
			return t.relink(x, st, id, now, moves)
		}
	}
	if !ok {
		r := &n.retry[st]
		r.at = time.Time{}
		for _, a := range r.avoid {
			if r.at.IsZero() || a.until.Before(r.at) {
				r.at = a.until
			}
		}
	}
	if p != noParent {
		t.link(id, st, p)
		t.resetRate(n, now)
	}
	if p == old {
		return moves
	}
	return append(moves, move{id, st, p})
}

// relink moves id under p in stripe st, which the caller has checked.
func (t *tree) relink(id, st, p int, now time.Time, moves []move) []move {
	n := t.node(id)
	if n.parent[st] == p {
		return moves
	}
	t.unlink(id, st)
	t.link(id, st, p)
	t.resetRate(n, now)
	return append(moves, move{id, st, p})
}

// rank orders candidate parents; lower is better.
type rank struct {
	over  int // levels beyond depthBound the child's subtree would reach
	idle  int // 0: the uplink feeds nobody yet
	depth int
	held  int64
}

func (a rank) better(b rank) bool {
	switch {
	case a.over != b.over:
		return a.over < b.over
	case a.idle != b.idle:
		return a.idle < b.idle
	case a.depth != b.depth:
		return a.depth < b.depth
	}
	return a.held > b.held
}

// choose picks id's parent in stripe st (see tree), and says by how many
// levels id's subtree there would pass depthBound; false if every possible
// parent failed id lately.
func (t *tree) choose(id, st int, now time.Time) (parent, over int, ok bool) {
	n := t.node(id)
	r := &n.retry[st]
	seedOK := !r.avoids(seedID, now)
	if seedOK && len(t.seed[st]) < t.roots {
		return seedID, 0, true // its uplink has room by design
	}
	h := t.height(id, st)
	bound := t.depthBound()
	slack := t.placeSlack()
	// Nodes inner in another tree only if no other will do: their uplink
	// would carry two copies, which still beats the seed's carrying more,
	// unless the tree would grow too deep.
	best, bestRank := noParent, rank{}
	twice, twiceRank := noParent, rank{}
	scan := func(lagging bool) {
		for i := range t.nodes {
			pid := i + 1
			p := &t.nodes[i]
			if pid == id || !t.canFeed(p) || len(p.children[st]) >= 2 || p.held+slack < n.held && !lagging || r.avoids(pid, now) {
				continue
			}
			d, ok := t.depth(pid, st, id)
			if !ok {
				continue
			}
			k := rank{over: max(0, d+1+h-bound), idle: t.load(p), depth: d, held: p.held}
			switch {
			case !t.feedsElsewhere(p, st):
				if best == noParent || k.better(bestRank) {
					best, bestRank = pid, k
				}
			case twice == noParent || k.better(twiceRank):
				twice, twiceRank = pid, k
			}
		}
	}
	scan(false)
	// A parent that holds less than id holds it back by its lag, and only
	// its own subtree; the seed beyond its share holds back every node:
	// with three flows on its uplink, the other tree's root gets a third
	// of it to the end (a root killed and run again, 16 @ 100 Mbit/s:
	// every healthy node done at 8.24 s against 6.43). So one that lags is
	// taken before that.
	if best == noParent && (twice == noParent || twiceRank.over > 0) && seedOK && len(t.seed[st]) >= t.roots {
		scan(true)
	}
	if best != noParent {
		return best, bestRank.over, true
	}
	if twice != noParent && (twiceRank.over == 0 || !seedOK) {
		return twice, twiceRank.over, true
	}
	if seedOK {
		return seedID, 0, true
	}
	return noParent, 0, false
}

// load is how many children n feeds in every tree.
func (t *tree) load(n *tnode) int {
	k := 0
	for st := range t.stripes {
		k += len(n.children[st])
	}
	return k
}

// insert finds a leaf of stripe st whose place id, idle in every tree,
// can take, feeding the leaf below it: the way in when no node has room
// within depthBound, instead of a deep place, the seed beyond its share
// or a node in two trees. The shallowest such leaf goes one level down,
// and must stay within the bound unless the seed is the alternative. A
// leaf that holds more of the stripe than id (by over starveSlack) keeps
// its place: it would wait for id, which gets the stripe no faster than
// the leaf did (16 @ 100 Mbit/s, a relay killed and run again: the leaf
// moved under it ended 1.8 s after the rest). Nor does one that holds
// more of the whole package by now (see heldBy): however even the two are
// in this stripe, id has more to download in all, which its downlink
// shares among the stripes, so it completes this one later than the leaf
// would have (16 @ 100 Mbit/s, a relay killed and run again, alternating
// runs: a leaf even with it in the stripe, ahead in all, was moved under
// it in 4 of 4 runs and ended with it, every node done 1.26-1.27 x the
// fault-free time; never so since, 1.00-1.01 in 3 of 4, and 1.28 where
// the leaf moved under it was far behind it in all already).
func (t *tree) insert(id, st int, now time.Time) (leaf, depth int, ok bool) {
	n := t.node(id)
	if !t.canFeed(n) || t.feeds(n) {
		return noParent, 0, false
	}
	slack := t.placeSlack()
	best, bestDepth := noParent, 0
	held := t.heldBy(n, now)
	for i := range t.nodes {
		xid, x := i+1, &t.nodes[i]
		if xid == id || !x.in || len(x.children[st]) > 0 || t.heldBy(x, now) > held || t.stripeHeld(x, st) > t.stripeHeld(n, st)+t.starveSlack() || x.retry[st].avoids(id, now) {
			continue
		}
		q := x.parent[st]
		if q == noParent || n.retry[st].avoids(q, now) {
			continue
		}
		if q != seedID && (!t.canFeed(t.node(q)) || t.node(q).held+slack < n.held) {
			continue
		}
		if d, ok := t.depth(xid, st, id); ok && (best == noParent || d < bestDepth) {
			best, bestDepth = xid, d
		}
	}
	return best, bestDepth, best != noParent
}

// feedsElsewhere reports whether n has children in a stripe other than st.
func (t *tree) feedsElsewhere(n *tnode, st int) bool {
	for s := range t.stripes {
		if s != st && len(n.children[s]) > 0 {
			return true
		}
	}
	return false
}

// depth is id's depth in stripe st's tree (the seed's children are at 1);
// false if it is not connected to the seed, or is below or is not.
func (t *tree) depth(id, st, not int) (int, bool) {
	d := 0
	for q := id; q != seedID; d++ {
		if q == not || q == noParent || d > len(t.nodes) {
			return 0, false
		}
		q = t.node(q).parent[st]
	}
	return d, true
}

// height is how many levels id's subtree in stripe st has below id.
func (t *tree) height(id, st int) int {
	h := 0
	level := []int{id}
	for {
		var next []int
		for _, q := range level {
			next = append(next, t.node(q).children[st]...)
		}
		if len(next) == 0 {
			return h
		}
		h++
		level = next
	}
}

// kids is p's list of children in stripe st.
func (t *tree) kids(p, st int) *[]int {
	if p == seedID {
		return &t.seed[st]
	}
	return &t.node(p).children[st]
}

func (t *tree) link(id, st, p int) {
	t.node(id).parent[st] = p
	k := t.kids(p, st)
	*k = append(*k, id)
}

func (t *tree) unlink(id, st int) {
	n := t.node(id)
	if n.parent[st] == noParent {
		return
	}
	k := t.kids(n.parent[st], st)
	*k = slices.DeleteFunc(*k, func(c int) bool { return c == id })
	n.parent[st] = noParent
}

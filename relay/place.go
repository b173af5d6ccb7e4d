package relay

import (
	"slices"
	"time"
)

// Placement: where the tree puts a node in a stripe, by the rules of
// doc.go's Trees section, and the links it keeps for it.

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

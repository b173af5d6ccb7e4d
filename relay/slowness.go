package relay

import (
	"slices"
	"time"
)

// Slowness: how the tree finds a relay too slow for its children, and
// whose link, its own or its child's, is the short one.

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

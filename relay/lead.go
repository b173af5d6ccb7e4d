package relay

import (
	"context"
	"sync"
	"time"
)

// rootLead keeps a root's own stripe first on its link. With two trees a
// root takes its stripe from the seed and the other stripe from a parent,
// and when its link is short of both (another host's traffic takes a
// tenth of it, say) the two flows split what is left as TCP happens to:
// in the lab the stripe it roots got 7.7 Mbit/s of 18 and the other 9.5,
// and since every node takes the first through the root, 16 nodes at
// 20 Mbit/s took 10.1 s where the root alone needed 9.4. So a root reads
// the stripe it only receives no further than lead blocks ahead of the
// one it feeds its tree from. Only a root: no node of its tree is further
// along that tree's stripe than it is, so its hold sets no node's pace (a
// relay's sibling in the other tree, kept abreast of it by their parent's
// pacer, would be held to it).
type rootLead struct {
	lead    int                           // blocks a stripe may run ahead of a rooted one
	moving  time.Duration                 // a rooted stripe that has not moved for this long holds nothing back (its parent is lost, say)
	most    time.Duration                 // the longest one hold lasts: bytes move on the held connection at least this often
	missing func(stripes, stripe int) int // blocks of stripe not held yet
	changes func() <-chan struct{}        // closed when a block is held
	now     func() time.Time

	mu      sync.Mutex
	stripes int
	rooted  [maxStripes]bool // stripes this node feeds children of, from the seed
	relays  [maxStripes]bool // stripes this node feeds children of, from any parent
	last    [maxStripes]int  // what was missing of each rooted stripe when last looked at
	moved   [maxStripes]time.Time
}

// trickle is what a connection held for most may read: enough for TCP
// to open its window, not enough to let the stripe run ahead.
const trickle = 16 << 10

const rootLeadBytes = 256 << 10 // a root takes the other stripe a few hops after its own: never that far ahead on a link with room for both

func newRootLead(sp *spool, cfg Config) *rootLead {
	return &rootLead{
		lead:    max(1, rootLeadBytes/sp.m.BlockSize),
		moving:  2 * cfg.Heartbeat,
		most:    cfg.DeadAfter / 4,
		missing: sp.stripeMissing,
		changes: sp.changes,
		now:     time.Now,
	}
}

// named takes a parent frame: the node roots stripe p.stripe when its
// parent there is the seed and it feeds children in it.
func (l *rootLead) named(p parentMsg) {
	if int(p.stripe) >= maxStripes {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stripes = int(p.stripes)
	root := p.id == (NodeID{}) && p.feeds > 0
	if root && !l.rooted[p.stripe] {
		l.last[p.stripe], l.moved[p.stripe] = l.missing(l.stripes, int(p.stripe)), l.now()
	}
	l.rooted[p.stripe], l.relays[p.stripe] = root, p.feeds > 0
}

// ahead reports whether stripe st, which this node does not relay, is
// lead blocks or more ahead of a stripe it roots that is still coming and
// moved lately.
func (l *rootLead) ahead(st int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stripes != maxStripes || st < 0 || st >= maxStripes || l.relays[st] {
		return false
	}
	now := l.now()
	for r := range l.stripes {
		if r == st || !l.rooted[r] {
			continue
		}
		mr := l.missing(l.stripes, r)
		if mr != l.last[r] {
			l.last[r], l.moved[r] = mr, now
		}
		if mr > 0 && now.Sub(l.moved[r]) < l.moving && mr-l.missing(l.stripes, st) >= l.lead {
			return true
		}
	}
	return false
}

// hold waits while stripe st is ahead (see ahead), or until ctx ends. It
// says held after most: then only a trickle may be read (see trickle),
// so the parent's bytes still move and it does not give this node up.
func (l *rootLead) hold(ctx context.Context, st int) (held bool) {
	if !l.ahead(st) {
		return false // every read but a held one: no wait set up
	}
	timer := time.NewTimer(l.most)
	defer timer.Stop()
	for {
		changed := l.changes()
		if !l.ahead(st) {
			return false
		}
		// A rooted stripe that stops moving lets go within moving.
		recheck := time.NewTimer(l.moving)
		select {
		case <-changed:
		case <-recheck.C:
		case <-timer.C:
			recheck.Stop()
			return true
		case <-ctx.Done():
			recheck.Stop()
			return false
		}
		recheck.Stop()
	}
}

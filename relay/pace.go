package relay

import (
	"context"
	"sync"
	"time"
)

// pacer keeps the children of one parent abreast. TCP splits a parent's
// uplink unevenly from moment to moment; a child that falls behind its
// sibling can never catch up while both want data, and its whole subtree
// inherits the lag, level after level. So a feeder may run at most lead
// blocks ahead of a sibling, as long as that sibling is within window
// blocks (positions count a stripe's blocks): one further behind (a slow link, a newcomer resuming) is left to
// catch up on its own and paces nobody, and so do one that has not
// moved for stall (a hung child must not hold up its sibling) and one that
// has trailed for longer than trail (a slow link: it would drag its
// sibling down to its own speed).
type pacer struct {
	lead, window       int
	idle, stall, trail time.Duration

	mu      sync.Mutex
	feeders map[*paced]struct{}
	changed chan struct{}
}

// paced is one feeder's place: the chunk it sends next, since when, and
// since when it has trailed the foremost feeder.
type paced struct {
	next   int
	since  time.Time
	behind time.Time // zero while abreast
}

func newPacer(lead, window int, idle, stall, trail time.Duration) *pacer {
	return &pacer{lead: lead, window: window, idle: idle, stall: stall, trail: trail, feeders: map[*paced]struct{}{}, changed: make(chan struct{})}
}

// join registers a feeder starting at chunk 0; leave must follow.
func (p *pacer) join() *paced {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := &paced{since: time.Now()}
	p.feeders[f] = struct{}{}
	return f
}

func (p *pacer) leave(f *paced) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.feeders, f)
	p.broadcast()
}

// advance records that feeder f will next send block i of its stripe.
func (p *pacer) advance(f *paced, i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f.next, f.since = i, time.Now()
	p.broadcast()
}

func (p *pacer) broadcast() {
	front, now := 0, time.Now()
	for q := range p.feeders {
		front = max(front, q.next)
	}
	for q := range p.feeders {
		switch {
		case q.next >= front: // caught up, not merely within the lead it is held to
			q.behind = time.Time{}
		case q.behind.IsZero():
			q.behind = now
		}
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// wait blocks until feeder f may send chunk i, ctx ends, or idle passes
// (errIdle).
func (p *pacer) wait(ctx context.Context, f *paced, i int) error {
	return waitUntil(ctx, p.idle, func() (bool, <-chan struct{}) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.clear(f, i, time.Now()), p.changed
	})
}

// clearNow reports whether feeder f may send block i without waiting.
func (p *pacer) clearNow(f *paced, i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clear(f, i, time.Now())
}

func (p *pacer) clear(f *paced, i int, now time.Time) bool {
	for q := range p.feeders {
		if q != f && q.next < i-p.lead && q.next >= i-p.window && now.Sub(q.since) < p.stall &&
			(q.behind.IsZero() || now.Sub(q.behind) < p.trail) {
			return false
		}
	}
	return true
}

const (
	paceLead   = 128 << 10 // how far a feeder may run ahead of another: a few blocks
	paceWindow = 8 << 20   // a child further behind catches up on its own
)

// newFeedPacer paces every feeder of one parent, whatever tree each child
// is in: a node feeds its children, the seed feeds the roots of both trees,
// and an uneven split of the uplink would starve one tree. Positions are
// blocks of a stripe, which every stripe has about as many of.
func newFeedPacer(cfg Config, blockSize int) *pacer {
	hb := cfg.Heartbeat
	return newPacer(max(1, paceLead/blockSize), paceWindow/blockSize, hb, 2*hb, 4*hb)
}

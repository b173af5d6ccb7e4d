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
// blocks (positions count a stripe's blocks): one further behind (a slow
// link, a newcomer resuming) is left to catch up on its own and paces
// nobody, and so does one that has not moved for stall (a hung child must
// not hold up its sibling). A feeder held back for more than trail, net of
// half the time it ran free, runs free itself: its sibling is on a slow
// link and would drag it down to its own speed. It is paced again once no
// sibling is within window behind it.
type pacer struct {
	lead, window       int
	idle, stall, trail time.Duration

	mu      sync.Mutex
	feeders map[*paced]struct{}
	changed chan struct{}
}

// paced is one feeder's place: the block it sends next and since when,
// and how long it has been held back, net of the time it ran since.
type paced struct {
	next   int
	since  time.Time
	held   time.Duration
	heldAt time.Time // when held was last brought up to date
	free   bool      // held back too long: it paces itself no more
}

// heldDecay is how fast time running free pays back time held: at half,
// a feeder held most of the time soon runs free, and one held now and then
// by TCP's uneven shares never does.
const heldDecay = 2

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
	for f := range p.feeders {
		if f.free && p.alone(f) {
			f.free, f.held = false, 0
		}
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// alone reports whether no sibling is within window behind f.
func (p *pacer) alone(f *paced) bool {
	for q := range p.feeders {
		if q != f && q.next < f.next && q.next >= f.next-p.window {
			return false
		}
	}
	return true
}

// charge adds d held back to f's account.
func (p *pacer) charge(f *paced, d time.Duration, now time.Time) {
	if !f.heldAt.IsZero() {
		f.held = max(0, f.held-now.Sub(f.heldAt)/heldDecay)
	}
	f.held += d
	f.heldAt = now
	if f.held > p.trail {
		f.free = true
	}
}

// wait blocks until feeder f may send chunk i, ctx ends, or idle passes
// (errIdle; at most the pacer's idle).
func (p *pacer) wait(ctx context.Context, f *paced, i int, idle time.Duration) error {
	idle = min(idle, p.idle)
	start := time.Now()
	err := waitUntil(ctx, idle, func() (bool, <-chan struct{}) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.clear(f, i, time.Now()), p.changed
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.charge(f, now.Sub(start), now)
	return err
}

// clearNow reports whether feeder f may send block i without waiting.
func (p *pacer) clearNow(f *paced, i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clear(f, i, time.Now())
}

func (p *pacer) clear(f *paced, i int, now time.Time) bool {
	if f.free {
		return true
	}
	for q := range p.feeders {
		if q != f && q.next < i-p.lead && q.next >= i-p.window && now.Sub(q.since) < p.stall {
			return false
		}
	}
	return true
}

const (
	paceLead   = 128 << 10 // how far a feeder may run ahead of another: a few blocks
	paceWindow = 8 << 20   // a child further behind catches up on its own
)

// newFeedPacer paces the feeders of one parent: a node's children, whatever
// tree each is in (a node feeds in one tree but after repairs), and the
// seed's children in one tree. Positions are blocks of a stripe, which
// every stripe has about as many of.
func newFeedPacer(cfg Config, blockSize int) *pacer {
	hb := cfg.Heartbeat
	return newPacer(max(1, paceLead/blockSize), paceWindow/blockSize, hb, 2*hb, 2*hb)
}

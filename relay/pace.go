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
// chunks ahead of a sibling, as long as that sibling is within window
// chunks: one further behind (a slow link, a newcomer resuming) is left to
// catch up on its own and paces nobody.
type pacer struct {
	lead, window int
	idle         time.Duration

	mu      sync.Mutex
	pos     map[*int]struct{} // each feeder's next chunk
	changed chan struct{}
}

func newPacer(lead, window int, idle time.Duration) *pacer {
	return &pacer{lead: lead, window: window, idle: idle, pos: map[*int]struct{}{}, changed: make(chan struct{})}
}

// join registers a feeder starting at chunk 0; leave must follow.
func (p *pacer) join() *int {
	p.mu.Lock()
	defer p.mu.Unlock()
	pos := new(int)
	p.pos[pos] = struct{}{}
	return pos
}

func (p *pacer) leave(pos *int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pos, pos)
	p.broadcast()
}

// advance records that the feeder at pos will next send chunk i.
func (p *pacer) advance(pos *int, i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	*pos = i
	p.broadcast()
}

func (p *pacer) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// wait blocks until the feeder at pos may send chunk i, ctx ends, or idle
// passes (errIdle).
func (p *pacer) wait(ctx context.Context, pos *int, i int) error {
	timer := time.NewTimer(p.idle)
	defer timer.Stop()
	for {
		p.mu.Lock()
		ok, ch := p.clear(pos, i), p.changed
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return errIdle
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *pacer) clear(pos *int, i int) bool {
	for q := range p.pos {
		if q != pos && *q < i-p.lead && *q >= i-p.window {
			return false
		}
	}
	return true
}

package relay

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPacerKeepsSiblingsAbreast(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		sibling int // the sibling's next chunk; -1: no sibling
		next    int // the chunk this feeder wants to send
		mayGo   bool
	}{
		{"alone", -1, 100, true},
		{"abreast", 10, 10, true},
		{"one ahead", 10, 11, true},
		{"two ahead: waits for the sibling", 10, 12, false},
		{"sibling far behind paces nobody", 10, 30, true},
		{"at the edge of the window", 10, 18, false},
		{"just past the window", 10, 19, true},
		{"behind the sibling", 20, 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPacer(1, 8, 10*time.Millisecond, time.Minute, time.Minute)
			me := p.join()
			if tc.sibling >= 0 {
				p.advance(p.join(), tc.sibling)
			}
			err := p.wait(ctx, me, tc.next, p.idle)
			if got := err == nil; got != tc.mayGo {
				t.Errorf("wait = %v, want may go %v", err, tc.mayGo)
			}
			if err != nil && !errors.Is(err, errIdle) {
				t.Errorf("a held feeder must idle (to send a ping), got %v", err)
			}
		})
	}
}

func TestPacerReleasesWhenSiblingAdvancesOrLeaves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, release := range []string{"advance", "leave"} {
		p := newPacer(1, 8, time.Minute, time.Minute, time.Minute)
		me, sib := p.join(), p.join()
		p.advance(sib, 3)
		got := make(chan error, 1)
		go func() { got <- p.wait(ctx, me, 6, p.idle) }()
		if release == "advance" {
			p.advance(sib, 5)
		} else {
			p.leave(sib)
		}
		if err := <-got; err != nil {
			t.Errorf("%s: wait = %v, want released", release, err)
		}
	}
}

func TestPacerIgnoresAStalledSibling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := newPacer(1, 8, 5*time.Millisecond, 50*time.Millisecond, time.Minute)
	me, hung := p.join(), p.join()
	p.advance(hung, 3)
	for {
		err := p.wait(ctx, me, 6, p.idle)
		if err == nil {
			return // released once the sibling had not moved for the stall time
		}
		if !errors.Is(err, errIdle) {
			t.Fatalf("wait = %v", err)
		}
	}
}

func TestPacerLetsGoOfASlowSibling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := newPacer(1, 8, 5*time.Millisecond, time.Minute, 50*time.Millisecond)
	me, slow := p.join(), p.join()
	p.advance(slow, 3)
	p.advance(me, 6) // trailing from here on, though it keeps moving
	for {
		p.advance(slow, 3) // moving, but never catching up
		err := p.wait(ctx, me, 6, p.idle)
		if err == nil {
			return
		}
		if !errors.Is(err, errIdle) {
			t.Fatalf("wait = %v", err)
		}
	}
}

// A sibling on a slow link catches up each time the other is held back,
// so it never trails for long at a stretch; the held time adds up, and
// the faster feeder runs free.
func TestPacerLetsGoOfASiblingThatOnlyCatchesUpWhenHeld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := newPacer(1, 1000, 5*time.Millisecond, time.Minute, 50*time.Millisecond)
	fast, slow := p.join(), p.join()
	slowAt := 0
	for i := 0; i < 400; i++ {
		p.advance(fast, i)
		for {
			err := p.wait(ctx, fast, i, p.idle)
			if err == nil {
				break
			}
			if !errors.Is(err, errIdle) {
				t.Fatalf("wait = %v", err)
			}
			slowAt++ // one block per wait: a tenth of the other's pace, or less
			p.advance(slow, slowAt)
		}
		if i-slowAt > 50 {
			return
		}
	}
	t.Fatalf("the fast feeder is still held to its slow sibling's pace (%d vs %d)", fast.next, slowAt)
}

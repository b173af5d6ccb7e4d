package relay

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// stripesHeld stands in for a spool: what is missing of each stripe, and
// a channel closed whenever that changes.
type stripesHeld struct {
	mu      sync.Mutex
	missing [maxStripes]int
	changed chan struct{}
}

func newStripesHeld(missing0, missing1 int) *stripesHeld {
	return &stripesHeld{missing: [maxStripes]int{missing0, missing1}, changed: make(chan struct{})}
}

func (h *stripesHeld) get(_, st int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.missing[st]
}

func (h *stripesHeld) changes() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

func (h *stripesHeld) set(st, missing int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.missing[st] = missing
	close(h.changed)
	h.changed = make(chan struct{})
}

func testLead(h *stripesHeld, now *time.Time) *rootLead {
	return &rootLead{lead: 16, moving: time.Second, most: time.Second, missing: h.get, changes: h.changes, now: func() time.Time { return *now }}
}

func TestRootLeadHoldsOnlyARootsOtherStripe(t *testing.T) {
	seed := NodeID{}
	relay := NodeID{9}
	for _, tc := range []struct {
		name     string
		parents  []parentMsg
		missing  [2]int // stripe 0, stripe 1
		st       int
		wantHeld bool
	}{
		{"root of 0, stripe 1 ahead by the lead", []parentMsg{{id: seed, stripes: 2, stripe: 0, feeds: 2}, {id: relay, stripes: 2, stripe: 1}}, [2]int{300, 284}, 1, true},
		{"root of 0, stripe 1 ahead by less", []parentMsg{{id: seed, stripes: 2, stripe: 0, feeds: 2}, {id: relay, stripes: 2, stripe: 1}}, [2]int{300, 285}, 1, false},
		{"root of 0, stripe 1 behind", []parentMsg{{id: seed, stripes: 2, stripe: 0, feeds: 2}, {id: relay, stripes: 2, stripe: 1}}, [2]int{100, 300}, 1, false},
		{"root of 0: its own stripe is never held", []parentMsg{{id: seed, stripes: 2, stripe: 0, feeds: 2}, {id: relay, stripes: 2, stripe: 1}}, [2]int{300, 0}, 0, false},
		{"a root that feeds no one", []parentMsg{{id: seed, stripes: 2, stripe: 0, feeds: 0}, {id: relay, stripes: 2, stripe: 1}}, [2]int{300, 0}, 1, false},
		{"an inner relay, not a root", []parentMsg{{id: relay, stripes: 2, stripe: 0, feeds: 2}, {id: relay, stripes: 2, stripe: 1}}, [2]int{300, 0}, 1, false},
		{"a root that relays the other stripe too", []parentMsg{{id: seed, stripes: 2, stripe: 0, feeds: 2}, {id: relay, stripes: 2, stripe: 1, feeds: 1}}, [2]int{300, 0}, 1, false},
		{"a leaf in both trees", []parentMsg{{id: relay, stripes: 2, stripe: 0}, {id: relay, stripes: 2, stripe: 1}}, [2]int{300, 0}, 1, false},
		{"one tree", []parentMsg{{id: seed, stripes: 1, stripe: 0, feeds: 2}}, [2]int{300, 0}, 0, false},
		{"root of 0, which it holds whole", []parentMsg{{id: seed, stripes: 2, stripe: 0, feeds: 2}, {id: relay, stripes: 2, stripe: 1}}, [2]int{0, 0}, 1, false},
		{"no longer a root", []parentMsg{{id: seed, stripes: 2, stripe: 0, feeds: 2}, {id: relay, stripes: 2, stripe: 1}, {id: seed, stripes: 2, stripe: 0, feeds: 0}}, [2]int{300, 0}, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newStripesHeld(400, 400)
			now := time.Unix(1000, 0)
			l := testLead(h, &now)
			for _, p := range tc.parents {
				l.named(p)
			}
			// The rooted stripe moves to where the case has it.
			now = now.Add(100 * time.Millisecond)
			h.set(0, tc.missing[0])
			h.set(1, tc.missing[1])
			if got := l.ahead(tc.st); got != tc.wantHeld {
				t.Errorf("stripe %d with %v missing: ahead %v, want %v", tc.st, tc.missing, got, tc.wantHeld)
			}
		})
	}
}

func TestRootLeadLetsGoOfAStalledRootedStripe(t *testing.T) {
	h := newStripesHeld(400, 400)
	now := time.Unix(1000, 0)
	l := testLead(h, &now)
	l.named(parentMsg{id: NodeID{}, stripes: 2, stripe: 0, feeds: 2})
	h.set(0, 300)
	h.set(1, 200)
	if !l.ahead(1) {
		t.Fatal("stripe 1 100 blocks ahead of the rooted stripe, which moved: not held")
	}
	now = now.Add(l.moving)
	if l.ahead(1) {
		t.Error("the rooted stripe has not moved for a second (its parent lost, say): stripe 1 still held")
	}
	h.set(0, 299)
	if !l.ahead(1) {
		t.Error("the rooted stripe moves again: stripe 1 not held")
	}
}

func TestRootLeadHoldEnds(t *testing.T) {
	h := newStripesHeld(400, 400)
	now := time.Unix(1000, 0)
	l := testLead(h, &now)
	l.most = 50 * time.Millisecond
	l.named(parentMsg{id: NodeID{}, stripes: 2, stripe: 0, feeds: 2})
	h.set(0, 300)
	h.set(1, 200)

	// The rooted stripe catches up: the hold wakes and ends, short of its
	// longest (neither most nor moving passes in the test).
	done := make(chan bool, 1)
	l.most, l.moving = time.Minute, time.Minute
	entered := make(chan struct{}, 1)
	l.changes = func() <-chan struct{} {
		select {
		case entered <- struct{}{}:
		default:
		}
		return h.changes()
	}
	go func() { done <- l.hold(context.Background(), 1) }()
	<-entered
	h.set(0, 215)
	select {
	case held := <-done:
		if held {
			t.Error("a hold ended by the rooted stripe catching up says it lasted its longest")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the rooted stripe caught up; the hold did not end")
	}

	// It does not: the hold lasts most, and says so.
	h.set(0, 300)
	l.most, l.moving = 50*time.Millisecond, time.Second
	if !l.hold(context.Background(), 1) {
		t.Error("a hold that lasted its longest does not say so")
	}

	// The context ends.
	l.most = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- l.hold(ctx, 1) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the context ended; the hold did not")
	}
}

// A connection held its longest is read a trickle at a time; one not held,
// as much as the caller asks.
func TestHeldReaderTrickles(t *testing.T) {
	src := make([]byte, 4*trickle)
	for _, held := range []bool{false, true} {
		r := heardReader{r: bytes.NewReader(src), heard: func() {}, hold: func() bool { return held }}
		buf := make([]byte, len(src))
		n, err := r.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{false: len(src), true: trickle}[held]; n != want {
			t.Errorf("held its longest %v: read %d bytes, want %d", held, n, want)
		}
	}
}

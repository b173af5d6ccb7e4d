package relay

import (
	"testing"
	"time"
)

// fakeFlow is a flow whose delivery the test sets and whose pace it reads.
type fakeFlow struct {
	d     delivery
	paced uint64
}

func (f *fakeFlow) delivered() (delivery, bool) { return f.d, true }
func (f *fakeFlow) pace(r uint64)               { f.paced = r }

// moved adds n bytes delivered in busy time.
func (f *fakeFlow) moved(n uint64, busy time.Duration) {
	f.d.bytes += n
	f.d.busy += busy
}

// Every flow is paced at the headroom over the fastest busy rate any flow
// showed; a slower window never lowers it; a flow that joins is paced at
// once; a window that moved too little, or was busy too briefly, to
// measure a link sets nothing (a flow waiting for its parent's data is not
// a slow link).
func TestUplinkPacesAtTheFastestBusyRate(t *testing.T) {
	u := newUplink(0)
	t0 := time.Now()
	a, b := &fakeFlow{}, &fakeFlow{}
	fa, fb := u.add(a, flowTo{}, t0), u.add(b, flowTo{}, t0)

	a.moved(300_000, time.Second)
	u.tick(fa, t0.Add(measureEvery/2)) // too early: the window goes on
	if a.paced != 0 {
		t.Fatalf("paced after half a window: %d", a.paced)
	}
	u.tick(fa, t0.Add(time.Second)) // 300 kB/s while busy
	if want := uint64(300_000 * paceHeadroom); a.paced != want || b.paced != want {
		t.Fatalf("paced %d and %d, want %d each", a.paced, b.paced, want)
	}

	b.moved(500_000, 500*time.Millisecond) // busy half the window: 1 MB/s
	u.tick(fb, t0.Add(time.Second))
	want := uint64(1_000_000 * paceHeadroom)
	if a.paced != want || b.paced != want {
		t.Fatalf("after a 1 MB/s window paced %d and %d, want %d", a.paced, b.paced, want)
	}

	a.moved(100_000, time.Second) // slower: the pace stays
	u.tick(fa, t0.Add(2*time.Second))
	if a.paced != want {
		t.Fatalf("a slower window changed the pace to %d, want %d", a.paced, want)
	}

	a.moved(minBytes-1, 10*time.Millisecond) // a trickle at a high rate
	u.tick(fa, t0.Add(3*time.Second))
	b.moved(10<<20, minBusy-time.Millisecond) // too brief to be a link's rate
	u.tick(fb, t0.Add(3*time.Second))
	if a.paced != want {
		t.Fatalf("a window too small to measure paced at %d, want %d", a.paced, want)
	}

	u.leave(fb)
	c := &fakeFlow{}
	u.add(c, flowTo{}, t0.Add(3*time.Second))
	if c.paced != want {
		t.Fatalf("a joining flow paced at %d, want %d", c.paced, want)
	}
	a.moved(4_000_000, 2*time.Second)
	u.tick(fa, t0.Add(4*time.Second))
	if b.paced == uint64(2_000_000*paceHeadroom) {
		t.Fatal("a flow that left was paced again")
	}
	if c.paced != uint64(2_000_000*paceHeadroom) {
		t.Fatalf("c paced at %d after a 2 MB/s window, want %d", c.paced, uint64(2_000_000*paceHeadroom))
	}
}

// A nil uplink (a process that paces nothing) takes every call.
func TestNilUplink(t *testing.T) {
	var u *uplink
	f := u.join(nil, flowTo{})
	u.tick(f, time.Now())
	u.leave(f)
}

// Flows seen faster than a gigabit go unpaced: there the CPU is the limit.
func TestUplinkLeavesFastFlowsUnpaced(t *testing.T) {
	u := newUplink(0)
	t0 := time.Now()
	a := &fakeFlow{}
	fa := u.add(a, flowTo{}, t0)
	a.moved(10_000_000, time.Second)
	u.tick(fa, t0.Add(time.Second))
	if a.paced != 15_000_000 {
		t.Fatalf("a 10 MB/s flow paced at %d, want 15000000", a.paced)
	}
	a.moved(500_000_000, time.Second)
	u.tick(fa, t0.Add(2*time.Second))
	if a.paced != unpaced {
		t.Fatalf("a 500 MB/s flow paced at %d, want unpaced", a.paced)
	}
	b := &fakeFlow{}
	u.add(b, flowTo{}, t0.Add(2*time.Second))
	if b.paced != unpaced {
		t.Fatalf("a flow joining a fast uplink paced at %d, want unpaced", b.paced)
	}
}

// Under a cap on all flows (max_rate), each flow is paced at an even share
// of it from its first byte, below the busy-rate pace when that is lower;
// shares grow when a flow leaves.
func TestUplinkSplitsItsCapEvenly(t *testing.T) {
	u := newUplink(1_000_000)
	t0 := time.Now()
	a, b := &fakeFlow{}, &fakeFlow{}
	fa := u.add(a, flowTo{}, t0)
	if a.paced != 1_000_000 {
		t.Fatalf("one flow under a 1 MB/s cap paced at %d, want 1000000", a.paced)
	}
	fb := u.add(b, flowTo{}, t0)
	if a.paced != 500_000 || b.paced != 500_000 {
		t.Fatalf("two flows paced at %d and %d, want 500000 each", a.paced, b.paced)
	}
	a.moved(200_000, time.Second) // 200 kB/s while busy: its pace is lower than the share
	u.tick(fa, t0.Add(time.Second))
	if want := uint64(200_000 * paceHeadroom); a.paced != want || b.paced != want {
		t.Fatalf("after a 200 kB/s window paced %d and %d, want %d", a.paced, b.paced, want)
	}
	b.moved(2_000_000, time.Second) // faster than the share: the share holds
	u.tick(fb, t0.Add(time.Second))
	if a.paced != 500_000 || b.paced != 500_000 {
		t.Fatalf("after a 2 MB/s window paced %d and %d, want the 500000 share", a.paced, b.paced)
	}
	u.leave(fb)
	if a.paced != 1_000_000 {
		t.Fatalf("the flow left alone paced at %d, want the whole 1000000", a.paced)
	}
	u.leave(fa)
}

// Where the link's rate is known, its share (linkShare) is split evenly
// from the first byte as a cap is; the lower of the two holds.
func TestUplinkSplitsTheLinkEvenly(t *testing.T) {
	share := func(rate float64, n int) uint64 { return uint64(linkShare * rate / float64(n)) }
	u := newUplink(0)
	t0 := time.Now()
	a, b := &fakeFlow{}, &fakeFlow{}
	fa := u.add(a, flowTo{}, t0)
	if a.paced != 0 {
		t.Fatalf("with no link rate and nothing measured, paced at %d, want unpaced (never set)", a.paced)
	}
	u.setLink(1_000_000)
	if want := share(1_000_000, 1); a.paced != want {
		t.Fatalf("one flow on a 1 MB/s link paced at %d, want %d", a.paced, want)
	}
	fb := u.add(b, flowTo{}, t0)
	if want := share(1_000_000, 2); a.paced != want || b.paced != want {
		t.Fatalf("two flows paced at %d and %d, want %d each", a.paced, b.paced, want)
	}
	u.leave(fb)
	u.leave(fa)

	capped := newUplink(400_000) // a cap under the link: the cap holds
	capped.setLink(1_000_000)
	c := &fakeFlow{}
	capped.leave(capped.add(c, flowTo{}, t0))
	if c.paced != 400_000 {
		t.Fatalf("under a 400 kB/s cap on a 1 MB/s link paced at %d, want 400000", c.paced)
	}
	over := newUplink(5_000_000) // a cap over the link: the link holds
	over.setLink(1_000_000)
	d := &fakeFlow{}
	over.leave(over.add(d, flowTo{}, t0))
	if want := share(1_000_000, 1); d.paced != want {
		t.Fatalf("under a 5 MB/s cap on a 1 MB/s link paced at %d, want %d", d.paced, want)
	}
	fast := newUplink(0) // a 1 Gbit/s NIC: not split, two flows go unpaced
	fast.setLink(125_000_000)
	fast.add(&fakeFlow{}, flowTo{}, t0)
	e := &fakeFlow{}
	fast.leave(fast.add(e, flowTo{}, t0))
	if e.paced != 0 {
		t.Fatalf("on a 1 Gbit/s link paced at %d, want never paced", e.paced)
	}
}

// A flow whose data waits unacknowledged for stallAfter (a hung child, a
// link gone down) gives its share of a split link to the flows that move,
// and takes it back once it moves again; a flow with nothing to send is
// not stalled, however long it waits.
func TestUplinkStalledFlowGivesUpItsShare(t *testing.T) {
	u := newUplink(1_000_000)
	t0 := time.Now()
	a, b, c := &fakeFlow{}, &fakeFlow{}, &fakeFlow{}
	fa, fb, _ := u.add(a, flowTo{}, t0), u.add(b, flowTo{}, t0), u.add(c, flowTo{}, t0)
	third := uint64(1_000_000 / 3)
	if a.paced != third {
		t.Fatalf("three flows paced at %d, want %d", a.paced, third)
	}
	b.d.pending = true // b's child takes nothing; c has nothing to send
	at := t0
	for step := time.Duration(0); step <= stallAfter; step += watchEvery {
		at = t0.Add(step + watchEvery)
		a.moved(10_000, 0)
		a.d.pending = true
		u.tick(fa, at)
	}
	if a.paced != 500_000 || b.paced != 500_000 {
		t.Fatalf("after %s of b stalled, paced %d (a) and %d (b), want 500000: a and the idle c share the link", at.Sub(t0), a.paced, b.paced)
	}
	b.moved(1_000, 0)
	u.tick(fb, at.Add(watchEvery))
	if a.paced != third || b.paced != third {
		t.Fatalf("after b moved again paced %d and %d, want %d", a.paced, b.paced, third)
	}
	b.d.pending = false
	u.leave(fb)
	if a.paced != 500_000 {
		t.Fatalf("after b left paced %d, want 500000", a.paced)
	}
}

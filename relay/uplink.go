package relay

import (
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// uplink paces each flow this process feeds a child at paceHeadroom times
// the fastest any of its flows has been seen to move data while it had
// data to move, and, under a cap on all of them (max_rate) or on a link
// whose rate the platform shows (slower than unpacedFrom), at no more
// than an even share of it. A sender is otherwise paced by its
// congestion control, and BBR, misled by bursty acknowledgements on a
// shaped or virtual link, paces at many times the link: the bursts
// overflow the switch port of the child, where they crowd out the other
// tree's flow into the same child, and that flow's whole subtree waits.
// Paced a little above what a flow was seen to carry, every flow keeps
// its share: 64 hosts at 10 Mbit/s went from 1.43-1.48 to 1.21-1.29 x
// S/B. Rates are measured over the time a flow was busy (TCP's own
// account), so a flow waiting for its parent's data does not count as a
// slow link; the headroom lets the pace grow where it started low. A nil
// *uplink paces nothing, and where the platform cannot measure a flow or
// set its pace, flows go as the kernel sends them.
type uplink struct {
	mu    sync.Mutex
	flows map[*upFlow]struct{}
	best  float64 // bytes per second: the fastest busy rate seen

	// all caps the flows together (bytes per second; 0: no cap). Each
	// flow is paced at an even share of it from its first byte. A token
	// bucket alone (rateCap) holds the total, but not the split: the
	// flows start uncapped, fill the queue before the link, lose packets
	// to it, and one takes two thirds of the link for seconds while the
	// other stalls. The seed's roots split so, and the tree on the short
	// side finishes late: 128 hosts at 4 Mbit/s and max_rate 97 % of the
	// link, 1.16-1.26 x S/B with the bucket alone, 1.13-1.16 paced at
	// even shares (1.18-1.48 with no cap).
	all float64

	// link is linkShare of what the link under the first flow can carry
	// (bytes per second; 0: not known), found once. Like all, it is split
	// evenly from the first byte: the seed cannot otherwise know its link
	// before its flows have overrun it (128 hosts at 4 Mbit/s: 1.27-1.30 x
	// S/B unpaced, 1.15-1.17 split so, in alternating runs).
	link  float64
	probe sync.Once

	// watched is when the flows were last looked at for a stall (see
	// watch); stalled is how many are.
	watched time.Time
	stalled int
}

// upFlow is one child's flow and where its current window began.
type upFlow struct {
	sock  flowSocket
	to    flowTo
	start time.Time
	from  delivery

	// acked is the flow's delivered bytes when it was last watched, and
	// moved when they last grew or it had nothing to send; stalled: it
	// has had data to send and none of it acknowledged for stallAfter.
	acked   uint64
	moved   time.Time
	stalled bool
}

// flowTo is whom a flow feeds: the child's node id (as it said in its
// hello), its address, and the stripe.
type flowTo struct {
	child  NodeID
	addr   netip.Addr
	stripe uint8
}

// A stall is a flow stalled since a time (see stallAfter): its child hangs
// or its link is down, as far as this sender can tell.
type stall struct {
	to    flowTo
	since time.Time
}

// delivery is what a flow has delivered, and the time it spent busy
// (with data sent and not yet acknowledged, or waiting to be sent).
type delivery struct {
	bytes uint64
	busy  time.Duration
	// pending: data waits to be sent or acknowledged.
	pending bool
}

// flowSocket is what the platform shows and sets of one TCP flow.
type flowSocket interface {
	delivered() (delivery, bool)
	pace(bytesPerSecond uint64)
}

const (
	// measureEvery is a flow's window: short, so flows are paced before
	// the first bursts of a session crowd each other out (64 @ 10 Mbit/s:
	// 1.12-1.17 x S/B at 200 ms against 1.17-1.27 at 500 ms, in
	// alternating runs); minBusy and minBytes keep a shaper's bucket and
	// TCP's clock from making a window's rate.
	measureEvery = 200 * time.Millisecond
	// minBusy and minBytes make a window a measurement: a flow that
	// trickled pings or a few blocks says nothing of its link.
	minBusy  = 100 * time.Millisecond
	minBytes = 64 << 10
	// paceHeadroom over the fastest rate seen: room to grow, well under
	// the many-fold bursts it stops.
	paceHeadroom = 1.5
	// linkShare of a link's rate is shared out among its flows; the rest
	// is left to the acknowledgements and control messages on the link.
	linkShare = 0.97
	// unpacedFrom: flows this fast go as the kernel sends them. Where the
	// CPU, not a link, is the limit (loopback, fast LANs), pacing costs a
	// quarter of the throughput, and a NIC this fast cannot burst far
	// above the link it drives.
	unpacedFrom = 125_000_000 // 1 Gbit/s
	unpaced     = math.MaxUint64
	// stallAfter without an acknowledged byte while data waits, a flow
	// is stalled: its child hangs or its link is down. Its share of a
	// split link goes to the flows that move until it moves again, so
	// a hung child does not halve its siblings' pace for the DeadAfter
	// it takes to be given up. Above TCP's retransmission timeouts on a
	// LAN, and over 80 segments of a 1 Mbit/s link.
	stallAfter = time.Second
	// watchEvery is how often the flows are looked at for a stall.
	watchEvery = 100 * time.Millisecond
)

// newUplink paces flows; all > 0 caps them together, in bytes per second.
func newUplink(all int64) *uplink {
	return &uplink{flows: map[*upFlow]struct{}{}, all: float64(max(all, 0))}
}

// join starts measuring and pacing the flow on conn to a child; leave
// must follow. It returns nil when the platform cannot pace conn.
func (u *uplink) join(conn net.Conn, to flowTo) *upFlow {
	if u == nil {
		return nil
	}
	s := newFlowSocket(conn)
	if s == nil {
		return nil
	}
	u.probe.Do(func() {
		if a, ok := conn.LocalAddr().(*net.TCPAddr); ok {
			u.setLink(linkRate(a.IP))
		}
	})
	return u.add(s, to, time.Now())
}

// setLink says the flows leave by a link of rate bytes per second (0: not
// known). A link of unpacedFrom or faster is not split: its flows go as
// the kernel sends them.
func (u *uplink) setLink(rate int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.link = 0
	if rate > 0 && rate < unpacedFrom {
		u.link = linkShare * float64(rate)
	}
	if u.total() > 0 {
		u.paceAll()
	}
}

func (u *uplink) add(s flowSocket, to flowTo, now time.Time) *upFlow {
	d, ok := s.delivered()
	if !ok {
		return nil
	}
	f := &upFlow{sock: s, to: to, start: now, from: d, acked: d.bytes, moved: now}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.flows[f] = struct{}{}
	if u.total() > 0 || u.best > 0 {
		u.paceAll() // under a cap, every share shrinks
	}
	return f
}

func (u *uplink) leave(f *upFlow) {
	if u == nil || f == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.flows, f)
	if f.stalled {
		u.stalled--
	}
	if u.total() > 0 {
		u.paceAll() // every share grows
	}
}

// tick ends flow f's window once it is measureEvery old: if f moved data
// faster while busy than any flow before, every flow is paced anew. It
// also watches every flow for a stall.
func (u *uplink) tick(f *upFlow, now time.Time) {
	if u == nil || f == nil {
		return
	}
	u.watch(now)
	if now.Sub(f.start) < measureEvery {
		return
	}
	d, ok := f.sock.delivered()
	if !ok {
		return
	}
	bytes, busy := d.bytes-f.from.bytes, d.busy-f.from.busy
	f.start, f.from = now, d
	if busy < minBusy || bytes < minBytes {
		return
	}
	r := float64(bytes) / busy.Seconds()
	u.mu.Lock()
	defer u.mu.Unlock()
	if r <= u.best {
		return
	}
	u.best = r
	u.paceAll()
}

// stalls returns the flows stalled now.
func (u *uplink) stalls(now time.Time) []stall {
	if u == nil {
		return nil
	}
	u.watch(now)
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []stall
	for f := range u.flows {
		if f.stalled {
			out = append(out, stall{to: f.to, since: f.moved})
		}
	}
	// The longest first: a report names at most maxStalls.
	slices.SortFunc(out, func(a, b stall) int { return a.since.Compare(b.since) })
	return out
}

// watch, at most every watchEvery, marks each flow stalled or moving (see
// stallAfter) and, when that changes how many share a split link, paces
// every flow anew. Flows paced by their own rate lose nothing to a
// stalled sibling.
func (u *uplink) watch(now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if now.Sub(u.watched) < watchEvery {
		return
	}
	u.watched = now
	before := u.stalled
	for f := range u.flows {
		d, ok := f.sock.delivered()
		if !ok {
			continue
		}
		if d.bytes != f.acked || !d.pending {
			f.acked, f.moved = d.bytes, now
		}
		if stalled := now.Sub(f.moved) >= stallAfter; stalled != f.stalled {
			f.stalled = stalled
			if stalled {
				u.stalled++
			} else {
				u.stalled--
			}
		}
	}
	if u.stalled != before && u.total() > 0 {
		u.paceAll()
	}
}

// paceAll sets every flow's pace to rate; u.mu is held.
func (u *uplink) paceAll() {
	r := u.rate()
	for f := range u.flows {
		f.sock.pace(r)
	}
}

// total is what all flows together may carry (bytes per second; 0: no
// bound): the cap or the link's share, whichever is lower.
func (u *uplink) total() float64 {
	if u.link > 0 && (u.all == 0 || u.link < u.all) {
		return u.link
	}
	return u.all
}

// rate is the pace of every flow, in bytes per second (unpaced: none).
func (u *uplink) rate() uint64 {
	r := u.best * paceHeadroom
	if u.best == 0 {
		r = math.Inf(1)
	}
	if all := u.total(); all > 0 && len(u.flows) > 0 {
		r = min(r, all/float64(max(len(u.flows)-u.stalled, 1)))
	}
	if r < unpacedFrom {
		return uint64(r)
	}
	return unpaced
}

package relay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// What goes wrong around progress datagrams, and what the seed does then:
// one lost, one late, one forged, one sent again, a loop that was late.

// datagramEvent is what the inbox passes on for a sound datagram of n.
func datagramEvent(n *node, token [16]byte, p progressMsg) event {
	return event{n: n, f: frame{typ: msgProgress, payload: p.encode()}, token: token}
}

// nodePeriod is how often a node of cfg sends its progress (session.progressEvery).
func nodePeriod(cfg Config) time.Duration { return max(cfg.Heartbeat, cfg.DeadAfter/4) }

// silenceOutcome ticks the seed every heartbeat from from, keeping every
// node but the watched ones heard, until each watched node has been told to
// report over its connection ("fallback") or dropped ("lost"), and returns
// what happened to each, in order, and when: those two, and "hushed" (its
// children moved for silence).
func silenceOutcome(s *seedRun, from time.Time, watched ...*node) map[*node][]string {
	out := map[*node][]string{}
	reports, hushed, over := map[*node]int{}, map[*node]bool{}, map[*node]bool{}
	for _, x := range watched {
		reports[x] = len(linkOf(x).reports)
	}
	for at := from.Add(s.cfg.Heartbeat); at.Sub(from) <= 2*s.cfg.DeadAfter && len(over) < len(watched); at = at.Add(s.cfg.Heartbeat) {
		for _, n := range s.nodes {
			if _, ok := reports[n]; !ok {
				n.lastSeen = at
			}
		}
		links := map[*node]*fakeLink{}
		for _, x := range watched {
			if x.c != nil {
				links[x] = linkOf(x)
			}
		}
		s.tick(at)
		for _, x := range watched {
			if over[x] {
				continue
			}
			say := func(what string) { out[x] = append(out[x], what+" after "+at.Sub(from).String()) }
			if s.t.node(x.id).quiet && !hushed[x] {
				hushed[x] = true
				say("hushed")
			}
			switch {
			case x.c == nil:
				over[x] = true
				say("lost")
			case len(links[x].reports) > reports[x]:
				over[x] = true
				say("fallback")
			}
		}
	}
	return out
}

// fellBackFirst reports whether the first thing to happen to a node in an
// outcome was that it was told to report over its connection.
func fellBackFirst(outcome []string) bool {
	return len(outcome) > 0 && strings.HasPrefix(outcome[0], "fallback")
}

// A node whose datagrams stop coming is told to report over its connection
// before it could count as silent (three quarters of DeadAfter) or lost:
// also after one of its datagrams was lost earlier (a gap of two periods,
// which once made the seed wait two of those), and after it rejoined (whose
// first gap was once the whole time it was away).
func TestDatagramFallbackComesBeforeSilence(t *testing.T) {
	ctx := context.Background()
	period := nodePeriod(DefaultConfig())

	t.Run("after one lost datagram", func(t *testing.T) {
		s := datagramSeed(t, 8, time.Now())
		steady, lossy := s.nodes[2], s.nodes[3]
		// steady's last datagram came a period ago; lossy's two periods
		// ago: the one in between was lost, as UDP may.
		steady.reported = time.Now().Add(-period)
		lossy.reported = time.Now().Add(-2 * period)
		s.handle(ctx, datagramEvent(steady, steady.token, progressMsg{held: 1 << 20, millis: 5000}))
		s.handle(ctx, datagramEvent(lossy, lossy.token, progressMsg{held: 1 << 20, millis: 5000}))
		// From now on neither node's datagrams come through.
		from := lossy.lastSeen // handled after steady's
		out := silenceOutcome(s, from, steady, lossy)
		if !fellBackFirst(out[steady]) {
			t.Fatalf("control: a node reporting every period whose datagrams stop: %v", out[steady])
		}
		if !fellBackFirst(out[lossy]) {
			t.Errorf("a node one of whose datagrams was lost before they stopped (every %s): %v; the steady one: %v",
				lossy.every.Round(time.Millisecond), out[lossy], out[steady])
		}
	})

	t.Run("after a rejoin", func(t *testing.T) {
		s := datagramSeed(t, 8, time.Now())
		x := s.nodes[3]
		// x last reported DeadAfter and a second ago, was lost (after
		// DeadAfter), and rejoins now: as soon as a rejoin can be.
		x.reported, x.every = time.Now().Add(-s.cfg.DeadAfter-time.Second), period
		s.lost(x, errors.New("connection reset"))
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		s.admit(ctx, x, &dialed{c: newCtrl(a, s.cfg.DeadAfter), welcome: welcomeMsg{id: x.peer.ID}, pingEvery: time.Second, datagrams: true}, nil)
		x.c = &fakeLink{} // the loop's writes go nowhere; the reader started by admit reads a
		s.tell(s.t.join(x.id, time.Now()), true)
		if !x.byDatagram {
			t.Fatal("the rejoined node was not told to report by datagram")
		}
		s.handle(ctx, datagramEvent(x, x.token, progressMsg{held: 1 << 20, millis: 200}))
		out := silenceOutcome(s, x.lastSeen, x)
		if !fellBackFirst(out[x]) {
			t.Errorf("a rejoined node whose datagrams stopped after its first (every %s, from before it was lost): %v",
				x.every.Round(time.Millisecond), out[x])
		}
		b.Close()
		s.readers.Wait()
	})
}

// A node's progress datagram and its result travel different paths (the
// inbox's goroutine, the connection's reader) into the loop, so the last
// datagram a node sent before its result may be handled after it: the seed
// must not take it, or a relay that applied the package (kept while its
// children work) is believed to hold less than the package again.
func TestDatagramSentBeforeResultDoesNotRewind(t *testing.T) {
	ctx := context.Background()
	s := datagramSeed(t, 8, time.Now())
	x := s.nodes[s.t.seed[0][0]-1] // a root: it has children
	if len(s.t.childrenOf(x.id)) == 0 {
		t.Fatal("setup: the root feeds no one")
	}
	size := uint64(s.m.Size)
	s.firstDone = time.Second // no file source here: leave the deadline alone
	s.handle(ctx, datagramEvent(x, x.token, progressMsg{held: 1 << 20, received: 1 << 20, millis: 1000}))
	s.handle(ctx, event{n: x, f: frame{typ: msgResult, payload: resultMsg{ok: true, received: size, millis: 3000}.encode()}})
	if x.state != stateOK || x.c == nil {
		t.Fatalf("setup: after its result the relay is in state %d, connected %v", x.state, x.c != nil)
	}
	// Sent at 2000 ms, before the result; handled after it.
	s.handle(ctx, datagramEvent(x, x.token, progressMsg{held: 2 << 20, received: 2 << 20, millis: 2000}))
	if got := s.t.heldOf(x.id); got != s.m.Size {
		t.Errorf("a relay that applied the package is believed to hold %d of %d bytes after a datagram it sent before its result", got, s.m.Size)
	}
	if x.received != int64(size) {
		t.Errorf("the relay's received bytes went back from %d to %d", size, x.received)
	}
}

// Without a fleet secret a datagram's seal is keyed by its token, which
// every datagram carries in the clear: a host that sees one datagram (or the
// report frame) can seal any progress for that node from its address. One
// with a clock far ahead (MaxUint64) must not set the node's clock past
// anything it will send, or the seed would take none of its progress again:
// neither the inbox nor the loop takes a clock past what the node's session
// can have run.
func TestForgedFutureClockDoesNotFreezeANode(t *testing.T) {
	ctx := context.Background()
	s := simSeed(8, 2, time.Now())
	s.in = runInbox(t, s.events)

	x := s.nodes[3]
	x.peer.Addr = netip.MustParseAddrPort("127.0.0.1:7000")
	x.datagrams, x.offered = true, time.Now().Add(-5*time.Second) // its clock: under 5 s
	s.tell([]move{{node: x.id, stripe: 0, parent: s.t.parentOf(x.id, 0)}}, true)
	if !x.byDatagram {
		t.Fatal("setup: not told to report by datagram")
	}
	udp, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(s.in.port())})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	next := func() event {
		t.Helper()
		select {
		case ev := <-s.events:
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("the inbox passed nothing on")
		}
		return event{}
	}

	// The node's own datagram, as seen on the wire.
	honest := appendDatagram(nil, reportKey(nil, x.token), x.token, progressMsg{held: 1 << 20, received: 1 << 20, millis: 1000}.encode())
	udp.Write(honest)
	s.handle(ctx, next())
	if x.held != 1<<20 {
		t.Fatalf("setup: the node's datagram was not taken: held %d", x.held)
	}
	// Anyone who saw it: the token is the key. The inbox drops a clock
	// past what the node's session can have run (5 s)...
	tok, _ := datagramToken(honest)
	udp.Write(appendDatagram(nil, tok[:], tok, progressMsg{held: 0, received: 0, millis: math.MaxUint64}.encode()))
	udp.Write(appendDatagram(nil, reportKey(nil, x.token), x.token, progressMsg{held: 2 << 20, received: 2 << 20, millis: 2000}.encode()))
	s.handle(ctx, next())
	if x.held != 2<<20 || x.clock != 2000 {
		t.Errorf("after a forged datagram with millis %d, the node's own next one: held %d, clock %d", uint64(math.MaxUint64), x.held, x.clock)
	}
	// ...and so does the loop, whichever way it came.
	s.handle(ctx, datagramEvent(x, x.token, progressMsg{millis: math.MaxUint64}))
	s.handle(ctx, event{n: x, f: frame{typ: msgProgress, payload: progressMsg{millis: 60_000}.encode()}})
	s.handle(ctx, event{n: x, f: frame{typ: msgProgress, payload: progressMsg{held: 3 << 20, received: 3 << 20, millis: 3000}.encode()}})
	if x.held != 3<<20 {
		t.Errorf("after clocks from the future, the node's own progress is not taken: held %d, clock %d", x.held, x.clock)
	}
}

// When the seed's loop is late (the reason tick moves no children when
// most nodes seem silent at once), every node reporting by datagram seems
// silent for two periods: nodes whose datagrams came before stay on them,
// or one stall of the loop would cost the seed, for the rest of the
// session, the acknowledgements the datagrams save.
func TestLateLoopKeepsNodesOnDatagrams(t *testing.T) {
	now := time.Now()
	s := datagramSeed(t, 16, now.Add(-time.Minute))
	late := now.Add(-2*nodePeriod(s.cfg) - s.cfg.Heartbeat)
	for _, n := range s.nodes {
		n.lastSeen, n.toldAt, n.pinged, n.viaDatagram = late, now.Add(-time.Minute), now, true
	}
	s.tick(now)
	downgraded := 0
	for _, n := range s.nodes {
		if !n.datagrams {
			downgraded++
		}
	}
	if downgraded*2 > len(s.nodes) {
		t.Errorf("with every node silent at once (the loop was late), %d of %d were told to report over their connections for good", downgraded, len(s.nodes))
	}
}

// The inbox passes a datagram on only if it is newer than the last it
// passed on for its token: copies sent again (by the node itself, or
// without a secret by anyone who saw one) would fill the events channel
// the control readers and connects share, and leave the other nodes'
// datagrams to overflow the socket.
func TestInboxDropsReplaysItself(t *testing.T) {
	events := make(chan event, 1024)
	in := runInbox(t, events)
	n := &node{id: 1}
	token := in.open(n, netip.MustParseAddr("127.0.0.1"), time.Time{})
	udp, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(in.port())})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	d := appendDatagram(nil, reportKey(nil, token), token, progressMsg{held: 1, millis: 7}.encode())
	const copies = 200
	for range copies {
		udp.Write(d)
	}
	udp.Write(appendDatagram(nil, reportKey(nil, token), token, progressMsg{held: 2, millis: 8}.encode()))
	// Datagrams on loopback arrive in the order sent: the second passed on
	// must be the newer one.
	for _, want := range []uint64{7, 8} {
		select {
		case ev := <-events:
			if p, err := decodeProgress(ev.f.payload); err != nil || p.millis != want {
				t.Fatalf("passed on millis %d (%v), want %d: copies of one datagram reach the loop", p.millis, err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("datagram %d was not passed on", want)
		}
	}
}

// A node heard by datagram to the end, its own or forged by a host that
// read its token, while nothing the seed sends it is acknowledged any
// more (its end of the control connection is gone one way): it is lost
// once that has lasted deafAfter, and its children go to other parents.
// A node whose end takes what the seed sends stays, however long it runs.
func TestDeafNodeIsLostThoughItsDatagramsCome(t *testing.T) {
	for _, deaf := range []bool{true, false} {
		t.Run(fmt.Sprintf("deaf=%v", deaf), func(t *testing.T) {
			from := time.Now()
			s := datagramSeed(t, 15, from)
			x := s.nodes[innerNode(s.t)-1]
			children := map[*node]bool{}
			for st := range s.t.stripes {
				for _, c := range s.t.node(x.id).children[st] {
					children[s.nodes[c-1]] = true
				}
			}
			if len(children) == 0 {
				t.Fatal("setup: the watched node relays to no one")
			}
			s.tick(from) // the seed looks at its links from the start
			linkOf(x).deaf = deaf
			told := map[*node]int{}
			for c := range children {
				told[c] = len(linkOf(c).parents)
			}
			var lostAfter time.Duration
			for at := from.Add(s.cfg.Heartbeat); at.Sub(from) <= 3*s.cfg.DeadAfter; at = at.Add(s.cfg.Heartbeat) {
				for _, n := range s.nodes {
					n.lastSeen = at // as each fresh datagram does
				}
				s.tick(at)
				if x.c == nil {
					lostAfter = at.Sub(from)
					break
				}
			}
			if !deaf {
				if x.c == nil || x.state != stateActive {
					t.Fatalf("a node whose end acknowledges what the seed sends was dropped: %s", x.err)
				}
				return
			}
			if x.c == nil {
				for _, n := range s.nodes {
					if n != x && n.c == nil {
						t.Errorf("node %s was dropped too: %s", n.label(), n.err)
					}
				}
			}
			switch {
			case x.c != nil:
				t.Fatalf("a node deaf to the seed for %s, heard by datagram throughout, is still in the session", 3*s.cfg.DeadAfter)
			case lostAfter <= deafAfter(s.cfg) || lostAfter > deafAfter(s.cfg)+2*s.cfg.Heartbeat:
				t.Errorf("the deaf node was lost after %s, want just over %s", lostAfter, deafAfter(s.cfg))
			case !strings.Contains(x.err, "took nothing the seed sent"):
				t.Errorf("the deaf node's error says %q, not why it was lost", x.err)
			}
			for c := range children {
				if len(linkOf(c).parents) == told[c] {
					t.Errorf("child %s of the deaf node was not told a new parent", c.label())
				}
			}
		})
	}
}

// A node whose link drops out for 3.3 s, under DeadAfter (4 s), just as the
// seed sent it a frame: TCP retransmits that frame 0.2, 0.6, 1.4 and 3.0 s
// after it went (all in the outage), then at 6.2 s (RTO doubling from its
// 200 ms floor), so the seed's frame waits 6.2 s unacknowledged though the
// node was away 3.3 s and its datagrams come again after it. The silence
// rule keeps such a node; the deaf rule must too.
func TestShortOutageIsNotDeafness(t *testing.T) {
	from := time.Now()
	s := datagramSeed(t, 15, from)
	x := s.nodes[innerNode(s.t)-1]
	s.tick(from) // nothing waits: the link is seen idle
	outage := [2]time.Time{from.Add(100 * time.Millisecond), from.Add(3400 * time.Millisecond)}
	sent := from.Add(250 * time.Millisecond)   // a frame to x, in the outage
	acked := sent.Add(6200 * time.Millisecond) // its first retransmission after the outage
	for at := from.Add(s.cfg.Heartbeat); at.Sub(from) <= 8*time.Second; at = at.Add(s.cfg.Heartbeat) {
		for _, n := range s.nodes {
			if n != x || at.Before(outage[0]) || !at.Before(outage[1]) {
				n.lastSeen = at
			}
		}
		if x.c == nil {
			break
		}
		linkOf(x).deaf = !at.Before(sent) && at.Before(acked)
		s.tick(at)
	}
	if x.c == nil {
		t.Fatalf("a node away 3.3 s (DeadAfter %s), heard again after, was dropped: %s", s.cfg.DeadAfter, x.err)
	}
}

// The seed's loop is late (no tick for 10 s); a frame goes to x 0.1 s
// before the late tick, and is not yet acknowledged: what the seed sent
// has waited 0.1 s, not the 10 s since the link was last seen idle.
func TestLateLoopIsNotDeafness(t *testing.T) {
	from := time.Now()
	s := datagramSeed(t, 15, from)
	x := s.nodes[innerNode(s.t)-1]
	s.tick(from)
	late := from.Add(10 * time.Second)
	for _, n := range s.nodes {
		n.lastSeen = late // events handled before the tick
	}
	linkOf(x).deaf = true // a parent frame sent at late-0.1 s, in flight
	s.tick(late)
	if x.c == nil {
		t.Fatalf("a node whose frame waited 0.1 s was dropped after a late tick: %s", x.err)
	}
}

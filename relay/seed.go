package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"
)

// Peer is a receiver the seed will offer the session to.
type Peer struct {
	ID   NodeID
	Name string
	Addr netip.AddrPort
	Busy bool // announced as busy: not ready for a new session
}

// SeedOptions describes one session.
type SeedOptions struct {
	Signed *Signed // the package's manifest, signed by the seed's key
	Path   string  // the package file
	Peers  []Peer
	// Late, if set, delivers receivers found while the session runs: new
	// ones are attached, lost ones that come back rejoin and resume.
	Late <-chan Peer
	Log  *slog.Logger
	// Progress, if set, is called about every heartbeat from the session's loop.
	Progress func(SeedProgress)
	// Secret, if set, is the fleet's: only receivers that prove they hold
	// it are offered the session, and blocks travel sealed.
	Secret *Secret
	// Compress sends with zstd the blocks that shrink by it.
	Compress bool
	// WaitBusy is when the seed stops waiting for receivers busy with
	// another session: until then, one is offered the session again
	// whenever Late delivers it idle, and the session does not end without
	// it. Zero, or once past: a busy receiver is reported busy.
	WaitBusy time.Time
	// RejoinWait is how long after a node is lost the session waits for
	// it to come back through Late before it ends without it: about as
	// long as Late takes to find a receiver restarted on the same state.
	// Zero: a lost node does not hold up the end.
	RejoinWait time.Duration
}

type nodeState int

const (
	stateActive nodeState = iota // receiving, relaying or applying
	stateOK                      // applied
	stateFailed                  // refused, lost, or failed to apply
	stateBusy                    // busy with another session: waited for, or reported so
)

// node is the seed's view of one receiver; where it sits in the trees is
// the seedRun's tree's business.
type node struct {
	id         int // in the tree
	peer       Peer
	c          link           // nil while not connected
	seedAddr   netip.AddrPort // where it reaches the seed's listener
	reachedAt  netip.Addr     // where the seed reached it: its data connections come from there
	connecting bool
	joined     bool // took part in the session at least once
	state      nodeState
	err        string
	held       int64              // bytes verified
	parents    [maxStripes]string // per tree, the id it was last told to fetch from, or "seed"
	kids       [maxStripes][]kid  // per tree, the children it was last told it feeds
	received   int64
	lastSeen   time.Time
	pinged     time.Time     // when the seed last sent it a frame
	pingEvery  time.Duration // how often it needs one (see pingEvery)
	seconds    float64
	flushed    bool
	output     string
	upToDate   bool      // had the package applied already: nothing sent, nothing run
	liar       bool      // relayed a corrupt chunk: never taken back
	failed     bool      // said its apply failed: not offered the session again
	lostAt     time.Time // when its control connection last failed mid-session

	reported    time.Time     // when its last progress came
	every       time.Duration // how often it reports, about: the longest recent gap
	stalls      []silence     // its flows to children that take nothing, as its last progress said
	starved     []silence     // its parents that send it nothing, as its last progress said
	accusedBy   map[int]bool  // nodes that complained of it (corrupt data, a stall)
	unconfirmed int           // its corrupt-data complaints whose blocks the accused sent the seed intact
	unheard     bool          // its complaints move it, and are checked no more (see falseAccusations)
	checking    int           // the seed's fetches on its word not yet judged
	distrusted  int           // relays made to feed no one on its complaints (see wordBudget)
	probing     bool          // the seed is fetching a block it was accused of corrupting

	datagrams   bool      // may be told to send its progress by datagram: it takes report frames, and none of its went missing
	token       [16]byte  // its datagrams' token, while byDatagram
	byDatagram  bool      // told to send its progress by datagram, and not told otherwise since
	toldAt      time.Time // when it was told so
	viaDatagram bool      // a datagram of its came since
	clock       uint64    // its session clock at the newest progress or result taken, in milliseconds
	offered     time.Time // when the seed sent it the offer: its session clock started after

	// acked: the bytes the seed sent it that its end had acknowledged
	// when last looked at; ackedAt: since when what waits has waited with
	// none of it acknowledged, zero while nothing waits (see deaf).
	acked   uint64
	ackedAt time.Time
}

// link is the seed's end of a node's control connection, all the session
// loop uses of it, so the loop can be driven without sockets.
type link interface {
	send(t msgType, ps ...[]byte) error // each p a frame of type t, all in one write
	sendFrames(fs ...frame) error       // all in one write
	end()                               // an end frame, then close
	close()
	// delivered is how much of what the seed sent the node's end has
	// acknowledged, and whether some waits; false: the platform cannot tell.
	delivered() (delivery, bool)
}

// ctrlLink is a link over a real control connection.
type ctrlLink struct {
	*ctrl
	sock flowSocket // nil: the platform shows no delivery
}

func newCtrlLink(c *ctrl) ctrlLink { return ctrlLink{ctrl: c, sock: newFlowSocket(c.conn.Conn)} }

func (l ctrlLink) delivered() (delivery, bool) {
	if l.sock == nil {
		return delivery{}, false
	}
	return l.sock.delivered()
}

func (l ctrlLink) close() { l.conn.Close() }

// send and sendFrames leave the connection acknowledging at once: a frame
// the seed sends soon after it heard the node puts the kernel back to
// delaying its acknowledgements, and a node that would leave waits for
// its result's (see quickAck).
func (l ctrlLink) send(t msgType, ps ...[]byte) error {
	defer quickAck(l.conn.Conn)
	return l.ctrl.send(t, ps...)
}

func (l ctrlLink) sendFrames(fs ...frame) error {
	defer quickAck(l.conn.Conn)
	return l.ctrl.sendFrames(fs...)
}

// deaf is how long what the seed sent n has waited with none of it
// acknowledged, as of now (zero: nothing waits, or the platform cannot
// tell). Progress datagrams say a node is alive only one way: a node whose
// datagrams keep coming, its own or forged by a host that read its token,
// while the seed's frames reach it no more (pings, parents, its end) is
// lost all the same.
func (n *node) deaf(now time.Time) time.Duration {
	d, ok := n.c.delivered()
	switch {
	case !ok || !d.pending:
		// Nothing waits: the clock starts when the loop first sees
		// something wait, so a late loop counts no delay of its own.
		n.acked, n.ackedAt = d.bytes, time.Time{}
		return 0
	case d.bytes != n.acked || n.ackedAt.IsZero():
		n.acked, n.ackedAt = d.bytes, now
		return 0
	}
	return now.Sub(n.ackedAt)
}

// deafAfter is how long what the seed sent a node may wait unacknowledged
// before the node is lost: a link out for just under DeadAfter (a node the
// silence rule keeps) delays the acknowledgement of a frame sent as it
// went by up to twice that and TCP's first retransmission timeout, as the
// retransmissions back off (out 3.3 s: acknowledged after 6.2 s).
func deafAfter(cfg Config) time.Duration { return 2*cfg.DeadAfter + time.Second }

func (n *node) label() string { return fmt.Sprintf("%s (%s)", n.peer.Name, n.peer.ID.Short()) }

// event is what the session's loop learns from other goroutines: a frame
// from a node (or the error ending its connection), or the outcome of
// connecting to a node.
type event struct {
	n         *node
	f         frame
	err       error
	connected bool // the outcome of a connect: dial or err
	dial      *dialed
	verdict   *verdict // the outcome of probing a relay accused of corrupt data
	token     [16]byte // f came by datagram with this token (see inbox)
}

type dialed struct {
	c         *ctrl
	welcome   welcomeMsg
	held      int64
	applied   bool // applied this very session, or this package (upToDate), before: nothing to send
	upToDate  bool
	seedAddr  netip.AddrPort // the seed's listener, as the node reaches it
	pingEvery time.Duration  // how often the node needs a frame from the seed
	datagrams bool           // the node takes report frames
	offered   time.Time      // when the offer went: the node's session clock started after
}

// seedRun is one session at the seed. Its nodes belong to the goroutine
// running loop; other goroutines talk to it through events.
type seedRun struct {
	cfg     Config
	opt     SeedOptions
	m       *Manifest
	offer   []byte
	file    *os.File
	ln      net.Listener
	in      *inbox // where nodes send progress datagrams; nil: none do
	start   time.Time
	nodes   []*node          // node id i at nodes[i-1]
	ids     map[NodeID]*node // the first node with each receiver's id (see byID)
	t       *tree            // who feeds whom
	keys    keys             // the fleet secret's, if any
	pending int              // connects in flight
	events  chan event
	fatals  chan error     // what ends the whole session: the file changed
	readers sync.WaitGroup // control readers and connects

	deadline  time.Time     // when nodes still at work are failed; zero: not yet set
	firstOK   time.Duration // when the first node said it applied the package
	firstDone time.Duration // when the first node applied it, in what the seed saw itself (see applied)
	over      bool          // past the deadline: nothing new starts
	refused   []Peer        // found, but beyond MaxNodes

	children childGate   // who may connect to the seed's listener
	src      *fileSource // the package, as the seed's feeders read it
	up       *uplink     // paces the seed's flows to its children, and sees them stall
	stalls   []silence   // the seed's flows that take nothing, as of the last tick
	mu       sync.Mutex
	uploaded int64
	feeders  sync.WaitGroup
}

// RunSeed offers the package to every peer, streams it down a binary tree,
// repairs the tree when nodes fail or lag, attaches receivers that appear
// later, and returns when every node has a result. A cfg that does not
// validate is refused with its *ConfigError.
func RunSeed(ctx context.Context, cfg Config, opt SeedOptions) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	f, err := os.Open(opt.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		return nil, fmt.Errorf("listen for children: %w", err)
	}
	s := &seedRun{cfg: cfg, opt: opt, m: opt.Signed.Manifest, offer: opt.Signed.encode(), file: f, ln: ln, start: time.Now(), events: make(chan event, 64), fatals: make(chan error, 1)}
	s.src = newFileSource(f, s.m)
	rate, _ := ParseRate(cfg.MaxRate) // Validate checked it
	s.up = newUplink(rate)
	if s.keys, err = newKeys(opt.Secret, s.m.Session); err != nil {
		return nil, err
	}
	s.t = newTree(cfg.Trees, s.m.Size, s.m.ChunkSize, cfg.SlowAfter)
	for st := range s.t.stripes {
		s.t.stripeSize[st] = s.m.stripeBytes(s.t.stripes, st)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var acceptWG sync.WaitGroup
	acceptWG.Add(1)
	go func() {
		defer acceptWG.Done()
		s.acceptChildren(ctx)
	}()
	if s.in, err = listenInbox(opt.Secret); err != nil {
		opt.Log.Warn("nodes report over their connections", "err", err)
	} else {
		acceptWG.Add(1)
		go func() {
			defer acceptWG.Done()
			s.in.run(ctx, s.events)
		}()
	}
	stopFeeding := func() {
		cancel()
		ln.Close()
		if s.in != nil {
			s.in.close()
		}
		acceptWG.Wait()
		s.feeders.Wait()
	}
	defer stopFeeding()

	s.connectAll(ctx)
	var accepted []int
	for _, n := range s.nodes {
		if n.c != nil && n.state == stateActive {
			accepted = append(accepted, n.id)
		}
	}
	s.tell(s.t.plan(accepted, time.Now()), false)
	err = s.loop(ctx)
	for _, n := range s.nodes {
		if n.c == nil {
			continue
		}
		if err == nil {
			n.c.end()
		} else {
			n.c.close()
		}
	}
	stopFeeding()
	s.readers.Wait()
	// A connect that ended as the session did may have been handed on
	// (connectAll's forwarder, join) and never taken: its receiver would
	// wait on a silent seed for its timeout.
	for len(s.events) > 0 {
		if ev := <-s.events; ev.dial != nil {
			ev.dial.c.conn.Close()
		}
	}
	return s.report(), err
}

// tell sends one parent message for each move the tree made; a node out
// of the session or done with it, or one left waiting for a parent, is
// told nothing. Each says which children the node feeds in its tree, and
// a node still in the session whose children changed, moved or not, is
// told its parent again with them: a node feeds only the children it was
// given, and leaves once each says it holds its whole stripe (see
// feeding).
// Repairs are logged, the first plan is not.
func (s *seedRun) tell(moves []move, repair bool) {
	// A node's parents go in one write: a packet for all its trees.
	var told []*node
	frames := map[*node][]frame{}
	add := func(n *node, st, parent int) {
		pm := parentMsg{stripes: uint8(s.t.stripes), stripe: uint8(st), addr: n.seedAddr, feeds: s.t.feedsIn(n.id, st), kids: s.kidsOf(n, st)}
		n.kids[st] = pm.kids
		n.parents[st] = "seed"
		s.children.place(n.peer.ID, n.reachedAt, st, parent == seedID)
		if parent != seedID {
			p := s.nodes[parent-1]
			pm.id, pm.addr = p.peer.ID, p.peer.Addr
			n.parents[st] = p.peer.ID.String()
		}
		if _, ok := frames[n]; !ok {
			told = append(told, n)
			frames[n] = s.reportFrames(n, time.Now()) // with its first parent, where to report
		}
		frames[n] = append(frames[n], frame{typ: msgParent, payload: pm.encode()})
	}
	for _, m := range moves {
		n := s.nodes[m.node-1]
		if n.c == nil || n.state != stateActive {
			continue // out of the session, or done with it
		}
		if m.parent == noParent {
			s.opt.Log.Info("parents keep failing node: it waits", "node", n.label(), "stripe", m.stripe)
			continue
		}
		if repair {
			s.opt.Log.Info("re-parented", "node", n.label(), "stripe", m.stripe, "parent", s.parentLabel(m.parent))
		}
		add(n, m.stripe, m.parent)
	}
	if len(moves) > 0 {
		for _, n := range s.nodes {
			if n.c == nil || n.state != stateActive && n.state != stateOK || !s.t.in(n.id) {
				continue
			}
			for st := range s.t.stripes {
				if p := s.t.parentOf(n.id, st); p != noParent && !sameKids(s.kidsOf(n, st), n.kids[st]) {
					add(n, st, p)
				}
			}
		}
	}
	// Relays first, the shallowest first: a child that hears of its
	// parent before the parent hears of it waits for that word (see
	// feeding.admit), and near the seed that wait holds its subtree's
	// data back.
	slices.SortStableFunc(told, func(a, b *node) int { return cmp.Compare(s.relayDepth(a), s.relayDepth(b)) })
	for _, n := range told {
		if err := n.c.sendFrames(frames[n]...); err != nil {
			s.opt.Log.Debug("send parent", "node", n.label(), "err", err)
		}
	}
}

// relayDepth is n's least depth in a tree where it feeds children, or
// more than any depth if it feeds none.
func (s *seedRun) relayDepth(n *node) int {
	best := math.MaxInt
	for st := range s.t.stripes {
		if s.t.feedsIn(n.id, st) == 0 {
			continue
		}
		if d, ok := s.t.depth(n.id, st, noParent); ok {
			best = min(best, d)
		}
	}
	return best
}

// kidsOf is who n feeds in stripe st: each child by the id the seed knows
// it by and the address it reached it at, which its data connections
// come from.
func (s *seedRun) kidsOf(n *node, st int) []kid {
	kids := []kid{}
	for _, c := range s.t.childrenIn(n.id, st) {
		k := s.nodes[c-1]
		kids = append(kids, kid{id: k.peer.ID, addr: k.reachedAt})
	}
	return kids
}

// sameKids reports whether a and b name the same children, in any order.
func sameKids(a, b []kid) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		if !slices.Contains(b, c) {
			return false
		}
	}
	return true
}

// nodeFrameLimit bounds what a node may send the seed in one frame: its
// progress, a complaint or a result, with at most a few KiB of text.
const nodeFrameLimit = 16 << 10

// readNode forwards n's control frames to the loop. A node reporting by
// datagram may say nothing here all session: the loop judges it by what
// it hears of it either way (see tick), and closes the connection.
func (s *seedRun) readNode(ctx context.Context, n *node, c *ctrl) {
	for first := true; ; first = false {
		if !first {
			// The first wait leaves the handshake's acknowledgements
			// delayed (see controlDialer), for the frames that tell
			// the node its parents to carry; every later one is quick.
			quickAck(c.conn.Conn)
		}
		f, err := c.recvOnly(noIdleLimit, nodeFrameLimit, msgProgress, msgResult, msgComplain, msgPing)
		select {
		case s.events <- event{n: n, f: f, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// loop runs the session: it records progress and results, detects dead
// and slow nodes and re-parents their children, and attaches late
// receivers, until every node has a result.
func (s *seedRun) loop(ctx context.Context) error {
	tick := time.NewTicker(s.cfg.Heartbeat)
	defer tick.Stop()
	for !s.finished() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.fatals:
			return err
		case p := <-s.opt.Late:
			s.join(ctx, p)
		case ev := <-s.events:
			s.handle(ctx, ev)
		case <-tick.C:
			s.tick(time.Now())
		}
	}
	s.progress()
	return nil
}

// tick is the loop's heartbeat: it drops silent nodes, moves the children
// of relays silent for three quarters as long, or half as long and
// starved (see quietFor), pings the
// rest as often as each needs (see pingEvery), moves the children of slow
// relays, places the nodes whose wait for a parent is over, and reports
// progress.
func (s *seedRun) tick(now time.Time) {
	var quiet []*node
	connected := 0
	s.stalls = s.stalls[:0]
	for _, st := range s.up.stalls(now) {
		s.stalls = append(s.stalls, silence{peer: st.to.child, addr: st.to.addr, stripe: st.to.stripe, since: st.since})
	}
	for _, n := range s.nodes {
		if n.c == nil {
			continue
		}
		silent := now.Sub(n.lastSeen)
		if silent > s.cfg.DeadAfter {
			s.lost(n, fmt.Errorf("silent for %s", silent.Round(100*time.Millisecond)))
			continue
		}
		if deaf := n.deaf(now); deaf > deafAfter(s.cfg) {
			s.lost(n, fmt.Errorf("took nothing the seed sent it for %s", deaf.Round(100*time.Millisecond)))
			continue
		}
		connected++
		if silent > s.cfg.DeadAfter*quietFor/4 || silent > max(s.cfg.DeadAfter*starvedQuiet/8, n.every*3/2) && s.starved(n, now) {
			quiet = append(quiet, n)
		}
		if now.Sub(n.pinged) >= n.pingEvery {
			n.c.send(msgPing, nil)
			n.pinged = now
		}
	}
	s.checkReports(now)
	// When most nodes seem silent at once, the seed was slow to hear them.
	if len(quiet)*2 <= connected {
		for _, n := range quiet {
			if moves := s.t.hush(n.id, now); len(moves) > 0 {
				s.opt.Log.Warn("silent relay: moving its children", "node", n.label(), "silent", now.Sub(n.lastSeen).Round(100*time.Millisecond))
				s.tell(moves, true)
			}
		}
	}
	moves, slow := s.t.checkRates(now)
	for _, id := range slow {
		s.opt.Log.Warn("slow relay: moving its children", "node", s.nodes[id-1].label())
	}
	s.tell(moves, true)
	s.tell(s.t.retry(now), true)
	s.narrow()
	s.checkDeadline(now)
	s.progress()
}

// fatal ends the session from any goroutine.
func (s *seedRun) fatal(err error) {
	select {
	case s.fatals <- err:
	default:
	}
}

func (s *seedRun) finished() bool {
	if s.pending > 0 {
		return false
	}
	now := time.Now()
	waiting := s.waitingBusy(now)
	for _, n := range s.nodes {
		if n.state == stateActive || n.state == stateBusy && waiting || s.mayRejoin(n, now) {
			return false
		}
	}
	return true
}

// mayRejoin reports whether n was lost recently enough that the session
// still waits for it to come back.
func (s *seedRun) mayRejoin(n *node, now time.Time) bool {
	return !s.over && n.state == stateFailed && n.c == nil && !n.liar && !n.lostAt.IsZero() && now.Sub(n.lostAt) < s.opt.RejoinWait
}

func (s *seedRun) progress() {
	if s.opt.Progress == nil {
		return
	}
	p := SeedProgress{Nodes: len(s.nodes), Total: int64(len(s.nodes)) * s.m.Size}
	for _, n := range s.nodes {
		switch n.state {
		case stateOK:
			p.Done++
		case stateFailed:
			p.Failed++
		case stateBusy:
			p.Busy++
		}
		p.Verified += s.heldBytes(n)
	}
	s.opt.Progress(p)
}

func (s *seedRun) heldBytes(n *node) int64 {
	if n.state == stateOK {
		return s.m.Size
	}
	return n.held
}

func (s *seedRun) handle(ctx context.Context, ev event) {
	n := ev.n
	if ev.verdict != nil {
		s.judge(ev.verdict)
		return
	}
	if ev.connected {
		s.pending--
		if s.over && ev.err == nil {
			ev.dial.c.end()
			if n.state == stateActive {
				n.state, n.err = stateFailed, "timed out: came back after the session ended"
			}
			return
		}
		s.admit(ctx, n, ev.dial, ev.err)
		if ev.err == nil && n.state == stateActive {
			s.tell(s.t.join(n.id, time.Now()), true)
		}
		return
	}
	if n.c == nil {
		return // already dropped
	}
	if ev.err != nil {
		if n.state == stateOK {
			// Applied, and every child it was given holds its stripe:
			// it left (see feeding). A child that still needed it
			// complains, and moves then.
			n.c.close()
			s.retire(n)
			return
		}
		s.lost(n, ev.err)
		return
	}
	now := time.Now()
	var p progressMsg
	newer := false // a sound progress, fresh (see fresh); an earlier build's over TCP has no clock
	if ev.f.typ == msgProgress {
		var err error
		p, err = decodeProgress(ev.f.payload)
		newer = err == nil && (p.millis == 0 && ev.token == ([16]byte{}) || s.fresh(n, p.millis, now))
	}
	if ev.token != ([16]byte{}) {
		// A datagram under another token, or not the newest, keeps
		// nothing alive: it may be sent again, late, or by another.
		if !n.byDatagram || ev.token != n.token || !newer {
			return
		}
		n.viaDatagram = true
	}
	n.lastSeen = now
	s.t.heard(n.id)
	switch ev.f.typ {
	case msgProgress:
		if newer {
			s.progressFrom(n, p)
		}
	case msgResult:
		r, err := decodeResult(ev.f.payload)
		if err != nil {
			s.lost(n, err)
			return
		}
		n.received, n.seconds, n.output = int64(r.received), time.Since(s.start).Seconds(), r.output
		n.clock = max(n.clock, r.millis) // a progress written before it, handled after, is older
		if r.ok {
			n.state, n.held, n.flushed = stateOK, s.m.Size, r.flushed
			s.t.setHeld(n.id, s.m.Size)
			s.applied(time.Since(s.start))
			s.opt.Log.Info("node applied the package", "node", n.label(), "seconds", n.seconds)
			s.releaseDone(n)
		} else {
			n.state, n.err, n.failed = stateFailed, r.err, true
			s.opt.Log.Warn("node failed", "node", n.label(), "err", r.err)
			// If incomplete, it will never hold what its children wait for.
			s.tell(s.t.fail(n.id, time.Now()), true)
		}
	case msgComplain:
		if c, err := decodeComplain(ev.f.payload); err == nil {
			s.complaint(ctx, n, c)
		}
	case msgPing:
	default:
		s.lost(n, fmt.Errorf("sent an unexpected %s frame", ev.f.typ))
	}
}

// progressFrom takes p, fresh from n, as what n holds and how fast.
func (s *seedRun) progressFrom(n *node, p progressMsg) {
	n.clock = p.millis
	n.received = int64(p.received)
	s.t.setHeld(n.id, min(int64(p.held), s.m.Size))
	clock := n.lastSeen.Sub(s.start) // an earlier build's: the seed's clock
	if p.millis > 0 {
		clock = sessionTime(p.millis)
	}
	s.t.reported(n.id, clock, n.lastSeen)
	if len(p.stripes) == s.t.stripes {
		held := make([]int64, len(p.stripes))
		for st, h := range p.stripes {
			held[st] = int64(h)
		}
		s.t.setStripeHeld(n.id, held)
	}
	n.held = s.t.heldOf(n.id)
	n.stalls, n.starved = silences(n.stalls, p.stalls, n.lastSeen), silences(n.starved, p.starved, n.lastSeen)
	if !n.reported.IsZero() {
		n.every = max(n.lastSeen.Sub(n.reported), n.every*7/8)
	}
	n.reported = n.lastSeen
}

// releaseDone lets n go, and each parent of n, once it and all its
// children applied the package: nothing is left for it to relay, so a
// join exits now, not when the last machine is done, and its machine is
// free for the rest.
func (s *seedRun) releaseDone(n *node) {
	s.release(n)
	for st := range s.t.stripes {
		if p := s.t.parentOf(n.id, st); p != seedID && p != noParent {
			s.release(s.nodes[p-1])
		}
	}
}

func (s *seedRun) release(n *node) {
	if n.c == nil || n.state != stateOK || n.probing {
		return // a relay the seed is probing keeps its session until judged
	}
	for _, c := range s.t.childrenOf(n.id) {
		if s.nodes[c-1].state != stateOK {
			return
		}
	}
	n.c.end()
	s.retire(n)
}

// retire takes n, done, out of the session: it feeds no one again, and
// its children, done too, keep it as their parent on record.
func (s *seedRun) retire(n *node) {
	s.t.retire(n.id)
	n.c = nil
	s.stopReports(n)
}

// byID is the first node (in s.nodes) with receiver id id, or nil. The
// watch hands every receiver it finds to join twice a second, so this is
// a map, not a search of every node.
func (s *seedRun) byID(id NodeID) *node { return s.ids[id] }

// index lets byID find n, unless a node before it has its id.
func (s *seedRun) index(n *node) {
	if n.peer.ID == (NodeID{}) {
		return
	}
	if s.ids == nil {
		s.ids = make(map[NodeID]*node)
	}
	if _, ok := s.ids[n.peer.ID]; !ok {
		s.ids[n.peer.ID] = n
	}
}

// rename gives n the receiver id id, where no other node has it.
func (s *seedRun) rename(n *node, id NodeID) {
	old := n.peer.ID
	n.peer.ID = id
	if s.ids[old] == n {
		delete(s.ids, old)
		for _, m := range s.nodes {
			if m.peer.ID == old { // the first other node with n's old id
				s.ids[old] = m
				break
			}
		}
	}
	s.index(n)
}

// lost drops a node whose control connection failed or went silent, and
// moves its children to another parent. A node that already applied the
// package keeps its ok status; one that comes back may rejoin.
func (s *seedRun) lost(n *node, err error) {
	if n.state == stateActive {
		n.state, n.err = stateFailed, fmt.Sprintf("lost: %v", err)
		n.seconds = time.Since(s.start).Seconds()
		n.lostAt = time.Now()
		s.opt.Log.Warn("node lost", "node", n.label(), "err", err)
	}
	n.c.close()
	n.c = nil
	s.stopReports(n)
	s.tell(s.t.lose(n.id, n.liar, time.Now()), true)
}

func (s *seedRun) parentLabel(p int) string {
	if p == seedID {
		return "seed"
	}
	return s.nodes[p-1].label()
}

// acceptChildren serves the nodes whose parent is the seed.
func (s *seedRun) acceptChildren(ctx context.Context) {
	src := s.src
	// A pacer per tree: the seed's children in one tree are kept abreast,
	// but a slow root must not hold the other tree's root to its pace.
	// With two trees each has its own share of the seed's uplink, and a
	// slow root, held at the seed's feed, held back the healthy tree
	// (16 @ 100 Mbit/s, one root at 10: 2.40 x the fault-free time,
	// against 1.61 paced by tree).
	paces := make([]*pacer, s.t.stripes)
	for st := range paces {
		paces[st] = newFeedPacer(s.cfg, s.m.BlockSize)
	}
	rate, _ := ParseRate(s.cfg.MaxRate) // Validate checked it
	rcap := newRateCap(rate)
	slots := make(chan struct{}, 4*maxConns)
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !s.children.admit(conn) {
			conn.Close()
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			s.children.forget(conn)
			conn.Close()
			continue
		}
		s.feeders.Add(1)
		go func() {
			defer s.feeders.Done()
			defer func() { <-slots }()
			defer s.children.forget(conn)
			defer conn.Close()
			stop := closeOnDone(ctx, conn)
			defer stop()
			c := newCtrl(conn, s.cfg.DeadAfter)
			c.conn.until = time.Now().Add(proveWithin)
			p, err := c.expect(s.cfg.DeadAfter, msgHello)
			if err != nil {
				return
			}
			h, err := decodeHello(p)
			if err != nil || h.role != roleData {
				return
			}
			if err := s.keys.dataGreet(c, s.cfg.DeadAfter, h, NodeID{}, "seed"); err != nil {
				s.opt.Log.Debug("refused a child", "addr", conn.RemoteAddr(), "err", err)
				return
			}
			p, err = c.expectSized(s.cfg.DeadAfter, msgWant, wantLen(s.m))
			if err != nil {
				s.opt.Log.Debug("refused a child", "addr", conn.RemoteAddr(), "err", err)
				return
			}
			w, err := decodeWant(p)
			if err != nil || w.session != s.m.Session {
				c.send(msgRefuse, refuseMsg{code: refuseNoSession, reason: "no such session here"}.encode())
				return
			}
			if err := w.check(s.m); err != nil {
				c.send(msgRefuse, refuseMsg{code: refuseBadOffer, reason: err.Error()}.encode())
				return
			}
			if int(w.stripes) != s.t.stripes {
				c.send(msgRefuse, refuseMsg{code: refuseBadOffer, reason: fmt.Sprintf("want of stripe %d of %d in a session of %d", w.stripe, w.stripes, s.t.stripes)}.encode())
				return
			}
			placed, ok := s.children.take(h.id, int(w.stripe), conn)
			if !ok {
				c.send(msgRefuse, refuseMsg{code: refuseNoSession, reason: "the seed feeds no such node in this stripe"}.encode())
				return
			}
			defer placed()
			c.conn.until = time.Time{}
			s.children.forget(conn)
			pace := paces[int(w.stripe)%len(paces)]
			sent, err := feed(ctx, conn, src, pace, s.m, w, s.cfg, feedOptions{keys: s.keys, cap: rcap, up: s.up, child: h.id, compress: s.opt.Compress})
			if errors.Is(err, ErrSourceChanged) {
				s.fatal(err)
			}
			s.mu.Lock()
			s.uploaded += sent
			s.mu.Unlock()
			s.opt.Log.Debug("fed child from the seed", "addr", conn.RemoteAddr(), "bytes", sent, "err", err)
		}()
	}
}

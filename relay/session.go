package relay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// errNotTaken means an offer was refused before the session started.
var errNotTaken = errors.New("offer not taken")

// session is one package being received, relayed and applied here.
type session struct {
	cfg      Config
	opt      *ReceiverOptions
	ctx      context.Context
	applyCtx context.Context // outlives the session: losing the seed never stops an apply
	signed   *Signed
	keys     keys // the fleet secret's, if any
	m        *Manifest
	spool    *spool
	pace     *pacer         // keeps this node's children abreast
	up       *uplink        // paces each child's flow
	wg       sync.WaitGroup // every goroutine of the session, feeders included
	c        *ctrl
	start    time.Time
	recvd    atomic.Int64
	stripes  atomic.Int32   // how many stripes the seed splits the package into, once it said
	fed      fedBy          // when each stripe's parent last sent bytes
	result   chan resultMsg // the apply outcome, once
	resulted chan struct{}  // closed once the result frame is sent
	feeding  *feeding       // what this node owes its children
	lead     *rootLead      // a root's own stripe first on its link
	reports  chan reportMsg // where the seed says to send progress, for heartbeat
	output   outputTail     // the end of what the apply's command wrote
}

func (r *Receiver) refuse(c *ctrl, code uint8, err error) error {
	r.refusals.warn(r.opt.Log, c.conn.RemoteAddr(), "refused session", "seed", c.conn.RemoteAddr(), "reason", err)
	c.send(msgRefuse, refuseMsg{code: code, reason: clip(err.Error())}.encode())
	return fmt.Errorf("%w: %v", errNotTaken, err)
}

// take checks what an offer needs of this node (no rollback, room for the
// spool) and opens the spool. A session applied here already needs
// nothing: take returns errApplied; nor does a package applied here
// already with the same actions: errUpToDate.
func (r *Receiver) take(c *ctrl, signed *Signed) (*spool, error) {
	m := signed.Manifest
	if m.Group != r.opt.Group {
		return nil, r.refuse(c, refuseStale, fmt.Errorf("session for %s is for %s, and this node is in %s", m.Name, groupName(m.Group), groupName(r.opt.Group)))
	}
	switch err := checkApplied(r.opt.Dir, signed, r.opt.AllowDowngrade, r.opt.Actions); {
	case errors.Is(err, errApplied), errors.Is(err, errUpToDate):
		return nil, err
	case err != nil:
		return nil, r.refuse(c, refuseStale, err)
	}
	open := openSpool
	if r.opt.Write != "" {
		open = func(dir string, m *Manifest) (*spool, error) { return openTarget(dir, r.opt.Write, m) }
	}
	if r.opt.Write != "" || r.opt.Stream != nil {
		// Blocks land on the target, or in the command, as they come.
		if err := recordChanging(r.opt.Dir, signed); err != nil {
			return nil, r.refuse(c, refuseLocal, err)
		}
	}
	sp, err := open(r.opt.Dir, m)
	var ns *noSpaceError
	if errors.As(err, &ns) || errors.Is(err, ErrTargetTooSmall) {
		return nil, r.refuse(c, refuseNoSpace, err)
	}
	if err != nil {
		return nil, r.refuse(c, refuseLocal, fmt.Errorf("open spool: %w", err))
	}
	return sp, nil
}

func groupName(g string) string {
	if g == "" {
		return "no group"
	}
	return fmt.Sprintf("group %q", g)
}

// session runs one offered session to its end.
func (r *Receiver) session(ctx context.Context, o offered) (Result, error) {
	c, m, conn := o.c, o.signed.Manifest, o.c.conn
	defer c.done()
	sp, err := r.take(c, o.signed)
	if errors.Is(err, errApplied) || errors.Is(err, errUpToDate) {
		return r.appliedBefore(c, o.signed, errors.Is(err, errUpToDate))
	}
	if err != nil {
		return Result{}, err
	}
	resumed := sp.heldBytes()
	k, err := newKeys(r.opt.Secret, m.Session)
	if err != nil {
		sp.close()
		return Result{}, err
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &session{cfg: r.cfg, opt: &r.opt, ctx: sctx, applyCtx: ctx, signed: o.signed, keys: k, m: m, spool: sp, pace: newFeedPacer(r.cfg, m.BlockSize), up: newUplink(r.cap.bytesPerSecond()), c: c, start: time.Now(), result: make(chan resultMsg, 1), resulted: make(chan struct{}), feeding: newFeeding(), lead: newRootLead(sp, r.cfg), reports: make(chan reportMsg, 1)}
	// Children may ask for the session as soon as the seed hears the
	// accept: it is in place before.
	r.mu.Lock()
	r.cur = s
	r.mu.Unlock()
	if err := c.send(msgAccept, acceptMsg{held: uint64(resumed), seedTimeout: r.cfg.SeedTimeout, datagrams: true}.encode()); err != nil {
		r.mu.Lock()
		r.cur = nil
		r.mu.Unlock()
		cancel()
		sp.close()
		return Result{}, fmt.Errorf("accept session: %w", err)
	}
	if r.opt.Busy != nil {
		r.opt.Busy(true)
		defer r.opt.Busy(false)
	}
	r.opt.Log.Info("session started", "package", m.Name, "size", m.Size, "seed", conn.RemoteAddr(), "resumed_bytes", resumed)

	stopClose := closeOnDone(sctx, conn)
	endErr := s.run()

	r.mu.Lock()
	r.cur = nil
	r.mu.Unlock()
	cancel()
	stopClose()
	s.wg.Wait()

	res := Result{
		Package:  Package{Path: sp.path, Name: m.Name, Size: m.Size, SHA256: m.SumHex()},
		Received: s.recvd.Load(),
		Resumed:  resumed,
		Empty:    sp.zeroHeld(),
		Duration: time.Since(s.start),
	}
	var out resultMsg
	select {
	case out = <-s.result:
	default:
		out = resultMsg{err: "session ended before the package was complete"}
	}
	switch {
	case out.ok:
		// Applied: the spool goes (written in place, the apply flushed
		// it), so it is not flushed first: on a disk that would write out
		// what is about to be deleted.
		if endErr != nil {
			r.opt.Log.Warn("applied, but the seed may not know", "package", m.Name, "err", endErr)
		}
		sp.remove()
		removeStaleSpools(r.opt.Dir, r.opt.Log)
	case endErr != nil:
		syncErr := sp.sync()
		sp.close()
		res.Err = endErr
		if syncErr == nil {
			r.opt.Log.Info("spool kept for resume", "path", sp.path)
		}
	default:
		sp.sync()
		sp.close()
		res.Err = errors.New(out.err)
	}
	return res, nil
}

// appliedBefore answers a session applied here already, or one of the
// package applied here already with the same actions (upToDate):
// accepted, applied, nothing fetched or run again; then it waits for the
// seed to end it. An up-to-date session is recorded as the last applied,
// as if it had been: the package in place is the one it names.
func (r *Receiver) appliedBefore(c *ctrl, signed *Signed, upToDate bool) (Result, error) {
	m := signed.Manifest
	res := Result{Package: Package{Name: m.Name, Size: m.Size, SHA256: m.SumHex()}, Already: !upToDate, UpToDate: upToDate}
	if upToDate {
		r.opt.Log.Info("package up to date: applied here already with the same actions", "package", m.Name, "seed", c.conn.RemoteAddr())
		if err := recordApplied(r.opt.Dir, signed, r.opt.Actions); err != nil {
			r.opt.Log.Warn("could not record the session as the last applied; an older one would not be refused", "err", err)
		}
	} else {
		r.opt.Log.Info("session applied here already", "package", m.Name, "seed", c.conn.RemoteAddr())
	}
	if err := c.send(msgAccept, acceptMsg{held: uint64(m.Size), applied: true, upToDate: upToDate, seedTimeout: r.cfg.SeedTimeout}.encode()); err != nil {
		return Result{}, fmt.Errorf("accept session: %w", err)
	}
	// The seed has nothing more for this node: it ends the connection, or
	// the node leaves after DeadAfter, which the seed takes as an end. A
	// host that replays an offer applied here, and pings, holds the node
	// no longer than that from a newer session.
	c.conn.until = time.Now().Add(r.cfg.DeadAfter)
	for {
		f, err := c.recvOnly(r.cfg.SeedTimeout, maxControlLen, msgPing, msgEnd, msgParent)
		if err != nil || f.typ == msgEnd {
			return res, nil
		}
	}
}

// run drives the session until the seed ends it or is lost, or this node
// has nothing left to do in it (see feeding).
func (s *session) run() error {
	parents := make(chan parentMsg, 8)
	ended := make(chan error, 1)
	left := make(chan struct{})
	s.wg.Add(6)
	go func() {
		defer s.wg.Done()
		if s.leaveWhenSettled(s.ctx, s.resulted) {
			close(left)
		}
	}()
	go func() {
		defer s.wg.Done()
		ended <- s.readControl(parents)
	}()
	go func() {
		defer s.wg.Done()
		s.heartbeat()
	}()
	go func() {
		defer s.wg.Done()
		s.keepDurable()
	}()
	go func() {
		defer s.wg.Done()
		if s.opt.FaultSilent {
			for {
				select {
				case <-parents:
				case <-s.ctx.Done():
					return
				}
			}
		}
		s.fetchLoop(parents)
	}()
	go func() {
		defer s.wg.Done()
		if !s.opt.FaultSilent {
			s.applyWhenComplete()
		}
	}()
	select {
	case err := <-ended:
		return err
	case <-left:
		s.opt.Log.Debug("left the session: applied, and every child holds its whole stripe")
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// readControl handles the seed's messages; it returns nil on end.
func (s *session) readControl(parents chan<- parentMsg) error {
	for {
		f, err := s.c.recvOnly(s.cfg.SeedTimeout, maxControlLen, msgPing, msgEnd, msgParent, msgReport)
		if err != nil {
			if s.ctx.Err() != nil {
				return s.ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("%w: %s was silent for %s", ErrSeedLost, s.c.conn.RemoteAddr(), s.cfg.SeedTimeout)
			}
			return fmt.Errorf("%w: %v", ErrSeedLost, err)
		}
		switch f.typ {
		case msgPing:
		case msgEnd:
			return nil
		case msgParent:
			p, err := decodeParent(f.payload)
			if err != nil {
				return err
			}
			s.stripes.Store(int32(p.stripes))
			s.feeding.owe(p.stripe, p.feeds, p.kids)
			s.lead.named(p)
			select {
			case parents <- p:
			case <-s.ctx.Done():
				return s.ctx.Err()
			}
		case msgReport:
			m, err := decodeReport(f.payload)
			if err != nil {
				return err
			}
			select {
			case s.reports <- m:
			case <-s.ctx.Done():
				return s.ctx.Err()
			}
		default:
			return fmt.Errorf("seed sent an unexpected %s frame", f.typ)
		}
	}
}

// fetchLoop keeps one fetch per stripe running from the latest parent the
// seed named for it, and tells the seed when a parent fails us.
func (s *session) fetchLoop(parents <-chan parentMsg) {
	self := helloMsg{role: roleData, id: s.opt.ID, name: s.opt.Name}
	type running struct {
		cancel context.CancelFunc
		done   chan struct{} // closed when the fetch returned
		gen    int
	}
	cur := map[uint8]running{}
	type outcome struct {
		p   parentMsg
		gen int
		err error
	}
	outcomes := make(chan outcome)
	var wg sync.WaitGroup
	defer wg.Wait()
	gen := 0
	// named is the parent last named for each stripe, and failed whether
	// its fetch ended in a complaint: the seed names the parent a node
	// has again only to say how many children it feeds now, or, after a
	// complaint, to have it tried again.
	named := map[uint8]parentMsg{}
	failed := map[uint8]bool{}
	for {
		select {
		case <-s.ctx.Done():
			for _, f := range cur {
				f.cancel()
			}
			return
		case p := <-parents:
			if was, ok := named[p.stripe]; ok && was.id == p.id && was.addr == p.addr && !failed[p.stripe] {
				continue
			}
			named[p.stripe], failed[p.stripe] = p, false
			if s.opt.FaultAccuse && p.id != (NodeID{}) {
				s.c.send(msgComplain, complainMsg{parent: p.id, kind: complainCorrupt, block: uint32(p.stripe), stripe: p.stripe, detail: "fault injection: a forged complaint"}.encode())
				continue
			}
			if f, ok := cur[p.stripe]; ok {
				// The old fetch ends before the new one asks for what is
				// missing, so no block is sent twice.
				f.cancel()
				<-f.done
			}
			gen++
			fctx, cancel := context.WithCancel(s.ctx)
			f := running{cancel: cancel, done: make(chan struct{}), gen: gen}
			cur[p.stripe] = f
			wg.Add(1)
			go func(p parentMsg) {
				defer wg.Done()
				s.fed.start(p)
				err := fetch(fctx, p, self, s.spool, s.cfg, s.keys, func(n int) { s.recvd.Add(int64(n)) }, func() { s.fed.heard(p.stripe) }, func() bool {
					long := s.lead.hold(fctx, int(p.stripe))
					if long {
						s.fed.heard(p.stripe) // its bytes wait here, unread: it does not starve this node
					}
					return long
				})
				s.fed.stop(p.stripe)
				close(f.done)
				select {
				case outcomes <- outcome{p, f.gen, err}:
				case <-s.ctx.Done():
				}
			}(p)
		case o := <-outcomes:
			f, ok := cur[o.p.stripe]
			if !ok || f.gen != o.gen {
				continue // replaced by a newer parent
			}
			f.cancel()
			delete(cur, o.p.stripe)
			if o.err == nil {
				s.opt.Log.Info("stripe complete", "stripe", o.p.stripe, "parent", o.p.addr, "after", time.Since(s.start).Round(time.Millisecond))
			}
			if o.err == nil || s.ctx.Err() != nil {
				continue
			}
			failed[o.p.stripe] = true
			var fe *fetchError
			if !errors.As(o.err, &fe) {
				s.fail(o.err)
				continue
			}
			s.opt.Log.Warn("parent failed", "parent", o.p.addr, "err", o.err)
			s.c.send(msgComplain, complainMsg{parent: o.p.id, kind: fe.kind, block: fe.block, detail: clip(o.err.Error()), stripe: o.p.stripe}.encode())
		}
	}
}

// progressEvery is how often the seed hears this node's progress: every
// heartbeat, or every DeadAfter/4 when that is longer (a quarter of the
// time the seed waits on a silent node). Each progress frame costs the
// seed an acknowledgement on its uplink: at 128 nodes and 4 Mbit/s, one
// every 500 ms from each was 3 % of what the seed could send.
func (s *session) progressEvery() time.Duration {
	return max(s.cfg.Heartbeat, s.cfg.DeadAfter/4)
}

// fail reports a local failure (a full disk, say) as this node's result.
func (s *session) fail(err error) {
	s.opt.Log.Error("session failed here", "err", err)
	out := resultMsg{err: clip(err.Error()), received: uint64(s.recvd.Load()), millis: uint64(time.Since(s.start).Milliseconds())}
	select {
	case s.result <- out:
		s.c.send(msgResult, out.encode())
	default:
	}
}

// heartbeat reports progress to the seed every progressEvery, on the
// heartbeat that ends it (the seed counts a report late half a heartbeat
// after it is due), and at once when a flow to a child stalls or a parent
// falls silent, or the seed says where to report; that is also how the
// seed knows this node is alive. Reports go by datagram where the seed
// says so (see outbox), else over the control connection. It shows
// progress here every heartbeat.
func (s *session) heartbeat() {
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	var out *outbox
	defer func() {
		if out != nil {
			out.close()
		}
	}()
	// The accept said what this node holds: the first report is due a
	// period on, by when the seed has said where to send it.
	lastSent := time.Now()
	told := 0 // stalled flows and silent parents the last report named
	every := s.progressEvery()
	for {
		held := s.spool.heldBytes()
		now := time.Now()
		stalls, starved := s.up.stalls(now), s.fed.starved(now, s.starvedAfter())
		if now.Sub(lastSent) >= every-s.cfg.Heartbeat/2 || len(stalls)+len(starved) > told {
			pm := progressMsg{held: uint64(held), received: uint64(s.recvd.Load()), stripes: s.spool.stripeHeld(int(s.stripes.Load())), millis: uint64(max(now.Sub(s.start).Milliseconds(), 1))}
			for _, st := range stalls {
				pm.stalls = append(pm.stalls, stallReport{peer: st.to.child, addr: st.to.addr, stripe: st.to.stripe, millis: millisSince(now, st.since)})
			}
			pm.starved = starved
			if err := s.report(&out, pm.encode()); err != nil {
				s.opt.Log.Debug("progress", "err", err)
			}
			lastSent, told = now, len(stalls)+len(starved)
		}
		if s.opt.Progress != nil {
			s.opt.Progress(ReceiverProgress{Name: s.m.Name, Size: s.m.Size, Verified: held, Applied: len(s.result) > 0})
		}
		select {
		case <-t.C:
		case m := <-s.reports:
			if out != nil {
				out.close()
				out = nil
			}
			if m.port != 0 {
				o, err := dialOutbox(s.c.conn, m, s.keys.secret)
				if err != nil {
					s.opt.Log.Info("progress goes over the seed's connection", "err", err)
				}
				out = o
			}
			lastSent = time.Time{} // report at once, the new way: the seed is waiting to hear
		case <-s.ctx.Done():
			return
		}
	}
}

// report sends a progress payload by *out, or over the control connection
// when there is none or it fails (then for good).
func (s *session) report(out **outbox, p []byte) error {
	if *out != nil {
		err := (*out).send(p)
		if err == nil {
			return nil
		}
		s.opt.Log.Info("progress goes over the seed's connection", "err", err)
		(*out).close()
		*out = nil
	}
	return s.c.send(msgProgress, p)
}

func millisSince(now, t time.Time) uint32 {
	return uint32(min(max(now.Sub(t).Milliseconds(), 0), math.MaxUint32))
}

// fedBy is, per stripe, the parent this node fetches from and when bytes
// last came from it (zero: no fetch runs).
type fedBy struct {
	mu     sync.Mutex
	parent [maxStripes]NodeID
	at     [maxStripes]time.Time
}

func (f *fedBy) start(p parentMsg) {
	if int(p.stripe) >= maxStripes {
		return // a layout this build does not split into: nothing to say of it
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.parent[p.stripe], f.at[p.stripe] = p.id, time.Now()
}

func (f *fedBy) heard(stripe uint8) {
	if int(stripe) >= maxStripes {
		return
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at[stripe] = now
}

func (f *fedBy) stop(stripe uint8) {
	if int(stripe) >= maxStripes {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at[stripe] = time.Time{}
}

// starved names the parents that have sent nothing, not even a ping, for
// after.
func (f *fedBy) starved(now time.Time, after time.Duration) []stallReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []stallReport
	for st, at := range f.at {
		if !at.IsZero() && now.Sub(at) >= after {
			out = append(out, stallReport{peer: f.parent[st], stripe: uint8(st), millis: millisSince(now, at)})
		}
	}
	return out
}

// starvedAfter is how long a parent may send nothing, not even a ping,
// before this node says so in its progress: a live parent sends at least a
// ping every heartbeat, so two heartbeats, and no sooner than a sender
// finds a flow stalled. The seed weighs it with the parent's own silence
// (see seedRun.starved).
func (s *session) starvedAfter() time.Duration { return max(stallAfter, 2*s.cfg.Heartbeat) }

// syncEvery is how often held blocks are made durable: a crash loses at
// most this much of the transfer.
const syncEvery = time.Second

// keepDurable makes held blocks durable every syncEvery, apart from the
// heartbeat: on a busy disk a sync takes seconds, and a progress report
// held up that long makes the seed take this node for silent.
func (s *session) keepDurable() {
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		if err := s.spool.sync(); err != nil {
			s.opt.Log.Warn("spool state not saved", "err", err)
		}
	}
}

// applyWhenComplete waits for the last block, applies the package and
// reports the result. Every block was checked against the signed
// manifest on arrival, so the whole file is verified once it is complete.
func (s *session) applyWhenComplete() {
	streamed := make(chan error, 1)
	if s.opt.Stream != nil {
		go func() { streamed <- s.stream() }()
	} else {
		streamed <- nil
	}
	checked := make(chan bool, 1)
	if s.opt.ReadBack && !s.spool.target {
		go func() { checked <- s.readBack() }()
	} else {
		checked <- false
	}
	if err := s.spool.waitComplete(s.ctx); err != nil {
		<-streamed // stopped: the session ended before the package was whole
		<-checked
		return
	}
	err := <-streamed
	ok := <-checked
	if err == nil {
		err = s.apply(ok)
	}
	if err != nil && s.applyCtx.Err() != nil {
		// Stopped here, not failed: the seed finds the node lost and may
		// wait for it to come back and apply what it holds.
		s.opt.Log.Info("apply stopped", "package", s.m.Name, "err", err)
		return
	}
	out := resultMsg{ok: err == nil, received: uint64(s.recvd.Load()), millis: uint64(time.Since(s.start).Milliseconds()), flushed: err == nil && s.spool.target, output: s.output.String()}
	if err != nil {
		out.err = clip(err.Error())
		s.opt.Log.Error("apply failed", "package", s.m.Name, "err", err)
	} else {
		s.opt.Log.Info("applied", "package", s.m.Name)
	}
	select {
	case s.result <- out:
	default:
		return // a local failure was already reported
	}
	if err := s.c.send(msgResult, out.encode()); err != nil {
		s.opt.Log.Warn("result not delivered", "err", err)
		return
	}
	if out.ok {
		close(s.resulted)
	}
}

// apply applies the complete package; checked says the file was read back
// and matched.
func (s *session) apply(checked bool) error {
	if s.spool.target {
		// Written as it came: on stable storage before it counts as applied.
		if err := s.spool.f.Sync(); err != nil {
			return fmt.Errorf("flush %s: %w", s.spool.path, err)
		}
	}
	pkg := Package{Path: s.spool.path, Name: s.m.Name, Size: s.m.Size, SHA256: s.m.SumHex(), Checked: checked, Output: &s.output}
	if err := recordChanging(s.opt.Dir, s.signed); err != nil {
		return err
	}
	if err := s.opt.Apply(s.applyCtx, pkg); err != nil {
		return err
	}
	if err := recordApplied(s.opt.Dir, s.signed, s.opt.Actions); err != nil {
		s.opt.Log.Warn("could not record the applied session; a replay would not be refused", "err", err)
	}
	return nil
}

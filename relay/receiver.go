package relay

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Package is a verified file ready to apply.
type Package struct {
	Path   string // the verified file; valid until Apply returns
	Name   string
	Size   int64
	SHA256 string // lowercase hex
}

// ReceiverOptions says who a receiver is and what it does with a package.
type ReceiverOptions struct {
	ID   NodeID
	Name string
	Dir  string // spool and state
	// Apply installs a verified package. It runs while the relay to
	// children goes on; its error is this node's failure only.
	Apply func(ctx context.Context, pkg Package) error
	// Trust decides whether a seed's key may start a session here.
	// Nil trusts any seed whose manifest signature verifies.
	Trust func(key ed25519.PublicKey) error
	// AllowDowngrade accepts a session older than the last one applied here
	// for the same package name, or a replay of it.
	AllowDowngrade bool
	// CorruptChunk, for fault-injection tests only, flips a bit in every
	// chunk it returns true for before relaying it to a child.
	CorruptChunk func(i int) bool
	Log          *slog.Logger
	// Progress, if set, is called about every heartbeat during a session.
	Progress func(ReceiverProgress)
	// Busy, if set, is called when a session starts (true) and ends (false).
	Busy func(bool)
}

// ReceiverProgress is a receiver's view of its current session.
type ReceiverProgress struct {
	Name     string
	Size     int64
	Verified int64 // bytes verified and held
	Applied  bool
}

// Result is how one session ended on this receiver.
type Result struct {
	Package  Package
	Err      error // nil: applied
	Received int64 // bytes downloaded in this session
	Resumed  int64 // bytes already held from an earlier session
	Duration time.Duration
}

// ErrSeedLost ends a session whose seed went silent or hung up before
// saying the session was over.
var ErrSeedLost = errors.New("lost the seed")

// Receiver accepts sessions from seeds and relays them to children.
type Receiver struct {
	cfg Config
	opt ReceiverOptions
	ln  net.Listener

	controls chan net.Conn // control connections whose hello was read
	mu       sync.Mutex
	cur      *session // the session in progress, if any
	wg       sync.WaitGroup
	done     chan struct{}
	once     sync.Once
}

// NewReceiver listens on cfg.Listen and starts accepting connections.
func NewReceiver(cfg Config, opt ReceiverOptions) (*Receiver, error) {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Apply == nil {
		return nil, errors.New("receiver needs an apply function")
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	r := &Receiver{cfg: cfg, opt: opt, ln: ln, controls: make(chan net.Conn), done: make(chan struct{})}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Port is the TCP port to announce.
func (r *Receiver) Port() int { return r.ln.Addr().(*net.TCPAddr).Port }

// Close stops accepting and waits for every connection handler. Idempotent.
func (r *Receiver) Close() error {
	r.once.Do(func() {
		close(r.done)
		r.ln.Close()
	})
	r.wg.Wait()
	return nil
}

// maxConns bounds the connections a receiver serves at once.
const maxConns = 64

func (r *Receiver) accept() {
	defer r.wg.Done()
	slots := make(chan struct{}, maxConns)
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			select {
			case <-r.done:
				return
			default:
			}
			r.opt.Log.Debug("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			r.opt.Log.Warn("too many connections; closing one", "from", conn.RemoteAddr())
			conn.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { <-slots }()
			r.handle(conn)
		}()
	}
}

// handle reads the hello and routes the connection by role.
func (r *Receiver) handle(conn net.Conn) {
	c := &ctrl{conn: conn, timeout: r.cfg.DeadAfter}
	p, err := c.expect(r.cfg.DeadAfter, msgHello)
	var h helloMsg
	if err == nil {
		h, err = decodeHello(p)
	}
	switch {
	case err != nil:
		r.opt.Log.Debug("rejected connection", "from", conn.RemoteAddr(), "err", err)
	case h.role == roleData:
		r.serveChild(c, h)
	case r.handOver(conn):
		return // Next owns it now
	default:
		c.send(msgWelcome, welcomeMsg{id: r.opt.ID, name: r.opt.Name, busy: true}.encode())
		c.send(msgRefuse, refuseMsg{code: refuseBusy, reason: "busy with another session"}.encode())
	}
	conn.Close()
}

// handOver passes a seed's control connection to Next. Between two
// sessions Next may take a moment to ask for the next one; during a
// session the answer is no at once.
func (r *Receiver) handOver(conn net.Conn) bool {
	r.mu.Lock()
	busy := r.cur != nil
	r.mu.Unlock()
	wait := 2 * time.Second
	if busy {
		wait = 0
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r.controls <- conn:
		return true
	case <-t.C:
		return false
	case <-r.done:
		return false
	}
}

// serveChild feeds a child that asks for chunks of the current session.
func (r *Receiver) serveChild(c *ctrl, h helloMsg) {
	p, err := c.expect(r.cfg.DeadAfter, msgWant)
	if err != nil {
		return
	}
	w, err := decodeWant(p)
	if err != nil {
		c.send(msgRefuse, refuseMsg{code: refuseBadOffer, reason: err.Error()}.encode())
		return
	}
	r.mu.Lock()
	s := r.cur
	if s == nil || s.m.Session != w.session {
		r.mu.Unlock()
		c.send(msgRefuse, refuseMsg{code: refuseNoSession, reason: "no such session here"}.encode())
		return
	}
	s.wg.Add(1)
	r.mu.Unlock()
	defer s.wg.Done()
	stop := closeOnDone(s.ctx, c.conn)
	defer stop()
	sent, err := feed(s.ctx, c.conn, s.spool, s.paces.of(w.stripe), s.m, w, r.cfg, r.opt.CorruptChunk)
	r.opt.Log.Debug("fed child", "child", NodeID(h.id).Short(), "name", h.name, "bytes", sent, "err", err)
}

// Next waits for one session, takes part in it until the seed ends it,
// and returns this node's result. Offers that are refused (untrusted,
// expired, too large) are logged and do not end the wait.
func (r *Receiver) Next(ctx context.Context) (Result, error) {
	for {
		var conn net.Conn
		select {
		case conn = <-r.controls:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-r.done:
			return Result{}, net.ErrClosed
		}
		res, err := r.session(ctx, conn)
		if errors.Is(err, errNotTaken) {
			continue
		}
		return res, err
	}
}

// errNotTaken means an offer was refused before the session started.
var errNotTaken = errors.New("offer not taken")

// session is one package being received, relayed and applied here.
type session struct {
	ctx    context.Context
	m      *Manifest
	spool  *spool
	paces  *pacers
	wg     sync.WaitGroup // every goroutine of the session, feeders included
	c      *ctrl
	start  time.Time
	recvd  atomic.Int64
	result chan resultMsg // the apply outcome, once
}

func (r *Receiver) refuse(c *ctrl, code uint8, err error) error {
	r.opt.Log.Warn("refused session", "seed", c.conn.RemoteAddr(), "reason", err)
	c.send(msgRefuse, refuseMsg{code: code, reason: clip(err.Error())}.encode())
	return fmt.Errorf("%w: %v", errNotTaken, err)
}

// offer checks a session offer: signature, trust, expiry, disk space.
func (r *Receiver) offer(c *ctrl) (*Manifest, *spool, error) {
	if err := c.send(msgWelcome, welcomeMsg{id: r.opt.ID, name: r.opt.Name}.encode()); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errNotTaken, err)
	}
	f, err := c.recv(r.cfg.DeadAfter)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read offer: %v", errNotTaken, err)
	}
	if f.typ != msgOffer {
		return nil, nil, r.refuse(c, refuseBadOffer, fmt.Errorf("expected an offer, got %s", f.typ))
	}
	signed, err := decodeSigned(f.payload)
	if err != nil {
		return nil, nil, r.refuse(c, refuseBadOffer, err)
	}
	if r.opt.Trust != nil {
		if err := r.opt.Trust(signed.Key); err != nil {
			return nil, nil, r.refuse(c, refuseUntrusted, err)
		}
	}
	m := signed.Manifest
	if now := time.Now(); now.After(m.Expires) {
		return nil, nil, r.refuse(c, refuseStale, fmt.Errorf("session for %s expired at %s", m.Name, m.Expires.Format(time.RFC3339)))
	}
	if !r.opt.AllowDowngrade {
		if err := checkRollback(r.opt.Dir, m); err != nil {
			return nil, nil, r.refuse(c, refuseStale, err)
		}
	}
	sp, err := openSpool(r.opt.Dir, m)
	var ns *noSpaceError
	if errors.As(err, &ns) {
		return nil, nil, r.refuse(c, refuseNoSpace, err)
	}
	if err != nil {
		return nil, nil, r.refuse(c, refuseLocal, fmt.Errorf("open spool: %w", err))
	}
	return m, sp, nil
}

// session runs one offered session on conn to its end.
func (r *Receiver) session(ctx context.Context, conn net.Conn) (Result, error) {
	defer conn.Close()
	c := &ctrl{conn: conn, timeout: r.cfg.DeadAfter}
	m, sp, err := r.offer(c)
	if err != nil {
		return Result{}, err
	}
	held, _ := sp.held()
	resumed := int64(0)
	if held > 0 {
		resumed = int64(held) * int64(m.ChunkSize)
		if resumed > m.Size {
			resumed = m.Size
		}
	}
	if err := c.send(msgAccept, acceptMsg{have: uint32(held)}.encode()); err != nil {
		sp.close()
		return Result{}, fmt.Errorf("accept session: %w", err)
	}
	if r.opt.Busy != nil {
		r.opt.Busy(true)
		defer r.opt.Busy(false)
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &session{ctx: sctx, m: m, spool: sp, paces: newPacers(r.cfg), c: c, start: time.Now(), result: make(chan resultMsg, 1)}
	r.mu.Lock()
	r.cur = s
	r.mu.Unlock()
	r.opt.Log.Info("session started", "package", m.Name, "size", m.Size, "seed", conn.RemoteAddr(), "resumed_chunks", held)

	stopClose := closeOnDone(sctx, conn)
	endErr := r.run(s)

	r.mu.Lock()
	r.cur = nil
	r.mu.Unlock()
	cancel()
	stopClose()
	s.wg.Wait()
	syncErr := sp.sync()

	res := Result{
		Package:  Package{Path: sp.path, Name: m.Name, Size: m.Size, SHA256: m.SumHex()},
		Received: s.recvd.Load(),
		Resumed:  resumed,
		Duration: time.Since(s.start),
	}
	var out resultMsg
	select {
	case out = <-s.result:
	default:
		out = resultMsg{err: "session ended before the package was complete"}
	}
	switch {
	case endErr != nil:
		sp.close()
		res.Err = endErr
		if syncErr == nil {
			r.opt.Log.Info("spool kept for resume", "path", sp.path)
		}
	case out.ok:
		sp.remove()
		removeStaleSpools(r.opt.Dir, r.opt.Log)
	default:
		sp.close()
		res.Err = errors.New(out.err)
	}
	return res, nil
}

// run drives the session until the seed ends it or is lost.
func (r *Receiver) run(s *session) error {
	self := helloMsg{role: roleData, id: r.opt.ID, name: r.opt.Name}
	parents := make(chan parentMsg, 8)
	ended := make(chan error, 1)

	s.wg.Add(1)
	go func() { // control reader
		defer s.wg.Done()
		ended <- r.readControl(s, parents)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.heartbeat(s)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.fetchLoop(s, self, parents)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.applyWhenComplete(s)
	}()
	select {
	case err := <-ended:
		return err
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// readControl handles the seed's messages; it returns nil on end.
func (r *Receiver) readControl(s *session, parents chan<- parentMsg) error {
	for {
		f, err := s.c.recv(r.cfg.SeedTimeout)
		if err != nil {
			if s.ctx.Err() != nil {
				return s.ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("%w: %s was silent for %s", ErrSeedLost, s.c.conn.RemoteAddr(), r.cfg.SeedTimeout)
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
			select {
			case parents <- p:
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
func (r *Receiver) fetchLoop(s *session, self helloMsg, parents <-chan parentMsg) {
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
	for {
		select {
		case <-s.ctx.Done():
			for _, f := range cur {
				f.cancel()
			}
			return
		case p := <-parents:
			if f, ok := cur[p.stripe]; ok {
				// The old fetch ends before the new one asks for what is
				// missing, so no chunk is sent twice.
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
				err := fetch(fctx, p, self, s.spool, r.cfg, func(n int) { s.recvd.Add(int64(n)) })
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
			if o.err == nil || s.ctx.Err() != nil {
				continue
			}
			var fe *fetchError
			if !errors.As(o.err, &fe) {
				r.fail(s, o.err)
				continue
			}
			r.opt.Log.Warn("parent failed", "parent", o.p.addr, "err", o.err)
			s.c.send(msgComplain, complainMsg{parent: o.p.id, kind: fe.kind, chunk: fe.chunk, detail: clip(o.err.Error()), stripe: o.p.stripe}.encode())
		}
	}
}

// fail reports a local failure (a full disk, say) as this node's result.
func (r *Receiver) fail(s *session, err error) {
	r.opt.Log.Error("session failed here", "err", err)
	out := resultMsg{err: clip(err.Error()), received: uint64(s.recvd.Load()), millis: uint64(time.Since(s.start).Milliseconds())}
	select {
	case s.result <- out:
		s.c.send(msgResult, out.encode())
	default:
	}
}

// heartbeat reports progress to the seed, which is also how the seed
// knows this node is alive, and makes held chunks durable.
func (r *Receiver) heartbeat(s *session) {
	t := time.NewTicker(r.cfg.Heartbeat)
	defer t.Stop()
	lastSync := time.Now()
	for {
		held, _ := s.spool.held()
		if err := s.c.send(msgProgress, progressMsg{have: uint32(held), received: uint64(s.recvd.Load())}.encode()); err != nil {
			r.opt.Log.Debug("progress", "err", err)
		}
		if r.opt.Progress != nil {
			v := int64(held) * int64(s.m.ChunkSize)
			if v > s.m.Size {
				v = s.m.Size
			}
			r.opt.Progress(ReceiverProgress{Name: s.m.Name, Size: s.m.Size, Verified: v, Applied: len(s.result) > 0})
		}
		if time.Since(lastSync) >= time.Second {
			if err := s.spool.sync(); err != nil {
				r.opt.Log.Warn("spool state not saved", "err", err)
			}
			lastSync = time.Now()
		}
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
	}
}

// applyWhenComplete waits for the last chunk, checks the whole file
// against the signed hash, applies it and reports the result.
func (r *Receiver) applyWhenComplete(s *session) {
	if err := s.spool.waitComplete(s.ctx); err != nil {
		return
	}
	err := r.verifyAndApply(s)
	out := resultMsg{ok: err == nil, received: uint64(s.recvd.Load()), millis: uint64(time.Since(s.start).Milliseconds())}
	if err != nil {
		out.err = clip(err.Error())
		r.opt.Log.Error("apply failed", "package", s.m.Name, "err", err)
	} else {
		r.opt.Log.Info("applied", "package", s.m.Name)
	}
	select {
	case s.result <- out:
	default:
		return // a local failure was already reported
	}
	if err := s.c.send(msgResult, out.encode()); err != nil {
		r.opt.Log.Warn("result not delivered", "err", err)
	}
}

func (r *Receiver) verifyAndApply(s *session) error {
	if err := s.spool.sync(); err != nil {
		return err
	}
	sum, err := s.spool.sum()
	if err != nil {
		return err
	}
	if sum != s.m.SHA256 {
		s.spool.reset()
		return fmt.Errorf("spool %s does not match the package's SHA-256; it was discarded", s.spool.path)
	}
	pkg := Package{Path: s.spool.path, Name: s.m.Name, Size: s.m.Size, SHA256: s.m.SumHex()}
	if err := r.opt.Apply(s.ctx, pkg); err != nil {
		return err
	}
	if err := recordApplied(r.opt.Dir, s.m); err != nil {
		r.opt.Log.Warn("could not record the applied session; a replay would not be refused", "err", err)
	}
	return nil
}

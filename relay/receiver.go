package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Package is a verified file ready to apply.
type Package struct {
	Path   string // the verified file; valid until Apply returns
	Name   string
	Size   int64
	SHA256 string // lowercase hex
	// Checked: Path was read back whole as it arrived and its sha256
	// matched (ReceiverOptions.ReadBack), so Apply need not hash it again.
	Checked bool
	// Output takes what the apply's command writes to its stdout and
	// stderr: the seed's report shows the last 4 KiB of it.
	Output io.Writer
}

// ReceiverOptions says who a receiver is and what it does with a package.
type ReceiverOptions struct {
	ID   NodeID // zero: a random one, for this receiver's life (a seed refuses the zero id)
	Name string
	Dir  string // spool and state: treecast's alone, see CheckStateDir
	// Write, if set, is a write target (a block device or an image file):
	// blocks are written there as they arrive, and nothing is spooled.
	Write string
	// Apply installs a verified package. It runs while the relay to
	// children goes on; its error is this node's failure only.
	Apply func(ctx context.Context, pkg Package) error
	// Stream, if set, is given the package in order on in while the
	// transfer runs (a command reading its stdin), from the session's
	// start; Apply runs once both the package is whole and Stream returned
	// nil. Its error is this node's failure only.
	Stream func(ctx context.Context, pkg Package, in io.Reader) error
	// ReadBack: hash the file as its blocks arrive, in order, read back
	// from where they are kept, and tell Apply it is Checked. An apply that
	// hashes the whole file (a copy that checks it) is spared a pass over
	// it once the package is complete, when the fleet waits for it.
	ReadBack bool
	// Secret, if set, is the fleet's: only a seed and children that prove
	// they hold it are served, and blocks travel sealed.
	Secret *Secret
	// Trust decides whether a seed's key may start a session here.
	// Nil trusts any seed whose manifest signature verifies.
	Trust func(key ed25519.PublicKey) error
	// Group is the group this node announces; it takes only sessions for it.
	Group string
	// AllowDowngrade accepts a session older than the last one applied here
	// from the same seed key for the same group.
	AllowDowngrade bool
	// Actions is a short fingerprint of what Apply and Stream do with a
	// package (main hashes its install settings). A new session of the
	// package applied here last, under the same name and with the same
	// Actions, is up to date: nothing is fetched or applied, unless the
	// seed forces it. Empty: no package is ever up to date here.
	Actions string
	// CorruptChunk, for fault-injection tests only, flips a bit in every
	// block of each chunk it returns true for before relaying it to a child.
	CorruptChunk func(i int) bool
	// FaultAccuse, for fault-injection tests only, makes this node accuse
	// every parent it is given of corrupt data instead of fetching.
	FaultAccuse bool
	// FaultSilent, for fault-injection tests only, makes this node take a
	// session and then only report that it holds nothing.
	FaultSilent bool
	Log         *slog.Logger
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
	Already  bool  // this very session was applied here before: nothing was done
	UpToDate bool  // the same package was applied here before with the same actions: nothing was done
	Empty    int64 // bytes of empty blocks, held without being sent
	Duration time.Duration
}

// ErrSeedLost ends a session whose seed went silent or hung up before
// saying the session was over.
var ErrSeedLost = errors.New("lost the seed")

// ErrSeedGone ends Join when a lost seed did not come back within
// Config.SeedTimeout.
var ErrSeedGone = errors.New("the seed did not come back")

// Receiver accepts sessions from seeds and relays them to children.
type Receiver struct {
	cfg Config
	opt ReceiverOptions
	ln  net.Listener

	controls    chan offered  // control connections with a trusted, valid offer
	largeOffers chan struct{} // slots for reading offers over smallOffer
	cap         *rateCap      // what it sends to its children, at most
	refusals    *refusals     // warnings of refused seeds and sessions, a line a minute per address
	mu          sync.Mutex
	cur         *session // the session in progress, if any
	wg          sync.WaitGroup
	done        chan struct{}
	once        sync.Once
}

// NewReceiver listens on cfg.Listen and starts accepting connections. A cfg
// that does not validate is refused with its *ConfigError.
func NewReceiver(cfg Config, opt ReceiverOptions) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Apply == nil {
		return nil, errors.New("receiver needs an apply function")
	}
	if err := CheckStateDir(opt.Dir); err != nil {
		return nil, err
	}
	if opt.ID == (NodeID{}) {
		rand.Read(opt.ID[:])
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	rate, _ := ParseRate(cfg.MaxRate) // Validate checked it
	r := &Receiver{cfg: cfg, opt: opt, ln: ln, controls: make(chan offered), largeOffers: make(chan struct{}, maxLargeOffers), cap: newRateCap(rate), refusals: newRefusals(), done: make(chan struct{})}
	r.wg.Add(2)
	go r.accept()
	go func() {
		defer r.wg.Done()
		warmVerify()
	}()
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

func (r *Receiver) accept() {
	defer r.wg.Done()
	g := newGate()
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
		ps, ok := g.admit(conn)
		if !ok {
			r.opt.Log.Debug("too many connections; closing one", "from", conn.RemoteAddr())
			conn.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer ps.release()
			r.handle(conn, ps)
		}()
	}
}

// handle reads the hello and routes the connection by role. A connection
// proves itself within proveWithin: a seed by a trusted, valid offer, a
// child by a want for the session in progress. Until then it holds an
// unproven slot and nothing else: the receiver is not busy, and Next never
// sees it.
func (r *Receiver) handle(conn net.Conn, ps *pass) {
	defer conn.Close()
	c := newCtrl(conn, r.cfg.DeadAfter)
	c.conn.until = time.Now().Add(proveWithin)
	p, err := c.expect(r.cfg.DeadAfter, msgHello)
	var h helloMsg
	if err == nil {
		h, err = decodeHello(p)
	}
	if err != nil {
		r.opt.Log.Debug("rejected connection", "from", conn.RemoteAddr(), "err", err)
		return
	}
	if h.role == roleData {
		r.serveChild(c, h, ps)
		return
	}
	if r.busy() {
		c.send(msgWelcome, welcomeMsg{id: r.opt.ID, name: r.opt.Name, busy: true}.encode())
		c.send(msgRefuse, refuseMsg{code: refuseBusy, reason: busyReason}.encode())
		return
	}
	if err := greet(c, r.cfg.DeadAfter, r.opt.Secret, h, welcomeMsg{id: r.opt.ID, name: r.opt.Name}, proveReceiver, proveSeed); err != nil {
		r.refusals.warn(r.opt.Log, conn.RemoteAddr(), "refused a seed", "seed", conn.RemoteAddr(), "reason", err)
		return
	}
	signed, err := r.readOffer(c, ps)
	if err != nil {
		r.refusals.warn(r.opt.Log, conn.RemoteAddr(), "refused session", "seed", conn.RemoteAddr(), "reason", err)
		var re *RefusedError
		if errors.As(err, &re) {
			c.send(msgRefuse, refuseMsg{code: uint8(re.Code), reason: clip(re.Reason)}.encode())
		}
		return
	}
	c.conn.until = time.Time{}
	ps.prove()
	if !r.handOver(offered{c: c, signed: signed}) {
		c.send(msgRefuse, refuseMsg{code: refuseBusy, reason: busyReason}.encode())
		return
	}
	// Next owns the connection now; wait for its session to end so the
	// slot stays taken.
	<-c.released
}

// floorReader reads from c no slower than offerRate once proveWithin has
// passed since start: each read must bring its next byte by the time the
// bytes so far would have taken at that rate. A host that announces a
// large offer and sends a byte now and then holds a large-offer slot for
// seconds, not for the minutes the whole offer is allowed.
type floorReader struct {
	c     *liveConn
	start time.Time
	read  int64
}

func (r *floorReader) Read(p []byte) (int, error) {
	due := r.start.Add(proveWithin + time.Duration(r.read+1)*time.Second/offerRate)
	d := r.c.deadline(r.c.readIdle)
	if due.Before(d) {
		d = due
	}
	r.c.Conn.SetReadDeadline(d)
	n, err := r.c.Conn.Read(p)
	r.read += int64(n)
	if err != nil && time.Now().After(due) {
		err = fmt.Errorf("%s in %s, slower than %s/s: %w", HumanBytes(r.read), time.Since(r.start).Round(time.Millisecond), HumanBytes(offerRate), err)
	}
	return n, err
}

// readOffer reads a seed's offer and checks what can be checked without
// local state: a trusted key (before the signature, so an untrusted offer
// costs no hashing), the signature, and the expiry. Its header must come
// within the connection's proving time, and its bytes at offerRate at the
// slowest; while a large one is read, its connection is not closed for a
// newer (see gate). A refusal to pass on is a *RefusedError.
func (r *Receiver) readOffer(c *ctrl, ps *pass) (*Signed, error) {
	t, n, err := readHeader(c.conn)
	if err != nil {
		return nil, fmt.Errorf("read offer: %w", err)
	}
	if t != msgOffer {
		return nil, &RefusedError{Code: int(refuseBadOffer), Reason: fmt.Sprintf("expected an offer, got %s", t)}
	}
	c.conn.until = c.conn.until.Add(time.Duration(n) * time.Second / offerRate)
	if n > smallOffer {
		// Unproven, so few at once: a large offer is read whole before its
		// signature can be checked.
		select {
		case r.largeOffers <- struct{}{}:
			defer func() { <-r.largeOffers }()
			ps.hold()
		case <-time.After(time.Until(c.conn.until)):
			return nil, &RefusedError{Code: int(refuseBusy), Reason: "busy reading other large offers"}
		}
	}
	f, err := readPayload(&floorReader{c: c.conn, start: time.Now()}, t, n, nil)
	if err != nil {
		return nil, err
	}
	signed, err := decodeSignedBy(f.payload, r.opt.Trust)
	var ue *untrustedError
	switch {
	case errors.As(err, &ue):
		return nil, &RefusedError{Code: int(refuseUntrusted), Reason: err.Error()}
	case err != nil:
		return nil, &RefusedError{Code: int(refuseBadOffer), Reason: err.Error()}
	}
	m := signed.Manifest
	if now := time.Now(); now.After(m.Expires) {
		return nil, &RefusedError{Code: int(refuseStale), Reason: fmt.Sprintf("session for %s expired at %s", m.Name, m.Expires.Format(time.RFC3339))}
	}
	return signed, nil
}

func (r *Receiver) busy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur != nil
}

// offered is a control connection whose offer is trusted and valid.
type offered struct {
	c      *ctrl
	signed *Signed
}

// handOver passes a proven offer to Next. Between two sessions Next may
// take a moment to ask for the next one; during a session the answer is
// no at once.
func (r *Receiver) handOver(o offered) bool {
	wait := 2 * time.Second
	if r.busy() {
		wait = 0
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r.controls <- o:
		return true
	case <-t.C:
		return false
	case <-r.done:
		return false
	}
}

// childWait is how long a node waits for the seed to name a child that
// asks to be fed (see feeding.admit): the seed's frame to this node left
// with the one that sent the child here, but may queue behind data on the
// seed's uplink.
func childWait(cfg Config) time.Duration { return cfg.DeadAfter / 2 }

// serveChild feeds a child that asks for blocks of the current session.
func (r *Receiver) serveChild(c *ctrl, h helloMsg, ps *pass) {
	if err := (keys{secret: r.opt.Secret}).dataGreet(c, r.cfg.DeadAfter, h, r.opt.ID, r.opt.Name); err != nil {
		r.opt.Log.Debug("refused a child", "from", c.conn.RemoteAddr(), "err", err)
		return
	}
	r.mu.Lock()
	cur := r.cur
	r.mu.Unlock()
	if cur == nil {
		c.send(msgRefuse, refuseMsg{code: refuseNoSession, reason: "no session here"}.encode())
		return
	}
	p, err := c.expectSized(r.cfg.DeadAfter, msgWant, wantLen(cur.m))
	if err != nil {
		r.opt.Log.Debug("refused a child", "from", c.conn.RemoteAddr(), "err", err)
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
	if err := w.check(s.m); err != nil {
		r.mu.Unlock()
		c.send(msgRefuse, refuseMsg{code: refuseBadOffer, reason: err.Error()}.encode())
		return
	}
	s.wg.Add(1)
	r.mu.Unlock()
	defer s.wg.Done()
	placed, ok := s.feeding.admit(s.ctx, h.id, remoteIP(c.conn), remoteIP(s.c.conn), w.stripe, c.conn, childWait(r.cfg), ps.gone)
	if !ok {
		c.send(msgRefuse, refuseMsg{code: refuseNoSession, reason: "the seed gave this node no such child in this stripe"}.encode())
		return
	}
	defer placed()
	if n := s.stripes.Load(); n > 0 && int32(w.stripes) != n {
		c.send(msgRefuse, refuseMsg{code: refuseBadOffer, reason: fmt.Sprintf("want of stripe %d of %d in a session of %d", w.stripe, w.stripes, n)}.encode())
		return
	}
	ps.prove()
	c.conn.until = time.Time{}
	stop := closeOnDone(s.ctx, c.conn)
	defer stop()
	if !s.feeding.begin() {
		c.send(msgRefuse, refuseMsg{code: refuseNoSession, reason: "no session here"}.encode())
		return
	}
	sent, err := feed(s.ctx, c.conn.Conn, s.spool, s.pace, s.m, w, r.cfg, feedOptions{keys: s.keys, cap: r.cap, up: s.up, child: h.id, corrupt: r.opt.CorruptChunk})
	if err == nil {
		// All sent is not all held: a child that found a block corrupt
		// says nothing, and the seed may be about to probe this node.
		_, err = c.expectSized(r.cfg.DeadAfter, msgHeld, 0)
	}
	s.feeding.end(w.stripe, h.id, err == nil)
	r.opt.Log.Debug("fed child", "child", NodeID(h.id).Short(), "name", h.name, "bytes", sent, "err", err)
}

// Join takes part in one session to its end, as a one-off receiver does:
// when the seed is lost (ErrSeedLost), it waits Config.SeedTimeout for the
// seed to come back or be started again, and resumes from the blocks
// held, as often as that happens. lost, if set, hears each such result
// before the wait. It returns the session's last result, with an error
// wrapping ErrSeedGone if the seed did not come back.
func (r *Receiver) Join(ctx context.Context, lost func(Result)) (Result, error) {
	res, err := r.Next(ctx)
	for err == nil && errors.Is(res.Err, ErrSeedLost) {
		if lost != nil {
			lost(res)
		}
		wctx, cancel := context.WithTimeout(ctx, r.cfg.SeedTimeout)
		again, werr := r.Next(wctx)
		cancel()
		switch {
		case errors.Is(werr, context.DeadlineExceeded) && ctx.Err() == nil:
			return res, fmt.Errorf("%w within %s", ErrSeedGone, r.cfg.SeedTimeout)
		case werr != nil:
			return res, werr
		}
		res = again
	}
	return res, err
}

// Next waits for one session, takes part in it until the seed ends it,
// and returns this node's result. Offers that are refused (untrusted,
// expired, too large) are logged and do not end the wait.
func (r *Receiver) Next(ctx context.Context) (Result, error) {
	for {
		var o offered
		select {
		case o = <-r.controls:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-r.done:
			return Result{}, net.ErrClosed
		}
		res, err := r.session(ctx, o)
		if errors.Is(err, errNotTaken) {
			continue
		}
		return res, err
	}
}

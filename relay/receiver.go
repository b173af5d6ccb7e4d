package relay

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
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
}

// ReceiverOptions says who a receiver is and what it does with a package.
type ReceiverOptions struct {
	ID   NodeID
	Name string
	Dir  string // spool and state: treecast's alone, see CheckStateDir
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
	// block of each chunk it returns true for before relaying it to a child.
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
	if err := CheckStateDir(opt.Dir); err != nil {
		return nil, err
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
	c := newCtrl(conn, r.cfg.DeadAfter)
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

// serveChild feeds a child that asks for blocks of the current session.
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
	if err := w.check(s.m); err != nil {
		r.mu.Unlock()
		c.send(msgRefuse, refuseMsg{code: refuseBadOffer, reason: err.Error()}.encode())
		return
	}
	s.wg.Add(1)
	r.mu.Unlock()
	defer s.wg.Done()
	stop := closeOnDone(s.ctx, c.conn)
	defer stop()
	sent, err := feed(s.ctx, c.conn.Conn, s.spool, s.pace, s.m, w, r.cfg, r.opt.CorruptChunk)
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

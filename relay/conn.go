package relay

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

// liveConn judges a peer by progress: it is dead when no bytes move for
// the idle time, however long a whole frame takes on a slow link. Each Read
// gets a fresh deadline of readIdle, and each liveStep bytes of a Write one
// of writeIdle, so a large frame (an offer) on a slow link is not taken for
// a hung peer. readIdle belongs to the one goroutine that reads.
type liveConn struct {
	net.Conn
	readIdle, writeIdle time.Duration
	until               time.Time // if set, no deadline goes past it
}

func newLiveConn(c net.Conn, idle time.Duration) *liveConn {
	return &liveConn{Conn: c, readIdle: idle, writeIdle: idle}
}

func (c *liveConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(c.deadline(c.readIdle))
	return c.Conn.Read(p)
}

// noIdleLimit is an idle time without limit: a peer judged otherwise.
const noIdleLimit time.Duration = -1

// deadline is idle from now, or until if that comes first.
func (c *liveConn) deadline(idle time.Duration) time.Time {
	if idle == noIdleLimit {
		return c.until
	}
	d := time.Now().Add(idle)
	if !c.until.IsZero() && c.until.Before(d) {
		return c.until
	}
	return d
}

// liveStep is the most a write waits on under one deadline: 0.5 s of a
// 1 Mbit/s link, and more than a feeder gathers before it writes.
const liveStep = 64 << 10

func (c *liveConn) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), liveStep)
		c.Conn.SetWriteDeadline(c.deadline(c.writeIdle))
		m, err := c.Conn.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// ctrl is one end of a control connection. Sends are serialised, and a
// peer that takes no bytes for timeout is given up, so a hung peer costs
// at most that long.
type ctrl struct {
	conn     *liveConn
	mu       sync.Mutex
	released chan struct{} // closed by done: whoever was handed the connection is through with it
	once     sync.Once
}

func newCtrl(conn net.Conn, timeout time.Duration) *ctrl {
	return &ctrl{conn: newLiveConn(conn, timeout), released: make(chan struct{})}
}

// done closes the connection and says so to whoever handed it over. Idempotent.
func (c *ctrl) done() {
	c.once.Do(func() {
		c.conn.Close()
		close(c.released)
	})
}

func (c *ctrl) send(t msgType, ps ...[]byte) error {
	if len(ps) != 1 {
		fs := make([]frame, len(ps))
		for i, p := range ps {
			fs[i] = frame{typ: t, payload: p}
		}
		return c.sendFrames(fs...)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := writeFrame(c.conn, t, ps[0]); err != nil {
		return fmt.Errorf("send %s to %s: %w", t, c.conn.RemoteAddr(), err)
	}
	return nil
}

// sendFrames sends fs in one write: one packet, not one each.
func (c *ctrl) sendFrames(fs ...frame) error {
	var b []byte
	for _, f := range fs {
		if len(f.payload) > maxPayload(f.typ) {
			return fmt.Errorf("send %s to %s: %d bytes: %w", f.typ, c.conn.RemoteAddr(), len(f.payload), ErrFrameTooLarge)
		}
		b = append(appendHeader(b, f.typ, len(f.payload)), f.payload...)
	}
	if len(fs) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("send %s to %s: %w", fs[0].typ, c.conn.RemoteAddr(), err)
	}
	return nil
}

// end sends the seed's end frame and closes the connection, in one
// packet where the platform allows (the end and the FIN): at 128 nodes
// and 4 Mbit/s a packet each is 0.2 % of the seed's upload.
func (c *ctrl) end() {
	c.mu.Lock()
	cork(c.conn.Conn)
	writeFrame(c.conn, msgEnd, nil)
	c.mu.Unlock()
	c.conn.Close()
}

// recv reads one frame; the peer may be silent for at most d at a time.
func (c *ctrl) recv(d time.Duration) (frame, error) {
	c.conn.readIdle = d
	return readFrame(c.conn, nil)
}

// recvOnly reads one frame of one of the types allowed, of at most limit
// bytes; any other is refused from its header, before its payload is read,
// so a peer can make us hold no more than limit bytes.
func (c *ctrl) recvOnly(d time.Duration, limit int, allowed ...msgType) (frame, error) {
	c.conn.readIdle = d
	t, n, err := readHeader(c.conn)
	if err != nil {
		return frame{}, err
	}
	if !slices.Contains(allowed, t) {
		return frame{}, fmt.Errorf("%s sent an unexpected %s frame", c.conn.RemoteAddr(), t)
	}
	if n > limit {
		return frame{}, fmt.Errorf("%s sent a %d-byte %s frame: %w", c.conn.RemoteAddr(), n, t, ErrFrameTooLarge)
	}
	return readPayload(c.conn, t, n, nil)
}

// expectSized reads one frame of type want whose payload is exactly n
// bytes, refusing any other from its header. A refusal is returned as a
// *RefusedError.
func (c *ctrl) expectSized(d time.Duration, want msgType, n int) ([]byte, error) {
	c.conn.readIdle = d
	t, got, err := readHeader(c.conn)
	if err != nil {
		return nil, err
	}
	switch {
	case t == msgRefuse && got <= maxControlLen:
		f, err := readPayload(c.conn, t, got, nil)
		if err != nil {
			return nil, err
		}
		r, err := decodeRefuse(f.payload)
		if err != nil {
			return nil, err
		}
		return nil, &RefusedError{Code: int(r.code), Reason: r.reason}
	case t != want:
		return nil, fmt.Errorf("%s sent %s, expected %s", c.conn.RemoteAddr(), t, want)
	case got != n:
		return nil, fmt.Errorf("%s sent a %d-byte %s, expected %d bytes", c.conn.RemoteAddr(), got, t, n)
	}
	f, err := readPayload(c.conn, t, got, nil)
	return f.payload, err
}

// expect reads one frame, with silences of at most d, and fails unless it
// has type want. A refusal is returned as a *RefusedError. Any other type
// is refused from its header, before its payload is read.
func (c *ctrl) expect(d time.Duration, want msgType) ([]byte, error) {
	c.conn.readIdle = d
	t, n, err := readHeader(c.conn)
	if err != nil {
		return nil, err
	}
	if t != want && t != msgRefuse {
		return nil, fmt.Errorf("%s sent %s, expected %s", c.conn.RemoteAddr(), t, want)
	}
	f := frame{typ: t, payload: make([]byte, 0, min(n, growStep))}
	if f, err = readPayload(c.conn, t, n, f.payload); err != nil {
		return nil, err
	}
	if f.typ == msgRefuse && want != msgRefuse {
		r, err := decodeRefuse(f.payload)
		if err != nil {
			return nil, err
		}
		return nil, &RefusedError{Code: int(r.code), Reason: r.reason}
	}
	if f.typ != want {
		return nil, fmt.Errorf("%s sent %s, expected %s", c.conn.RemoteAddr(), f.typ, want)
	}
	return f.payload, nil
}

// RefusedError is a peer's reasoned refusal of a session or request.
type RefusedError struct {
	Code   int
	Reason string
}

func (e *RefusedError) Error() string { return "refused: " + e.Reason }

// closeOnDone closes c when ctx ends, which unblocks any read or write on it.
func closeOnDone(ctx context.Context, c net.Conn) (stop func() bool) {
	return context.AfterFunc(ctx, func() { c.Close() })
}

package relay

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// ctrl is one end of a control connection. Sends are serialised and
// bounded by a deadline, so a hung peer costs at most that long.
type ctrl struct {
	conn    net.Conn
	timeout time.Duration
	mu      sync.Mutex
}

func (c *ctrl) send(t msgType, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	if err := writeFrame(c.conn, t, p); err != nil {
		return fmt.Errorf("send %s to %s: %w", t, c.conn.RemoteAddr(), err)
	}
	return nil
}

// recv reads one frame within d.
func (c *ctrl) recv(d time.Duration) (frame, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	return readFrame(c.conn, nil)
}

// expect reads one frame within d and fails unless it has type want.
// A refusal is returned as a *RefusedError. Any other type is refused
// from its header, before its payload is read.
func (c *ctrl) expect(d time.Duration, want msgType) ([]byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
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

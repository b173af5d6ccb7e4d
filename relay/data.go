package relay

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// feed sends a child every chunk of its stripe it does not hold, in order,
// as soon as src has it. While src waits for chunks, pings keep the link
// visibly alive. The caller closes conn when ctx ends.
func feed(ctx context.Context, conn net.Conn, src source, pace *pacer, m *Manifest, w wantMsg, cfg Config, corrupt func(int) bool) (int64, error) {
	bw := bufio.NewWriterSize(conn, 64<<10)
	buf := make([]byte, 4+m.ChunkSize)
	stripes, stripe := int(w.stripes), int(w.stripe)
	have := bitmap(w.have)
	pos := pace.join()
	defer pace.leave(pos)
	var sent int64
	for i := stripe; i < len(m.Chunks); i += stripes {
		if have.has(i) {
			continue
		}
		pace.advance(pos, i)
		for {
			err := src.wait(ctx, i, cfg.Heartbeat)
			if err == nil {
				err = pace.wait(ctx, pos, i)
			}
			if err == nil {
				break
			}
			if !errors.Is(err, errIdle) {
				return sent, err
			}
			conn.SetWriteDeadline(time.Now().Add(cfg.DeadAfter))
			if err := writeFrame(bw, msgPing, nil); err != nil {
				return sent, err
			}
			if err := bw.Flush(); err != nil {
				return sent, err
			}
		}
		data, err := src.readChunk(i, buf[4:])
		if err != nil {
			return sent, err
		}
		if corrupt != nil && len(data) > 0 && corrupt(i) {
			data[len(data)/2] ^= 0x10
		}
		binary.BigEndian.PutUint32(buf, uint32(i))
		conn.SetWriteDeadline(time.Now().Add(cfg.DeadAfter))
		if err := writeFrame(bw, msgChunk, buf[:4+len(data)]); err != nil {
			return sent, fmt.Errorf("send chunk %d: %w", i, err)
		}
		if err := bw.Flush(); err != nil {
			return sent, fmt.Errorf("send chunk %d: %w", i, err)
		}
		sent += int64(len(data))
	}
	return sent, nil
}

// fetchError says why a fetch from a parent stopped; kind is a complaint kind.
type fetchError struct {
	kind  uint8
	chunk uint32
	err   error
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// fetch pulls the missing chunks of one stripe from a parent, verifies
// each against the manifest before it is stored, and returns nil once
// the stripe is whole. received counts the bytes stored.
func fetch(ctx context.Context, p parentMsg, self helloMsg, sp *spool, cfg Config, received func(int)) error {
	m := sp.m
	stripes, stripe := int(p.stripes), int(p.stripe)
	missing := 0
	for i := stripe; i < len(m.Chunks); i += stripes {
		if !sp.has(i) {
			missing++
		}
	}
	if missing == 0 {
		return nil
	}
	lost := func(err error) error { return &fetchError{kind: complainLost, err: err} }
	d := net.Dialer{Timeout: cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", p.addr.String())
	if err != nil {
		return lost(err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	_, have := sp.held()
	conn.SetWriteDeadline(time.Now().Add(cfg.DeadAfter))
	if err := writeFrame(conn, msgHello, self.encode()); err != nil {
		return lost(err)
	}
	w := wantMsg{session: m.Session, stripes: p.stripes, stripe: p.stripe, have: have}
	if err := writeFrame(conn, msgWant, w.encode()); err != nil {
		return lost(err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	buf := make([]byte, 4+m.ChunkSize)
	for missing > 0 {
		conn.SetReadDeadline(time.Now().Add(cfg.DeadAfter))
		t, n, err := readHeader(br)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return lost(fmt.Errorf("read from parent %s: %w", p.addr, err))
		}
		if t == msgChunk && n > len(buf) || t != msgChunk && n > maxControlLen {
			return &fetchError{kind: complainCorrupt, err: fmt.Errorf("parent %s sent a %d-byte %s frame", p.addr, n, t)}
		}
		if _, err := io.ReadFull(br, buf[:n]); err != nil {
			return lost(fmt.Errorf("read from parent %s: %w", p.addr, noEOF(err)))
		}
		switch t {
		case msgPing:
			continue
		case msgRefuse:
			r, err := decodeRefuse(buf[:n])
			if err != nil {
				return &fetchError{kind: complainRefused, err: err}
			}
			return &fetchError{kind: complainRefused, err: fmt.Errorf("parent %s refused: %s", p.addr, r.reason)}
		case msgChunk:
		default:
			return &fetchError{kind: complainCorrupt, err: fmt.Errorf("parent %s sent an unexpected %s frame", p.addr, t)}
		}
		if n < 4 {
			return &fetchError{kind: complainCorrupt, err: fmt.Errorf("parent %s sent a %d-byte chunk frame", p.addr, n)}
		}
		i := int(binary.BigEndian.Uint32(buf))
		data := buf[4:n]
		if i >= len(m.Chunks) || i%stripes != stripe {
			return &fetchError{kind: complainCorrupt, chunk: uint32(i), err: fmt.Errorf("parent %s sent chunk %d, outside stripe %d of %d", p.addr, i, stripe, stripes)}
		}
		if len(data) != m.ChunkLen(i) || sha256.Sum256(data) != m.Chunks[i] {
			return &fetchError{kind: complainCorrupt, chunk: uint32(i), err: fmt.Errorf("chunk %d from parent %s does not match the signed manifest", i, p.addr)}
		}
		if sp.has(i) {
			continue
		}
		if err := sp.put(i, data); err != nil {
			return err
		}
		received(len(data))
		missing--
	}
	return nil
}

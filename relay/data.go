package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
)

// flushAt is how many bytes a feeder gathers before it writes them: a few
// blocks per system call when the child is behind, while a feeder that has
// caught up writes each block as soon as it is verified.
const flushAt = 32 << 10

// feed sends a child every block of its stripe it does not hold, in order,
// each chunk's block hashes ahead of its first block, as soon as src has
// them. While src waits, pings keep the link visibly alive. The caller
// closes conn when ctx ends.
func feed(ctx context.Context, conn net.Conn, src source, pace *pacer, m *Manifest, w wantMsg, cfg Config, corrupt func(int) bool) (int64, error) {
	lc := newLiveConn(conn, cfg.DeadAfter)
	bpc := m.blocksPerChunk()
	room := 2*headerLen + 4 + 32*bpc + blockHeaderLen + m.BlockSize
	out := make([]byte, 0, flushAt+room)
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		_, err := lc.Write(out)
		out = out[:0]
		return err
	}
	stripes, stripe := int(w.stripes), int(w.stripe)
	have := bitmap(w.have)
	pos := pace.join()
	defer pace.leave(pos)
	sentLeaves := -1
	var sent int64
	for g := stripe; g < m.Blocks(); g += stripes {
		if have.has(g) {
			continue
		}
		at := g / stripes // its place in the stripe, which siblings share
		pace.advance(pos, at)
		for {
			if ok, _ := src.ready(g); ok && pace.clearNow(pos, at) {
				break
			}
			// About to wait: what is gathered goes out first.
			if err := flush(); err != nil {
				return sent, err
			}
			err := waitUntil(ctx, cfg.Heartbeat, func() (bool, <-chan struct{}) { return src.ready(g) })
			if err == nil {
				err = pace.wait(ctx, pos, at)
			}
			if err == nil {
				break
			}
			if !errors.Is(err, errIdle) {
				return sent, err
			}
			out = appendHeader(out, msgPing, 0)
		}
		if i := g / bpc; i != sentLeaves {
			leaves, err := src.leaves(i)
			if err != nil {
				return sent, err
			}
			out = appendHeader(out, msgHashes, 4+len(leaves))
			out = binary.BigEndian.AppendUint32(out, uint32(i))
			out = append(out, leaves...)
			sentLeaves = i
		}
		n := m.BlockLen(g)
		out = appendHeader(out, msgBlock, blockHeaderLen+n)
		out = binary.BigEndian.AppendUint32(out, uint32(g))
		out = append(out, 0) // flags: raw
		data, err := src.readBlock(g, out[len(out):len(out)+n])
		if err != nil {
			return sent, err
		}
		if corrupt != nil && n > 0 && corrupt(g/bpc) {
			data[n/2] ^= 0x10
		}
		out = out[:len(out)+n]
		sent += int64(n)
		if len(out) >= flushAt {
			if err := flush(); err != nil {
				return sent, fmt.Errorf("send block %d: %w", g, err)
			}
		}
	}
	return sent, flush()
}

// fetchError says why a fetch from a parent stopped; kind is a complaint kind.
type fetchError struct {
	kind  uint8
	block uint32
	err   error
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// fetchBuffer holds the largest frame a parent may send (a chunk's block
// hashes at most), so every payload is checked where it lies, uncopied.
const fetchBuffer = 256 << 10

// fetch pulls the missing blocks of one stripe from a parent, verifies
// each against its chunk's block hashes, and those against the manifest,
// before it is stored, and returns nil once the stripe is whole. received
// counts the bytes stored.
func fetch(ctx context.Context, p parentMsg, self helloMsg, sp *spool, cfg Config, received func(int)) error {
	m := sp.m
	missing := 0
	for g := int(p.stripe); g < m.Blocks(); g += int(p.stripes) {
		if !sp.has(g) {
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

	lc := newLiveConn(conn, cfg.DeadAfter)
	if err := writeFrame(lc, msgHello, self.encode()); err != nil {
		return lost(err)
	}
	w := wantMsg{session: m.Session, stripes: p.stripes, stripe: p.stripe, have: sp.bitmapCopy()}
	if err := writeFrame(lc, msgWant, w.encode()); err != nil {
		return lost(err)
	}
	err = pull(bufio.NewReaderSize(lc, fetchBuffer), p, sp, missing, received)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// pull reads a parent's frames until missing more blocks of its stripe are
// stored. Nothing it has not verified is stored.
func pull(br *bufio.Reader, p parentMsg, sp *spool, missing int, received func(int)) error {
	m := sp.m
	stripes, stripe := int(p.stripes), int(p.stripe)
	lost := func(err error) error { return &fetchError{kind: complainLost, err: err} }
	corrupt := func(g int, format string, a ...any) error {
		return &fetchError{kind: complainCorrupt, block: uint32(g), err: fmt.Errorf("parent %s %s", p.addr, fmt.Sprintf(format, a...))}
	}
	bpc := m.blocksPerChunk()
	leavesOf, leaves := -1, []byte(nil)
	for missing > 0 {
		t, n, err := readHeader(br)
		if err != nil {
			return lost(fmt.Errorf("read from parent %s: %w", p.addr, err))
		}
		limit := maxControlLen
		switch t {
		case msgBlock:
			limit = blockHeaderLen + m.BlockSize
		case msgHashes:
			limit = 4 + 32*bpc
		}
		if n > limit {
			return corrupt(-1, "sent a %d-byte %s frame", n, t)
		}
		payload, err := br.Peek(n)
		if err != nil {
			return lost(fmt.Errorf("read from parent %s: %w", p.addr, noEOF(err)))
		}
		switch t {
		case msgPing:
		case msgRefuse:
			r, err := decodeRefuse(payload)
			if err != nil {
				return &fetchError{kind: complainRefused, err: err}
			}
			return &fetchError{kind: complainRefused, err: fmt.Errorf("parent %s refused: %s", p.addr, r.reason)}
		case msgHashes:
			if n < 4 {
				return corrupt(-1, "sent a %d-byte hashes frame", n)
			}
			i := int(binary.BigEndian.Uint32(payload))
			if i >= len(m.Chunks) {
				return corrupt(-1, "sent hashes of chunk %d of %d", i, len(m.Chunks))
			}
			first, count := m.chunkBlocks(i)
			if len(payload)-4 != 32*count || sha256.Sum256(payload[4:]) != m.Chunks[i] {
				return corrupt(first, "sent block hashes of chunk %d that do not match the signed manifest", i)
			}
			leavesOf, leaves = i, bytes.Clone(payload[4:])
			sp.putLeaves(i, leaves)
		case msgBlock:
			if n < blockHeaderLen {
				return corrupt(-1, "sent a %d-byte block frame", n)
			}
			g, flags, data := int(binary.BigEndian.Uint32(payload)), payload[4], payload[blockHeaderLen:]
			switch {
			case g >= m.Blocks() || g%stripes != stripe:
				return corrupt(g, "sent block %d, outside stripe %d of %d", g, stripe, stripes)
			case g/bpc != leavesOf:
				return corrupt(g, "sent block %d before its chunk's hashes", g)
			case flags != 0:
				return corrupt(g, "sent block %d with unknown flags %#x", g, flags)
			}
			j := g % bpc
			if len(data) != m.BlockLen(g) || sha256.Sum256(data) != [32]byte(leaves[32*j:32*j+32]) {
				return corrupt(g, "sent block %d that does not match the signed manifest", g)
			}
			if !sp.has(g) {
				if err := sp.put(g, data); err != nil {
					return err
				}
				received(len(data))
				missing--
			}
		default:
			return corrupt(-1, "sent an unexpected %s frame", t)
		}
		br.Discard(n)
	}
	return nil
}

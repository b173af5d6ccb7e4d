package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// flushAt is how many bytes a feeder gathers before it writes them: a few
// blocks per system call when the child is behind, while a feeder that has
// caught up writes each block as soon as it is verified.
const flushAt = 32 << 10

// feed sends a child every block of its stripe it does not hold, in order,
// as soon as src has it, and ahead of a chunk's first such block the
// chunk's block hashes. It also sends the hashes of every chunk the child
// lacks a block of only in another stripe: a resumed node may hold its
// part of a chunk, and must not wait for the other tree to relay the
// hashes it needs to feed its own children. While src waits, pings keep
// the link visibly alive. The caller closes conn when ctx ends.
func feed(ctx context.Context, conn net.Conn, src source, pace *pacer, m *Manifest, w wantMsg, cfg Config, o feedOptions) (int64, error) {
	bpc := m.blocksPerChunk()
	f := &feeder{
		ctx: ctx, lc: newLiveConn(conn, cfg.DeadAfter), src: src, pace: pace, m: m, cfg: cfg, seal: o.keys.seal, cap: o.cap, up: o.up,
		out: make([]byte, 0, flushAt+2*headerLen+4+32*bpc+blockHeaderLen+m.BlockSize+sealOverhead),
	}
	if o.compress {
		f.compress, f.scratch, f.zbuf = true, make([]byte, m.BlockSize), make([]byte, 0, m.BlockSize)
	}
	corrupt := o.corrupt
	stripes, stripe := int(w.stripes), int(w.stripe)
	have := bitmap(w.have)
	f.pos = pace.join()
	defer pace.leave(f.pos)
	f.flow = o.up.join(conn, flowTo{child: o.child, addr: remoteIP(conn), stripe: w.stripe})
	defer o.up.leave(f.flow)
	for i := range m.Chunks {
		first, n := m.chunkBlocks(i)
		lacks := false
		for g := first; g < first+n && !lacks; g++ {
			lacks = !have.has(g)
		}
		if !lacks {
			continue
		}
		// The hashes first: they also tell the child which blocks are
		// empty, and those are never sent.
		if err := f.await(-1, func() (bool, <-chan struct{}) { return src.hashesReady(i) }); err != nil {
			return f.sent, err
		}
		leaves, err := f.hashes(i)
		if err != nil {
			return f.sent, err
		}
		for g := first; g < first+n; g++ {
			if have.has(g) || g%stripes != stripe || m.isZeroLeaf(g, leaves[32*(g-first):32*(g-first+1)]) {
				continue
			}
			at := g / stripes // its place in the stripe, which siblings share
			if err := f.await(at, func() (bool, <-chan struct{}) { return src.ready(g) }); err != nil {
				return f.sent, err
			}
			if err := f.block(g, corrupt != nil && corrupt(i)); err != nil {
				return f.sent, err
			}
		}
	}
	return f.sent, f.flush()
}

// feedOptions is how a node feeds its children.
type feedOptions struct {
	keys     keys
	cap      *rateCap       // what this process sends to all its children, at most
	up       *uplink        // paces each child's flow; shared by this process's feeders
	child    NodeID         // whom this feed is for, as it said in its hello
	compress bool           // compress blocks that shrink (the seed)
	corrupt  func(int) bool // fault injection: flip a bit of every block of these chunks
}

// feeder is one child's feed: what is gathered for it and how far it got.
type feeder struct {
	ctx  context.Context
	lc   *liveConn
	src  source
	pace *pacer
	pos  *paced
	m    *Manifest
	cfg  Config
	seal *sealer  // nil: blocks go in clear
	cap  *rateCap // shared by every feeder of this process; nil: no cap
	up   *uplink
	flow *upFlow // this child's flow, as up paces it; nil: not paced
	// compress: blocks src does not hold compressed are compressed here
	// (the seed), into zbuf, from scratch
	compress      bool
	scratch, zbuf []byte
	out           []byte
	sent          int64
}

func (f *feeder) flush() error {
	if len(f.out) == 0 {
		return nil
	}
	if err := f.cap.wait(f.ctx, len(f.out)); err != nil {
		return err
	}
	_, err := f.lc.Write(f.out)
	f.out = f.out[:0]
	f.up.tick(f.flow, time.Now())
	return err
}

// await blocks until ready, and for a block at place at in its stripe
// (-1: none) until the pacer lets it go; what is gathered goes out before
// any wait, and pings while it lasts.
func (f *feeder) await(at int, ready func() (bool, <-chan struct{})) error {
	if at >= 0 {
		f.pace.advance(f.pos, at)
	}
	clear := func() bool { return at < 0 || f.pace.clearNow(f.pos, at) }
	for {
		if ok, _ := ready(); ok && clear() {
			return nil
		}
		if err := f.flush(); err != nil {
			return err
		}
		begun := time.Now()
		err := waitUntil(f.ctx, f.cfg.Heartbeat, ready)
		if err == nil && at >= 0 {
			// What is left of the heartbeat: the child hears from us at
			// least that often (see session.starvedAfter).
			err = f.pace.wait(f.ctx, f.pos, at, max(f.cfg.Heartbeat-time.Since(begun), time.Millisecond))
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, errIdle) {
			return err
		}
		f.out = appendHeader(f.out, msgPing, 0)
	}
}

// hashes gathers chunk i's block hashes, and returns them.
func (f *feeder) hashes(i int) ([]byte, error) {
	leaves, err := f.src.leaves(i)
	if err != nil {
		return nil, err
	}
	f.out = appendHeader(f.out, msgHashes, 4+len(leaves))
	f.out = binary.BigEndian.AppendUint32(f.out, uint32(i))
	f.out = append(f.out, leaves...)
	if len(f.out) >= flushAt {
		// A child that holds its stripe of many chunks gets only their
		// hashes, one chunk after another.
		if err := f.flush(); err != nil {
			return nil, fmt.Errorf("send block hashes of chunk %d: %w", i, err)
		}
	}
	return leaves, nil
}

// block gathers block g and writes what is gathered once it is enough:
// as it came on the wire if src kept it compressed, compressed now if this
// feeder compresses and it shrinks, else read straight into the buffer.
// corrupt flips a bit of what is sent, for lab tests.
func (f *feeder) block(g int, corrupt bool) error {
	n := f.m.BlockLen(g)
	var zipped []byte
	if w, ok := f.src.(wired); ok {
		zipped = w.wires().get(g)
	}
	var plain []byte
	if w, ok := f.src.(wired); ok && zipped == nil && f.compress && w.wires().worthTrying(g) {
		var err error
		if plain, err = f.src.readBlock(g, f.scratch[:n]); err != nil {
			return err
		}
		zipped = squeeze(f.zbuf[:0], plain)
		w.wires().tried(zipped != nil)
		if zipped != nil {
			w.wires().put(g, bytes.Clone(zipped))
		}
	}
	flags, size := byte(0), n
	if zipped != nil {
		flags, size = blockFlagZstd, len(zipped)
	}
	wire := size
	if f.seal != nil {
		flags, wire = flags|blockFlagSealed, size+sealOverhead
	}
	if len(f.out)+headerLen+blockHeaderLen+wire > cap(f.out) {
		// The block is read straight into the buffer: make room first.
		if err := f.flush(); err != nil {
			return fmt.Errorf("send block %d: %w", g, err)
		}
	}
	f.out = appendHeader(f.out, msgBlock, blockHeaderLen+wire)
	f.out = binary.BigEndian.AppendUint32(f.out, uint32(g))
	f.out = append(f.out, flags)
	at := f.out[len(f.out) : len(f.out)+size : len(f.out)+wire]
	switch {
	case zipped != nil:
		copy(at, zipped)
	case plain != nil:
		copy(at, plain)
	default:
		if _, err := f.src.readBlock(g, at); err != nil {
			return err
		}
	}
	if corrupt && size > 0 {
		at[size/2] ^= 0x10
	}
	if f.seal != nil {
		f.seal.seal(g, at)
	}
	f.out = f.out[:len(f.out)+wire]
	f.sent += int64(wire)
	if len(f.out) >= flushAt {
		if err := f.flush(); err != nil {
			return fmt.Errorf("send block %d: %w", g, err)
		}
	}
	return nil
}

// wired is a source that keeps recent blocks as they travel compressed.
type wired interface{ wires() *wireCache }

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
// before it is stored, and returns nil once the stripe is whole and the
// block hashes of every chunk this node lacks a block of are known: a
// resumed node may hold its stripe of a chunk and still need the chunk's
// hashes to feed its children, and must not wait for the other tree to
// bring them. received counts the bytes stored; heard is called each time
// bytes come from the parent; hold, if set, before each read from it (see
// heardReader).
func fetch(ctx context.Context, p parentMsg, self helloMsg, sp *spool, cfg Config, k keys, received func(int), heard func(), hold func() bool) error {
	m := sp.m
	need := map[int]bool{}
	for i := range m.Chunks {
		if ok, _ := sp.hashesReady(i); !ok {
			need[i] = true
		}
	}
	if sp.stripeMissing(int(p.stripes), int(p.stripe)) == 0 && len(need) == 0 {
		if p.id != (NodeID{}) {
			sayHeld(ctx, p, self, sp, cfg, k)
		}
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

	c := newCtrl(conn, cfg.DeadAfter)
	if err := k.dataHello(c, cfg.DeadAfter, self.id, self.name); err != nil {
		var re *RefusedError
		if errors.As(err, &re) {
			return &fetchError{kind: complainRefused, err: fmt.Errorf("parent %s refused: %s", p.addr, re.Reason)}
		}
		return &fetchError{kind: complainRefused, err: fmt.Errorf("parent %s: %w", p.addr, err)}
	}
	lc := c.conn
	w := wantMsg{session: m.Session, stripes: p.stripes, stripe: p.stripe, have: sp.bitmapCopy()}
	if err := writeFrame(lc, msgWant, w.encode()); err != nil {
		return lost(err)
	}
	err = pull(bufio.NewReaderSize(heardReader{lc, heard, hold}, fetchBuffer), p, sp, need, received, cfg.DeadAfter, func(t time.Time) { lc.until = t }, k.seal)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if err == nil {
		lc.until = time.Time{}
		// The parent may leave once its children say so (see feeding);
		// a parent of an earlier build reads nothing more.
		writeFrame(lc, msgHeld, nil)
	}
	return err
}

// sayHeld tells a parent that this node holds its whole stripe already
// (a child moved there after it had it, a node resumed with it): the
// parent counts its children's word before it leaves the session (see
// feeding), and would wait for the seed's end without it. A parent that
// cannot be reached or refuses costs nothing: the stripe is whole.
func sayHeld(ctx context.Context, p parentMsg, self helloMsg, sp *spool, cfg Config, k keys) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout+2*cfg.DeadAfter)
	defer cancel()
	d := net.Dialer{Timeout: cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", p.addr.String())
	if err != nil {
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := newCtrl(conn, cfg.DeadAfter)
	if k.dataHello(c, cfg.DeadAfter, self.id, self.name) != nil {
		return
	}
	w := wantMsg{session: sp.m.Session, stripes: p.stripes, stripe: p.stripe, have: sp.bitmapCopy()}
	if writeFrame(c.conn, msgWant, w.encode()) != nil || writeFrame(c.conn, msgHeld, nil) != nil {
		return
	}
	// What the parent sends (the block hashes of chunks this node lacks in
	// the other stripe) is read to its close: leaving it unread would
	// reset the connection, and could take the held frame with it.
	io.Copy(io.Discard, c.conn)
}

// remoteIP is the address conn comes from (IPv4 unmapped), or the zero
// Addr.
func remoteIP(conn net.Conn) netip.Addr {
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// heardReader calls heard each time bytes come, and hold (if set) before
// it reads more: a hold leaves the parent's bytes in the connection, and
// TCP slows its flow; one that lasted its longest lets a trickle through.
type heardReader struct {
	r     io.Reader
	heard func()
	hold  func() bool
}

func (h heardReader) Read(p []byte) (int, error) {
	if h.hold != nil && h.hold() {
		p = p[:min(len(p), trickle)]
	}
	n, err := h.r.Read(p)
	if n > 0 {
		h.heard()
	}
	return n, err
}

// pull reads a parent's frames until every block of its stripe is held
// (stored, or empty and marked so by its chunk's hashes) and the block
// hashes of every chunk in need have come. Nothing it
// has not verified is stored. A parent that sends nothing new for stall
// (zero: never), dead_after in a session, only pings, blocks held here
// already, hashes with no block after them, or a frame a byte at a time,
// delivers nothing: it is given up and complained of as stalled. The seed
// judges whether it had anything to send. until, if set, is told by when
// the parent must have sent something new, for the connection's reads.
func pull(br *bufio.Reader, p parentMsg, sp *spool, need map[int]bool, received func(int), stall time.Duration, until func(time.Time), seal *sealer) error {
	m := sp.m
	stripes, stripe := int(p.stripes), int(p.stripe)
	lastData := time.Now()
	stalled := func() error {
		return &fetchError{kind: complainStalled, err: fmt.Errorf("parent %s sent no data for %s while %d blocks of stripe %d were missing here", p.addr, time.Since(lastData).Round(time.Second), sp.stripeMissing(stripes, stripe), stripe)}
	}
	lost := func(err error) error {
		if stall > 0 && time.Since(lastData) >= stall {
			return stalled() // the read ran out of the time to the next data
		}
		return &fetchError{kind: complainLost, err: err}
	}
	corrupt := func(g int, format string, a ...any) error {
		return &fetchError{kind: complainCorrupt, block: uint32(g), err: fmt.Errorf("parent %s %s", p.addr, fmt.Sprintf(format, a...))}
	}
	bpc := m.blocksPerChunk()
	leavesOf, leaves := -1, []byte(nil)
	scratch := make([]byte, m.BlockSize) // a decompressed block
	zbuf := make([]byte, 0, m.BlockSize) // the same, compressed again
	for sp.stripeMissing(stripes, stripe) > 0 || len(need) > 0 {
		if stall > 0 && until != nil {
			until(lastData.Add(stall))
		}
		t, n, err := readHeader(br)
		if err != nil {
			return lost(fmt.Errorf("read from parent %s: %w", p.addr, err))
		}
		limit := 0 // a ping, or a frame of a type a parent never sends
		switch t {
		case msgRefuse:
			limit = maxRefuseLen
		case msgBlock:
			limit = blockHeaderLen + m.BlockSize
			if seal != nil {
				limit += sealOverhead
			}
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
		progress := false
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
			if err := sp.putLeaves(i, leaves); err != nil {
				return err
			}
			// Hashes alone are progress only where no block is to
			// follow them: else the blocks are.
			progress = need[i] && !missingIn(sp, first, count, stripes, stripe)
			delete(need, i)
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
			case flags&^(blockFlagSealed|blockFlagZstd) != 0:
				return corrupt(g, "sent block %d with unknown flags %#x", g, flags)
			case (seal != nil) != (flags&blockFlagSealed != 0):
				return corrupt(g, "sent block %d with flags %#x in a session with%s a fleet secret", g, flags, map[bool]string{true: "", false: "out"}[seal != nil])
			}
			if seal != nil {
				opened, err := seal.open(g, data)
				if err != nil {
					return corrupt(g, "sent block %d that does not open with the session's key", g)
				}
				data = opened
			}
			var zipped []byte
			if flags&blockFlagZstd != 0 {
				plain, err := unsqueeze(scratch, data, m.BlockLen(g))
				if err != nil {
					return corrupt(g, "sent block %d that does not decompress: %v", g, err)
				}
				zipped, data = data, plain
			}
			j := g % bpc
			if len(data) != m.BlockLen(g) || sha256.Sum256(data) != [32]byte(leaves[32*j:32*j+32]) {
				return corrupt(g, "sent block %d that does not match the signed manifest", g)
			}
			if !sp.has(g) {
				progress = true
				// Counted before it is stored: the last block stored
				// completes the package, and the result that follows
				// counts it.
				received(len(data))
				if zipped != nil {
					// Children get the parent's bytes only if they are
					// the block's frame alone (see oneFrame), else this
					// node's own compression of it; either is ready
					// before the block is held, when feeders wake.
					if !oneFrame(zipped) {
						zipped = squeeze(zbuf[:0], data)
					}
					if zipped != nil {
						sp.wire.put(g, bytes.Clone(zipped))
					}
				}
				if err := sp.put(g, data); err != nil {
					return err
				}
			}
		default:
			return corrupt(-1, "sent an unexpected %s frame", t)
		}
		if progress {
			lastData = time.Now()
		} else if stall > 0 && time.Since(lastData) > stall {
			return stalled()
		}
		br.Discard(n)
	}
	return nil
}

// missingIn reports whether sp lacks a block of stripe among the count
// blocks from first.
func missingIn(sp *spool, first, count, stripes, stripe int) bool {
	for g := first; g < first+count; g++ {
		if g%stripes == stripe && !sp.has(g) {
			return true
		}
	}
	return false
}

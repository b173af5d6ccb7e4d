package relay

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// What the seed believes. A node's word alone never convicts another node:
// a complaint moves the complainer, and only what the seed sees for itself
// fails a relay.
const (
	// distrustAfter: complaints of a relay from this many different
	// children make it a leaf, since they may all be right even when it
	// sends the seed good data.
	distrustAfter = 2
	// falseAccusations: a node whose corrupt-data complaints against this
	// many different relays the seed found false is dropped.
	falseAccusations = 2
	// probeWait bounds the seed's own fetch of a block a child says was
	// corrupt: a relay that verified the block has it at hand.
	probeWait = 10 * time.Second
	// The session's end: once a node has applied the package after T,
	// the rest have until deadlineFactor × T plus SessionGrace; before
	// that, the package at deadlineRate (1 Mbit/s) plus SessionGrace.
	deadlineFactor = 4
	deadlineRate   = 128 << 10
)

// errLied is the verdict on a relay whose block, fetched by the seed
// itself, does not match the signed manifest.
var errLied = errors.New("sent data that does not match the signed manifest")

// verdict is the outcome of the seed's probe of an accused relay.
type verdict struct {
	accused, accuser *node
	block            int
	err              error // nil: it sent the block intact; errLied; else no verdict
}

// complaint handles a node's report that its parent failed it: the node
// moves; a corrupt block makes the seed fetch that block from the accused
// itself, and decide on what it sees.
func (s *seedRun) complaint(ctx context.Context, n *node, c complainMsg) {
	st := int(c.stripe) % s.t.stripes
	parent, p := seedID, s.byID(c.parent)
	if c.parent != (NodeID{}) {
		if p == nil {
			return // not a node of this session
		}
		parent = p.id
	}
	if s.t.parentOf(n.id, st) != parent {
		return // stale: it was moved already
	}
	s.opt.Log.Warn("node complains of its parent", "node", n.label(), "parent", s.parentLabel(parent), "detail", c.detail)
	s.tell(s.t.complain(n.id, st, parent, time.Now()), true)
	if p == nil || (c.kind != complainCorrupt && c.kind != complainStalled) {
		return
	}
	if p.accusedBy == nil {
		p.accusedBy = map[int]bool{}
	}
	p.accusedBy[n.id] = true
	if len(p.accusedBy) == distrustAfter {
		s.opt.Log.Warn("children keep complaining of a relay: it feeds no one now", "node", p.label())
		s.tell(s.t.distrust(p.id, time.Now()), true)
	}
	if c.kind != complainCorrupt || p.probing || p.c == nil {
		return
	}
	g := int(c.block)
	if g >= s.m.Blocks() {
		return
	}
	p.probing = true
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		pctx, cancel := context.WithTimeout(ctx, probeWait)
		defer cancel()
		err := probeBlock(pctx, p.peer.Addr, s.m, s.t.stripes, g, s.cfg)
		select {
		case s.events <- event{n: p, verdict: &verdict{accused: p, accuser: n, block: g, err: err}}:
		case <-ctx.Done():
		}
	}()
}

// judge acts on a probe: a relay that sent the seed a bad block relays no
// more and is failed; a node that accused relays the seed found honest
// often enough is dropped.
func (s *seedRun) judge(v *verdict) {
	p, n := v.accused, v.accuser
	p.probing = false
	what := fmt.Sprintf("block %d (chunk %d)", v.block, v.block/s.m.blocksPerChunk())
	switch {
	case errors.Is(v.err, errLied):
		if p.liar {
			return
		}
		p.liar = true
		if p.state == stateActive || p.state == stateOK {
			p.state = stateFailed
		}
		p.err = fmt.Sprintf("relayed a corrupt %s: %s complained, and it sent the seed a corrupt copy too", what, n.label())
		s.opt.Log.Warn("relay caught sending corrupt data", "node", p.label(), "block", v.block)
		if p.c != nil {
			s.lost(p, errors.New(p.err))
		} else {
			s.tell(s.t.lose(p.id, true, time.Now()), true)
		}
	case v.err == nil:
		if n.falselyAccused == nil {
			n.falselyAccused = map[int]bool{}
		}
		n.falselyAccused[p.id] = true
		s.opt.Log.Warn("complaint not confirmed: the relay sent the seed that block intact", "node", n.label(), "relay", p.label(), "block", v.block)
		if len(n.falselyAccused) >= falseAccusations && !n.liar {
			n.liar = true
			n.state, n.err = stateFailed, fmt.Sprintf("accused %d relays of sending corrupt data that they sent the seed intact", len(n.falselyAccused))
			if n.c != nil {
				s.lost(n, errors.New(n.err))
			}
		}
	default:
		s.opt.Log.Info("no verdict on a complaint", "relay", p.label(), "block", v.block, "err", v.err)
	}
}

// probeBlock fetches block g from the relay at addr as a child holding
// every other block would, and checks it and its chunk's block hashes
// against the manifest: errLied if either fails, nil if both match, any
// other error if there is no verdict (unreachable, no such session).
func probeBlock(ctx context.Context, addr netip.AddrPort, m *Manifest, stripes, g int, cfg Config) error {
	d := net.Dialer{Timeout: cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	have := newBitmap(m.Blocks())
	for i := range have {
		have[i] = 0xff
	}
	have[g/8] &^= 1 << (g % 8)
	w := wantMsg{session: m.Session, stripes: uint8(stripes), stripe: uint8(g % stripes), have: have}
	if err := writeFrame(conn, msgHello, helloMsg{role: roleData, name: "seed"}.encode()); err != nil {
		return err
	}
	if err := writeFrame(conn, msgWant, w.encode()); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, fetchBuffer)
	bpc := m.blocksPerChunk()
	i := g / bpc
	var leaves []byte
	for {
		t, n, err := readHeader(br)
		if err != nil {
			return err
		}
		limit := maxControlLen
		switch t {
		case msgBlock:
			limit = blockHeaderLen + m.BlockSize
		case msgHashes:
			limit = 4 + 32*bpc
		}
		if n > limit {
			return fmt.Errorf("a %d-byte %s frame: %w", n, t, errLied)
		}
		payload, err := br.Peek(n)
		if err != nil {
			return err
		}
		switch t {
		case msgPing:
		case msgRefuse:
			return fmt.Errorf("%s refused the seed's fetch", addr)
		case msgHashes:
			first, count := m.chunkBlocks(i)
			if n < 4 || int(binary.BigEndian.Uint32(payload)) != i || len(payload)-4 != 32*count || sha256.Sum256(payload[4:]) != m.Chunks[i] {
				return fmt.Errorf("block hashes for chunk %d (block %d): %w", i, first, errLied)
			}
			leaves = append([]byte(nil), payload[4:]...)
		case msgBlock:
			if n < blockHeaderLen || leaves == nil || int(binary.BigEndian.Uint32(payload)) != g || payload[4] != 0 {
				return fmt.Errorf("a block frame that is not block %d: %w", g, errLied)
			}
			data, j := payload[blockHeaderLen:], g%bpc
			if len(data) != m.BlockLen(g) || sha256.Sum256(data) != [32]byte(leaves[32*j:32*j+32]) {
				return fmt.Errorf("block %d: %w", g, errLied)
			}
			return nil
		default:
			return fmt.Errorf("an unexpected %s frame: %w", t, errLied)
		}
		br.Discard(n)
	}
}

// checkDeadline ends the session for nodes still at work past its deadline:
// a node that is silent, stalled or lying about progress cannot keep a
// session, and the honest agents it holds busy, from ending.
func (s *seedRun) checkDeadline(now time.Time) {
	if s.deadline.IsZero() {
		s.deadline = s.start.Add(s.cfg.SessionGrace + time.Duration(s.m.Size/deadlineRate)*time.Second)
	}
	if s.over || now.Before(s.deadline) {
		return
	}
	for _, n := range s.nodes {
		if n.state != stateActive {
			continue
		}
		n.state, n.seconds = stateFailed, now.Sub(s.start).Seconds()
		n.err = fmt.Sprintf("timed out: held %s of %s when the session ended after %s; run the seed again to resume", HumanBytes(n.held), HumanBytes(s.m.Size), now.Sub(s.start).Round(time.Second))
		s.opt.Log.Warn("node timed out", "node", n.label())
		if n.c != nil {
			n.c.send(msgEnd, nil)
			n.c.close()
			n.c = nil
			s.tell(s.t.lose(n.id, false, now), true)
		}
	}
	s.over = true
}

// applied narrows the deadline once the first node applied the package:
// the others are given deadlineFactor times as long, and SessionGrace more.
func (s *seedRun) applied(after time.Duration) {
	if s.firstDone != 0 {
		return
	}
	s.firstDone = after
	end := s.start.Add(deadlineFactor*after + s.cfg.SessionGrace)
	if s.deadline.IsZero() || end.Before(s.deadline) {
		s.deadline = end
	}
}

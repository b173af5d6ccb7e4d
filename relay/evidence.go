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

	// wordBudget: a node's complaints help make at most this many relays
	// feed no one. Two receivers that complain of every parent they are
	// given (one host may answer as two) cost the tree one relay, not
	// every relay they meet; complaints past it still move the
	// complainer, and the seed's probes still judge.
	wordBudget = 1
	// falseAccusations: a node this many of whose corrupt-data complaints
	// the seed found unconfirmed is heard no more: its
	// complaints still move it, but the seed fetches on its word no more,
	// and they count against no relay. It is not failed for them: a relay
	// can tell the seed's fetch from a child's, and send the seed a block
	// intact that it corrupts for one child, so an intact block proves
	// nothing against the child. A liar so costs the seed two fetches,
	// and itself its parents.
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

// What the seed's own fetch from an accused relay shows.
type probeOutcome int

const (
	probeNone        probeOutcome = iota // no verdict: the seed's own session ended, say
	probeIntact                          // it sent the block, and the block is good
	probeLied                            // it sent data that does not match the signed manifest
	probeAlive                           // it kept the connection alive, and sent no data in time
	probeUnreachable                     // it could not be reached, refused, or hung up
)

// verdict is the outcome of the seed's probe of an accused relay.
type verdict struct {
	accused, accuser *node
	stripe, block    int
	kind             uint8 // the complaint's
	outcome          probeOutcome
	err              error
}

// complaint handles a node's report that its parent failed it. The node
// moves at once. Then the seed fetches from the accused itself, as a child
// would, and decides on what it sees: a corrupt block fails the relay, a
// refused or hung-up connection makes it a leaf, and a block it sends
// intact counts against the accuser. Complaints from distrustAfter
// different children also make a relay a leaf.
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
	if p == nil || p.c == nil || n.unheard {
		return // the seed, a relay the seed lost too, or a word spent: nothing to judge
	}
	if p.accusedBy == nil {
		p.accusedBy = map[int]bool{}
	}
	// A parent whose own parent failed it has nothing to send: a stall
	// counts against it only if it says it holds more than the child, or
	// holds far less than its own parent (it is not fetching: a root that
	// never asks the seed for its stripe starves the whole tree).
	if (c.kind != complainStalled || s.t.holdsMore(p.id, n.id, st) || s.t.lagsParent(p.id, st)) && n.distrusted < wordBudget {
		p.accusedBy[n.id] = true
	}
	if len(p.accusedBy) == distrustAfter {
		s.opt.Log.Warn("children keep complaining of a relay: it feeds no one now", "node", p.label())
		for id := range p.accusedBy {
			s.nodes[id-1].distrusted++
		}
		s.tell(s.t.distrust(p.id, time.Now()), true)
	}
	// Fetches on one node's word are bounded as its false accusations
	// are: those in flight count as found false until judged.
	if p.probing || n.unconfirmed+n.checking >= falseAccusations {
		return
	}
	g, wait := st, probeLiveWait(s.cfg)
	if c.kind == complainCorrupt {
		if int(c.block) >= s.m.Blocks() {
			return
		}
		g, wait = int(c.block), probeWait
	}
	p.probing = true
	n.checking++
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		pctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		out, err := probeBlock(pctx, p.peer.Addr, s.m, s.t.stripes, g, s.cfg, s.keys)
		v := &verdict{accused: p, accuser: n, stripe: st, block: g, kind: c.kind, outcome: out, err: err}
		select {
		case s.events <- event{n: p, verdict: v}:
		case <-ctx.Done():
		}
	}()
}

// probeLiveWait is how long the seed's probe of a relay that hung up on a
// child waits for a first frame: a relay pings an idle link every heartbeat.
func probeLiveWait(cfg Config) time.Duration { return cfg.DialTimeout + 4*cfg.Heartbeat }

// judge acts on a probe.
func (s *seedRun) judge(v *verdict) {
	p, n := v.accused, v.accuser
	p.probing = false
	n.checking--
	what := fmt.Sprintf("block %d (chunk %d)", v.block, v.block/s.m.blocksPerChunk())
	switch {
	case v.outcome == probeLied:
		if p.liar {
			return
		}
		p.liar = true
		p.state = stateFailed
		p.err = fmt.Sprintf("relayed a corrupt %s: %s complained, and it sent the seed corrupt data too (%v)", what, n.label(), v.err)
		s.opt.Log.Warn("relay caught sending corrupt data", "node", p.label(), "block", v.block)
		s.forgive(n, v.stripe)
		if p.c != nil {
			s.lost(p, errors.New(p.err))
		} else {
			s.tell(s.t.lose(p.id, true, time.Now()), true)
		}
	case v.outcome == probeUnreachable && v.kind != complainCorrupt:
		s.opt.Log.Warn("relay refuses children: it feeds no one now", "node", p.label(), "err", v.err)
		s.tell(s.t.distrust(p.id, time.Now()), true)
		s.forgive(n, v.stripe)
	case v.outcome == probeIntact && v.kind == complainCorrupt:
		n.unconfirmed++
		s.opt.Log.Warn("complaint not confirmed: the relay sent the seed that block intact", "node", n.label(), "relay", p.label(), "block", v.block)
		if n.unconfirmed >= falseAccusations && !n.unheard {
			n.unheard = true
			s.opt.Log.Warn("node's complaints are checked no more: the blocks it said were corrupt came to the seed intact; it still moves on them", "node", n.label(), "unconfirmed", n.unconfirmed)
		}
	default:
		s.opt.Log.Debug("probe of an accused relay", "relay", p.label(), "outcome", v.outcome, "err", v.err)
	}
	s.release(p) // held while probed: done, with its children done, it may go
}

// forgive takes back the strike a child got for a parent the seed found at
// fault, so a child that met several bad relays in a row does not wait.
func (s *seedRun) forgive(n *node, st int) {
	if n.c != nil && n.state == stateActive {
		s.tell(s.t.forgive(n.id, st, time.Now()), true)
	}
}

// probeBlock fetches block g from the relay at addr as a child holding
// every other block would, and checks it and its chunk's block hashes
// against the manifest. Until ctx ends it waits for the block; a relay
// that has only pinged by then is alive.
func probeBlock(ctx context.Context, addr netip.AddrPort, m *Manifest, stripes, g int, cfg Config, k keys) (probeOutcome, error) {
	d := net.Dialer{Timeout: cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return probeUnreachable, err
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
	if err := k.dataHello(newCtrl(conn, cfg.DeadAfter), cfg.DeadAfter, NodeID{}, "seed"); err != nil {
		return probeUnreachable, err
	}
	if err := writeFrame(conn, msgWant, w.encode()); err != nil {
		return probeUnreachable, err
	}
	br := bufio.NewReaderSize(conn, fetchBuffer)
	bpc := m.blocksPerChunk()
	i := g / bpc
	alive := false
	var leaves []byte
	for {
		t, n, err := readHeader(br)
		if err != nil {
			switch {
			case ctx.Err() != nil && alive:
				return probeAlive, nil
			case ctx.Err() != nil:
				return probeNone, ctx.Err()
			}
			return probeUnreachable, err
		}
		limit := 0 // a ping, or a frame of a type a parent never sends
		switch t {
		case msgRefuse:
			limit = maxRefuseLen
		case msgBlock:
			limit = blockHeaderLen + m.BlockSize + k.overhead()
		case msgHashes:
			limit = 4 + 32*bpc
		}
		if n > limit {
			return probeLied, fmt.Errorf("a %d-byte %s frame", n, t)
		}
		payload, err := br.Peek(n)
		if err != nil {
			return probeUnreachable, err
		}
		alive = true
		switch t {
		case msgPing:
		case msgRefuse:
			return probeUnreachable, fmt.Errorf("%s refused the seed's fetch", addr)
		case msgHashes:
			if n < 4 || int(binary.BigEndian.Uint32(payload)) != i {
				break // another chunk's: a relay may send those too
			}
			_, count := m.chunkBlocks(i)
			if len(payload)-4 != 32*count || sha256.Sum256(payload[4:]) != m.Chunks[i] {
				return probeLied, fmt.Errorf("block hashes of chunk %d that do not match the signed manifest", i)
			}
			leaves = append([]byte(nil), payload[4:]...)
		case msgBlock:
			sealed := byte(0)
			if k.seal != nil {
				sealed = blockFlagSealed
			}
			if n < blockHeaderLen || leaves == nil || int(binary.BigEndian.Uint32(payload)) != g || payload[4]&^blockFlagZstd != sealed {
				return probeLied, fmt.Errorf("a block frame that is not block %d", g)
			}
			data, j := payload[blockHeaderLen:], g%bpc
			if k.seal != nil {
				if data, err = k.seal.open(g, data); err != nil {
					return probeLied, fmt.Errorf("block %d that does not open with the session's key", g)
				}
			}
			if payload[4]&blockFlagZstd != 0 {
				if data, err = unsqueeze(make([]byte, m.BlockSize), data, m.BlockLen(g)); err != nil {
					return probeLied, fmt.Errorf("block %d that does not decompress", g)
				}
			}
			if len(data) != m.BlockLen(g) || sha256.Sum256(data) != [32]byte(leaves[32*j:32*j+32]) {
				return probeLied, fmt.Errorf("block %d that does not match the signed manifest", g)
			}
			return probeIntact, nil
		default:
			return probeLied, fmt.Errorf("an unexpected %s frame", t)
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
			n.c.end()
			n.c = nil
			s.stopReports(n)
			s.tell(s.t.lose(n.id, false, now), true)
		}
	}
	s.over = true
}

// applied notes that a node applied the package after this long, and
// narrows the deadline: the others are given deadlineFactor times as long
// as the first took, and SessionGrace more. What the first took is counted
// from what the seed saw itself: no node holds the package before the
// seed read each of its blocks to send it, so a node that says it applied
// sooner (one that lies, to have the rest failed) narrows nothing until
// then (the tick narrows it once it has).
func (s *seedRun) applied(after time.Duration) {
	if s.firstOK == 0 {
		s.firstOK = after
	}
	s.narrow()
}

// narrow narrows the deadline as applied says, once it can.
func (s *seedRun) narrow() {
	if s.firstDone != 0 || s.firstOK == 0 {
		return
	}
	sent, ok := s.src.copyRead()
	if !ok {
		return
	}
	s.firstDone = max(s.firstOK, sent.Sub(s.start))
	end := s.start.Add(deadlineFactor*s.firstDone + s.cfg.SessionGrace)
	if s.deadline.IsZero() || end.Before(s.deadline) {
		s.deadline = end
	}
}

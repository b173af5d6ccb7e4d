package relay

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"
)

// NodeID identifies one receiver process; names are for people and need not be unique.
type NodeID [16]byte

func (id NodeID) String() string { return fmt.Sprintf("%x", id[:]) }

// Short is the first 8 hex digits, enough to tell nodes apart in a table.
func (id NodeID) Short() string { return id.String()[:8] }

// ParseNodeID reads the 32-hex-digit form.
func ParseNodeID(s string) (NodeID, error) {
	var id NodeID
	if len(s) != 32 {
		return id, fmt.Errorf("node id %q: want 32 hex digits", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("node id %q: %w", s, err)
	}
	return id, nil
}

// Connection roles announced in hello.
const (
	roleControl uint8 = 1
	roleData    uint8 = 2
)

// Refusal codes, append-only. The text beside the code is for people.
const (
	refuseBusy      uint8 = 1
	refuseUntrusted uint8 = 2
	refuseBadOffer  uint8 = 3
	refuseNoSpace   uint8 = 4
	refuseNoSession uint8 = 5
	refuseStale     uint8 = 6
	refuseLocal     uint8 = 7
)

// Complaint kinds, append-only.
const (
	complainLost    uint8 = 1 // the connection to the parent failed or went silent
	complainCorrupt uint8 = 2 // the parent sent a block or block hashes that failed their hash
	complainRefused uint8 = 3 // the parent refused the want
	complainStalled uint8 = 4 // the parent kept the link alive but sent no data
)

const maxText = 4096

type helloMsg struct {
	role   uint8
	id     NodeID
	name   string
	nonce  [16]byte // fresh: what the listener's proof is bound to
	sealed bool     // the connector holds a fleet secret
}

func (m helloMsg) encode() []byte {
	var e enc
	e.u8(m.role)
	e.id(m.id)
	e.str(m.name)
	e.id(m.nonce)
	e.bool(m.sealed)
	return e.b
}

func decodeHello(p []byte) (helloMsg, error) {
	d := dec{b: p}
	m := helloMsg{role: d.u8(), id: d.id(), name: d.str(maxText), nonce: d.id(), sealed: d.bool()}
	if d.err == nil && m.role != roleControl && m.role != roleData {
		d.fail(fmt.Errorf("unknown role %d", m.role))
	}
	return m, wrapDecode("hello", d.err)
}

type welcomeMsg struct {
	id     NodeID
	name   string
	busy   bool
	nonce  [16]byte // fresh: what the connector's proof is bound to
	sealed bool     // the listener holds a fleet secret: a proof frame follows
}

func (m welcomeMsg) encode() []byte {
	var e enc
	e.id(m.id)
	e.str(m.name)
	e.bool(m.busy)
	e.id(m.nonce)
	e.bool(m.sealed)
	return e.b
}

func decodeWelcome(p []byte) (welcomeMsg, error) {
	d := dec{b: p}
	m := welcomeMsg{id: d.id(), name: d.str(maxText), busy: d.bool(), nonce: d.id(), sealed: d.bool()}
	return m, wrapDecode("welcome", d.err)
}

// proofMsg shows its sender holds the fleet secret (Secret.proof).
type proofMsg struct {
	mac [32]byte
}

func (m proofMsg) encode() []byte { return m.mac[:] }

func decodeProof(p []byte) (proofMsg, error) {
	d := dec{b: p}
	m := proofMsg{mac: d.hash()}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d bytes after the proof", len(d.b)))
	}
	return m, wrapDecode("proof", d.err)
}

type acceptMsg struct {
	held    uint64 // bytes already held from an earlier, interrupted session
	applied bool   // nothing to send: this very session, or the same package (upToDate), was applied here before
	// upToDate: the same package, under the same name, was applied here
	// with the same actions by an earlier session; applied is set too.
	upToDate bool
	// seedTimeout is how long the node waits on a silent seed, so the
	// seed pings it no more often than it needs; zero: not said (a node
	// of an earlier build).
	seedTimeout time.Duration
	// datagrams: the node takes report frames, and sends its progress
	// by datagram where one says so; false from a node of an earlier
	// build.
	datagrams bool
}

func (m acceptMsg) encode() []byte {
	var e enc
	e.u64(m.held)
	e.bool(m.applied)
	e.bool(m.upToDate)
	e.u32(uint32(min(m.seedTimeout.Milliseconds(), math.MaxUint32)))
	e.bool(m.datagrams)
	return e.b
}

func decodeAccept(p []byte) (acceptMsg, error) {
	d := dec{b: p}
	m := acceptMsg{held: d.u64(), applied: d.bool(), upToDate: d.bool()}
	if d.err == nil && len(d.b) > 0 { // absent from a node of an earlier build
		m.seedTimeout = time.Duration(d.u32()) * time.Millisecond
	}
	if d.err == nil && len(d.b) > 0 {
		m.datagrams = d.bool()
	}
	if d.err == nil && m.upToDate && !m.applied {
		d.fail(errors.New("up to date, yet not applied"))
	}
	return m, wrapDecode("accept", d.err)
}

type refuseMsg struct {
	code   uint8
	reason string
}

func (m refuseMsg) encode() []byte {
	var e enc
	e.u8(m.code)
	e.str(m.reason)
	return e.b
}

func decodeRefuse(p []byte) (refuseMsg, error) {
	d := dec{b: p}
	m := refuseMsg{code: d.u8(), reason: d.str(maxText)}
	return m, wrapDecode("refuse", d.err)
}

// maxStripes is how many trees a session may use.
const maxStripes = 2

// parentMsg tells a node where to fetch the blocks of one stripe from.
// Block g belongs to stripe g % stripes.
type parentMsg struct {
	id      NodeID // zero for the seed
	addr    netip.AddrPort
	stripes uint8
	stripe  uint8
	// feeds is how many children the seed gave the node in stripe, as
	// of this frame (-1: not said, by a seed of an earlier build).
	feeds int
	// kids are those children, by the node id each says in its hello and
	// the address the seed reached it at (nil: not said, by a seed of an
	// earlier build).
	kids []kid
}

// kid is a child the seed gave a node: only these are fed.
type kid struct {
	id   NodeID
	addr netip.Addr
}

// maxKids bounds the children one parent frame names: more than a relay
// ever feeds in one stripe.
const maxKids = 64

func (m parentMsg) encode() []byte {
	var e enc
	e.id(m.id)
	e.str(m.addr.String())
	e.u8(m.stripes)
	e.u8(m.stripe)
	e.u8(uint8(min(max(m.feeds, 0), math.MaxUint8)))
	if m.kids != nil {
		e.u8(uint8(min(len(m.kids), maxKids)))
		for _, k := range m.kids[:min(len(m.kids), maxKids)] {
			e.id(k.id)
			e.raw(asIP16(k.addr))
		}
	}
	return e.b
}

func decodeParent(p []byte) (parentMsg, error) {
	d := dec{b: p}
	m := parentMsg{id: d.id()}
	addr := d.str(64)
	m.stripes, m.stripe = d.u8(), d.u8()
	m.feeds = -1
	if d.err == nil && len(d.b) > 0 { // absent from a seed of an earlier build
		m.feeds = int(d.u8())
	}
	if d.err == nil && len(d.b) > 0 { // so are the kids
		n := int(d.u8())
		if n > maxKids {
			d.fail(fmt.Errorf("%d children", n))
		}
		m.kids = make([]kid, 0, min(n, maxKids))
		for i := 0; i < n && d.err == nil; i++ {
			k := kid{id: d.id()}
			var a [16]byte
			copy(a[:], d.take(16))
			if a != [16]byte{} {
				k.addr = netip.AddrFrom16(a).Unmap()
			}
			m.kids = append(m.kids, k)
		}
	}
	if d.err == nil {
		a, err := netip.ParseAddrPort(addr)
		if err != nil {
			d.fail(err)
		}
		m.addr = a
	}
	if d.err == nil && (m.stripes == 0 || m.stripes > maxStripes || m.stripe >= m.stripes) {
		d.fail(fmt.Errorf("stripe %d of %d (this build splits into at most %d)", m.stripe, m.stripes, maxStripes))
	}
	return m, wrapDecode("parent", d.err)
}

// reportMsg tells a node where to send its progress: by datagram to the
// seed's address at port, each datagram carrying token and sealed with a
// key derived from it (see datagram); port zero: over the control
// connection, from now on.
type reportMsg struct {
	port  uint16
	token [16]byte
}

func (m reportMsg) encode() []byte {
	var e enc
	e.u16(m.port)
	e.id(m.token)
	return e.b
}

func decodeReport(p []byte) (reportMsg, error) {
	d := dec{b: p}
	m := reportMsg{port: d.u16(), token: d.id()}
	return m, wrapDecode("report", d.err)
}

// wantMsg asks a parent for every block of a stripe the child does not hold.
type wantMsg struct {
	session [16]byte
	stripes uint8
	stripe  uint8
	have    []byte // bitmap, bit g set (LSB first) = block g held
}

// wantLen is the length of every want for a session of m: its bitmap has
// one bit per block.
func wantLen(m *Manifest) int { return 16 + 1 + 1 + 4 + (m.Blocks()+7)/8 }

func (m wantMsg) encode() []byte {
	var e enc
	e.id(m.session)
	e.u8(m.stripes)
	e.u8(m.stripe)
	e.blob(m.have)
	return e.b
}

func decodeWant(p []byte) (wantMsg, error) {
	d := dec{b: p}
	m := wantMsg{session: d.id(), stripes: d.u8(), stripe: d.u8(), have: d.blob(maxBlocks / 8)}
	if d.err == nil && (m.stripes == 0 || m.stripe >= m.stripes) {
		d.fail(fmt.Errorf("stripe %d of %d", m.stripe, m.stripes))
	}
	return m, wrapDecode("want", d.err)
}

// check holds the want to the session: a bitmap of exactly its blocks.
func (m wantMsg) check(man *Manifest) error {
	if want := (man.Blocks() + 7) / 8; len(m.have) != want {
		return fmt.Errorf("want carries a %d-byte bitmap, the session's is %d", len(m.have), want)
	}
	return nil
}

type progressMsg struct {
	held     uint64   // bytes verified and held
	received uint64   // bytes downloaded in this session
	stripes  []uint64 // bytes held of each stripe, once the node knows the stripes
	// millis is how long the node's session had run when it wrote the
	// report, in milliseconds, at least 1, so the seed measures its rates
	// on the node's clock and a report late on the wire slows no sample;
	// zero: not said (a node of an earlier build).
	millis uint64
	// stalls: the node's flows to children that have taken nothing for
	// a while (see stallAfter); starved: its parents that have sent it
	// nothing, not even a ping, for a while. At most maxStalls of each.
	stalls, starved []stallReport
}

// A stallReport says the flow between this node and peer (a child, or a
// parent) at addr, in a stripe, has moved nothing for millis milliseconds.
type stallReport struct {
	peer   NodeID
	addr   netip.Addr
	stripe uint8
	millis uint32
}

// maxStalls bounds the stalls one progress frame reports: more children
// than a relay ever feeds at once.
const maxStalls = 16

func encodeStalls(e *enc, rs []stallReport) {
	rs = rs[:min(len(rs), maxStalls)]
	e.u8(uint8(len(rs)))
	for _, r := range rs {
		e.id(r.peer)
		e.raw(asIP16(r.addr))
		e.u8(r.stripe)
		e.u32(r.millis)
	}
}

func decodeStalls(d *dec) []stallReport {
	n := int(d.u8())
	if n > maxStalls {
		d.fail(fmt.Errorf("%d stalls", n))
		return nil
	}
	var rs []stallReport
	for range n {
		peer := d.id()
		var a [16]byte
		copy(a[:], d.take(16))
		var addr netip.Addr // all zeros: not said
		if a != [16]byte{} {
			addr = netip.AddrFrom16(a).Unmap()
		}
		rs = append(rs, stallReport{peer: peer, addr: addr, stripe: d.u8(), millis: d.u32()})
	}
	return rs
}

// asIP16 is a as 16 bytes, IPv4 mapped; the zero Addr is all zeros.
func asIP16(a netip.Addr) []byte {
	if !a.IsValid() {
		return make([]byte, 16)
	}
	b := a.As16()
	return b[:]
}

func (m progressMsg) encode() []byte {
	var e enc
	e.u64(m.held)
	e.u64(m.received)
	e.u8(uint8(len(m.stripes)))
	for _, h := range m.stripes {
		e.u64(h)
	}
	e.u64(m.millis)
	encodeStalls(&e, m.stalls)
	encodeStalls(&e, m.starved)
	return e.b
}

func decodeProgress(p []byte) (progressMsg, error) {
	d := dec{b: p}
	m := progressMsg{held: d.u64(), received: d.u64()}
	if n := int(d.u8()); d.err == nil && n > maxStripes {
		d.fail(fmt.Errorf("%d stripes", n))
	} else if n > 0 {
		m.stripes = make([]uint64, n)
		for i := range m.stripes {
			m.stripes[i] = d.u64()
		}
	}
	if d.err == nil && len(d.b) > 0 { // absent from a node of an earlier build
		m.millis = d.u64()
	}
	if d.err == nil && len(d.b) > 0 { // absent from a node of an earlier build
		m.stalls = decodeStalls(&d)
		m.starved = decodeStalls(&d)
	}
	return m, wrapDecode("progress", d.err)
}

type resultMsg struct {
	ok       bool
	err      string
	received uint64
	millis   uint64
	flushed  bool // written to a target and flushed to stable storage
	// output is the tail of what the apply's command wrote to its stdout
	// and stderr, at most maxText bytes; a node of an earlier build sends
	// none.
	output string
}

func (m resultMsg) encode() []byte {
	var e enc
	e.bool(m.ok)
	e.str(m.err)
	e.u64(m.received)
	e.u64(m.millis)
	e.bool(m.flushed)
	e.str(m.output)
	return e.b
}

func decodeResult(p []byte) (resultMsg, error) {
	d := dec{b: p}
	m := resultMsg{ok: d.bool(), err: d.str(maxText), received: d.u64(), millis: d.u64(), flushed: d.bool()}
	if d.err == nil && len(d.b) > 0 { // absent from a node of an earlier build
		m.output = d.str(maxText)
	}
	return m, wrapDecode("result", d.err)
}

type complainMsg struct {
	parent NodeID
	kind   uint8
	block  uint32 // the block that failed its hash, for complainCorrupt
	detail string
	stripe uint8
}

func (m complainMsg) encode() []byte {
	var e enc
	e.id(m.parent)
	e.u8(m.kind)
	e.u32(m.block)
	e.str(m.detail)
	e.u8(m.stripe)
	return e.b
}

func decodeComplain(p []byte) (complainMsg, error) {
	d := dec{b: p}
	m := complainMsg{parent: d.id(), kind: d.u8(), block: d.u32(), detail: d.str(maxText), stripe: d.u8()}
	return m, wrapDecode("complain", d.err)
}

func wrapDecode(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("decode %s: %w", what, err)
}

// clip shortens text from the network or from errors to what a frame may carry.
func clip(s string) string {
	if len(s) > maxText {
		return s[:maxText]
	}
	return s
}

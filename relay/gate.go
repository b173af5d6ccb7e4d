package relay

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Admission limits. A connection is unproven until it presents a valid,
// trusted offer (a seed) or a want for the session in progress (a child);
// unproven connections are what a host without the seed's key can open,
// so they are few, short-lived and never make the receiver busy.
const (
	// maxConns bounds the connections a receiver serves at once: a node
	// has a few children per tree and one seed.
	maxConns = 256
	// maxUnproven bounds the connections still proving themselves.
	maxUnproven = 64
	// maxUnprovenPerSource keeps one host from taking every unproven slot:
	// a seed makes one control connection, a child one per stripe.
	maxUnprovenPerSource = 8
	// proveWithin is how long a connection has to say who it is (hello)
	// and what it wants, or to start its offer: a LAN answers in
	// milliseconds.
	proveWithin = 5 * time.Second
	// offerRate is the slowest an offer's bytes may come (512 kbit/s):
	// the time allowed for an offer grows with its length.
	offerRate = 64 << 10
	// An offer is read whole before its signature is checked: one over
	// smallOffer (a package of 32 GiB in 1 MiB chunks) waits for one of
	// maxLargeOffers slots, so unproven offers hold at most a few of the
	// largest, 32 MiB each.
	smallOffer     = 1 << 20
	maxLargeOffers = 2
)

// gate admits connections: at most maxConns in all, and of those at most
// maxUnproven, maxUnprovenPerSource from one address, not yet proven. When
// maxUnproven wait, a new connection closes the one that has waited
// longest, unless it is reading a large offer (see pass.hold): a seed or
// a child says who it is within milliseconds, so hosts
// that open connections and say nothing, from however many addresses,
// only ever hold slots the next comer takes.
type gate struct {
	mu       sync.Mutex
	total    int
	unproven map[netip.Addr]int
	waiting  []*pass // unproven, oldest first
}

func newGate() *gate { return &gate{unproven: map[netip.Addr]int{}} }

// admit takes a slot for c, unproven; false: full.
func (g *gate) admit(c net.Conn) (*pass, bool) {
	src := sourceOf(c.RemoteAddr())
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total >= maxConns || g.unproven[src] >= maxUnprovenPerSource {
		return nil, false
	}
	if len(g.waiting) >= maxUnproven {
		for _, old := range g.waiting {
			if !old.held {
				old.conn.Close()
				g.freeLocked(old)
				break
			}
		}
	}
	p := &pass{g: g, src: src, conn: c, gone: make(chan struct{})}
	g.total++
	g.unproven[src]++
	g.waiting = append(g.waiting, p)
	return p, true
}

// pass is one admitted connection's slot.
type pass struct {
	g      *gate
	src    netip.Addr
	conn   net.Conn
	held   bool // reading a large offer: not closed for a newer connection
	proven bool
	done   bool
	gone   chan struct{} // closed when the slot is freed: released, or closed for a newer connection
}

// hold keeps the connection from being closed for a newer one while it
// reads a large offer, which takes seconds; maxLargeOffers do at most.
func (p *pass) hold() {
	p.g.mu.Lock()
	defer p.g.mu.Unlock()
	p.held = true
}

// prove moves the connection out of the unproven count. Idempotent.
func (p *pass) prove() {
	p.g.mu.Lock()
	defer p.g.mu.Unlock()
	if p.proven || p.done {
		return
	}
	p.proven = true
	p.g.unwait(p)
}

// release frees the slot. Idempotent.
func (p *pass) release() {
	p.g.mu.Lock()
	defer p.g.mu.Unlock()
	p.g.freeLocked(p)
}

func (g *gate) freeLocked(p *pass) {
	if p.done {
		return
	}
	p.done = true
	close(p.gone)
	g.total--
	if !p.proven {
		g.unwait(p)
	}
}

// unwait takes p out of the unproven count and the waiting line.
func (g *gate) unwait(p *pass) {
	if g.unproven[p.src]--; g.unproven[p.src] <= 0 {
		delete(g.unproven, p.src)
	}
	if i := slices.Index(g.waiting, p); i >= 0 {
		g.waiting = slices.Delete(g.waiting, i, i+1)
	}
}

func sourceOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// childGate admits connections to the seed's listener: only from the
// address of a node in the session (as the seed reached it), and from one
// address at most maxUnprovenPerSource that have not yet asked for the
// session, a new one closing that address's oldest. A host that is not in
// the session cannot hold the seed's children out, however many
// connections it opens; one that is holds only its own slots. The seed
// then feeds a stripe only to a node the tree has under the seed there,
// by the id its hello names and the address the seed reached it at, and
// one feed per node and stripe (see take): a node of the session that
// asks for the package many times over takes no share of the seed's
// uplink from the roots.
type childGate struct {
	mu      sync.Mutex
	allowed map[netip.Addr]bool
	waiting map[netip.Addr][]net.Conn // oldest first
	placed  map[feedKey]*seedFeed
}

// feedKey is a node's place under the seed in one stripe.
type feedKey struct {
	id     NodeID
	stripe int
}

// seedFeed is where the node placed under the seed is, and its feed.
type seedFeed struct {
	addr netip.Addr
	conn net.Conn // the feed open now, or nil
}

// place records whether the tree has node id, reached at addr, under the
// seed in stripe st: the seed's loop calls it before it tells the node.
func (g *childGate) place(id NodeID, addr netip.Addr, st int, under bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := feedKey{id, st}
	if !under {
		if f := g.placed[k]; f != nil && f.conn != nil {
			f.conn.Close() // moved away: its old feed ends
		}
		delete(g.placed, k)
		return
	}
	if g.placed == nil {
		g.placed = map[feedKey]*seedFeed{}
	}
	if f := g.placed[k]; f != nil && f.addr == addr {
		return
	}
	g.placed[k] = &seedFeed{addr: addr}
}

// take reports whether c, whose hello names id and whose want asks for
// stripe st, may be fed: the node is under the seed there and c comes
// from its address. A feed already open for it ends: the node came back
// (a link that went down and up), and one feed is all it needs. done
// gives the place up when c's feed ends.
func (g *childGate) take(id NodeID, st int, c net.Conn) (done func(), ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.placed[feedKey{id, st}]
	if f == nil || f.addr != sourceOf(c.RemoteAddr()) {
		return nil, false
	}
	if f.conn != nil {
		f.conn.Close()
	}
	f.conn = c
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if f.conn == c {
			f.conn = nil
		}
	}, true
}

// allow lets the node at a connect to the seed's listener.
func (g *childGate) allow(a netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.allowed == nil {
		g.allowed = map[netip.Addr]bool{}
	}
	g.allowed[a] = true
}

// admit reports whether c comes from a node of the session, and counts it
// as waiting until forget.
func (g *childGate) admit(c net.Conn) bool {
	src := sourceOf(c.RemoteAddr())
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.allowed[src] {
		return false
	}
	if g.waiting == nil {
		g.waiting = map[netip.Addr][]net.Conn{}
	}
	q := g.waiting[src]
	if len(q) >= maxUnprovenPerSource {
		q[0].Close()
		q = q[1:]
	}
	g.waiting[src] = append(q, c)
	return true
}

// forget stops counting c as waiting: it asked for the session, or is
// gone. Idempotent.
func (g *childGate) forget(c net.Conn) {
	src := sourceOf(c.RemoteAddr())
	g.mu.Lock()
	defer g.mu.Unlock()
	q := g.waiting[src]
	if i := slices.Index(q, c); i >= 0 {
		q = slices.Delete(q, i, i+1)
	}
	if len(q) == 0 {
		delete(g.waiting, src)
	} else {
		g.waiting[src] = q
	}
}

package relay

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// feeding is what a node owes its children, as far as it can tell. A node
// that applied the package and heard each child the seed gave it say it
// holds its whole stripe (held) has nothing left to relay: it leaves the
// session then, without waiting for the seed to end it, which takes the
// seed's round trip (and, on a slow seed link, the queue of data ahead of
// the end frame). A feed that ended otherwise (a child that found a block
// corrupt, complained, moved or died) leaves it to the seed to end the
// session: the seed may be probing this node on a child's word, and holds
// it until it has judged. One whose apply failed waits for the seed too:
// gone, it would be idle, found again and offered the session again.
type feeding struct {
	mu      sync.Mutex
	owed    [maxStripes]int             // children the seed gave this node, by stripe; -1: not said (an earlier seed)
	kids    [maxStripes][]kid           // which, by stripe
	spoken  bool                        // the seed sent a parent frame
	named   bool                        // the seed names children (an earlier seed does not, and any child is fed)
	feeds   map[feedKey]kidFeed         // the feed open to each child, by stripe
	word    chan struct{}               // closed, and made anew, each time the seed sends a parent frame
	served  [maxStripes]map[NodeID]bool // children that said they hold their whole stripe
	open    int                         // children being fed now
	broken  bool                        // a feed ended without its child saying it holds its stripe
	left    bool                        // the node is leaving: it begins no feed
	changed chan struct{}               // a signal, not a queue: one pending wakes the waiter
}

func newFeeding() *feeding {
	f := &feeding{changed: make(chan struct{}, 1), word: make(chan struct{}), feeds: map[feedKey]kidFeed{}}
	for st := range f.owed {
		f.owed[st] = -1
	}
	return f
}

func (f *feeding) signal() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// owe records how many children the seed says this node feeds in stripe
// st (negative: it did not say), and which (nil: it did not say).
func (f *feeding) owe(st uint8, children int, kids []kid) {
	if int(st) >= maxStripes {
		return
	}
	f.mu.Lock()
	f.owed[st] = children
	if kids != nil {
		f.kids[st], f.named = kids, true
		// A child the seed moved away is fed no more.
		for k, fed := range f.feeds {
			if k.stripe == int(st) && !slices.Contains(kids, kid{id: k.id, addr: fed.addr}) {
				fed.conn.Close()
				delete(f.feeds, k)
			}
		}
	}
	f.spoken = true
	close(f.word)
	f.word = make(chan struct{})
	f.mu.Unlock()
	f.signal()
}

// kidFeed is a feed open to a child, and where the child is.
type kidFeed struct {
	conn net.Conn
	addr netip.Addr
}

// admit reports whether this node may feed the child that says it is id,
// connected from addr, in stripe st: one the seed gave it there (from a
// seed of an earlier build, which names none, any child; a stripe this
// build's seed has not spoken of yet has none), or the seed itself
// fetching on a complaint (the zero id, from seed's address). Until the
// seed's first parent frame, and for a child the seed has not named yet,
// it waits up to wait: the seed tells a child its parent and the parent
// its child at once, and the child may come first. The wait ends too when
// gone closes (the connection's slot was taken for a newer one). A feed
// already open to the same child in the same stripe ends: the child came
// back, and one feed is all it needs; so does one to a child the seed
// moves away (see owe). So a host of the session that asks over and
// over, under made-up ids, takes no share of this node's uplink from its
// children. done gives the feed's place up when it ends.
func (f *feeding) admit(ctx context.Context, id NodeID, addr, seed netip.Addr, st uint8, c net.Conn, wait time.Duration, gone <-chan struct{}) (done func(), ok bool) {
	if int(st) >= maxStripes {
		return nil, false
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		word := f.word
		if f.spoken {
			if id == (NodeID{}) {
				named := f.named
				f.mu.Unlock()
				return func() {}, !named || addr == seed
			}
			if !f.named || slices.Contains(f.kids[st], kid{id: id, addr: addr}) {
				k := feedKey{id: id, stripe: int(st)}
				if old, ok := f.feeds[k]; ok {
					old.conn.Close()
				}
				f.feeds[k] = kidFeed{conn: c, addr: addr}
				f.mu.Unlock()
				return func() {
					f.mu.Lock()
					defer f.mu.Unlock()
					if f.feeds[k].conn == c {
						delete(f.feeds, k)
					}
				}, true
			}
		}
		f.mu.Unlock()
		select {
		case <-word:
		case <-timer.C:
			return nil, false
		case <-gone:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// begin counts a child being fed, unless the node is leaving (false); end,
// which must follow a true begin, whether the child said it holds all of
// stripe st.
func (f *feeding) begin() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.left {
		return false
	}
	f.open++
	return true
}

func (f *feeding) end(st uint8, child NodeID, whole bool) {
	f.mu.Lock()
	f.open--
	f.broken = f.broken || !whole
	// At most as many as a node serves at once are remembered: a host
	// that comes back under ever new ids grows nothing.
	if whole && int(st) < maxStripes && len(f.served[st]) < maxConns {
		if f.served[st] == nil {
			f.served[st] = map[NodeID]bool{}
		}
		f.served[st][child] = true
	}
	f.mu.Unlock()
	f.signal()
}

// leave reports whether the node is settled (see settled), and if so
// begins no feed from then on.
func (f *feeding) leave(stripes int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = f.settledLocked(stripes)
	return f.left
}

// settled reports whether, in a session of stripes stripes, every child
// the seed gave this node said it holds its whole stripe, none is being
// fed, and no feed ended otherwise.
func (f *feeding) settled(stripes int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.settledLocked(stripes)
}

func (f *feeding) settledLocked(stripes int) bool {
	if stripes < 1 || stripes > maxStripes || f.open > 0 || f.broken {
		return false
	}
	for st := range stripes {
		if f.owed[st] < 0 || len(f.served[st]) < f.owed[st] {
			return false
		}
	}
	return true
}

// leaveWhenSettled returns true once this node has sent a result that says
// it applied the package, owes its children nothing, and the seed's end of
// the control connection has
// acknowledged every byte sent on it (the result among them: closing with
// a frame of the seed's unread would reset the connection and could lose
// it). It never returns where the platform cannot show the
// acknowledgement, nor before ctx ends if the seed never said what the
// node feeds.
func (s *session) leaveWhenSettled(ctx context.Context, resulted <-chan struct{}) bool {
	select {
	case <-resulted:
	case <-ctx.Done():
		return false
	}
	sock := newFlowSocket(s.c.conn.Conn)
	if sock == nil {
		return false
	}
	// A child may come while the node waits for the acknowledgement
	// (one the seed moved here, the seed's probe): settled once more,
	// and no feed begins after that.
	for {
		for !s.feeding.settled(int(s.stripes.Load())) {
			select {
			case <-s.feeding.changed:
			case <-ctx.Done():
				return false
			}
		}
		if !s.acknowledged(ctx, sock) {
			return false
		}
		if s.feeding.leave(int(s.stripes.Load())) {
			return true
		}
	}
}

// acknowledged waits until the seed's end has acknowledged every byte
// sent on the control connection; false if it takes none for DeadAfter.
func (s *session) acknowledged(ctx context.Context, sock flowSocket) bool {
	wait := time.NewTimer(s.cfg.DeadAfter)
	defer wait.Stop()
	tick := time.NewTicker(ackPoll)
	defer tick.Stop()
	for {
		d, ok := sock.delivered()
		if !ok {
			return false
		}
		if !d.pending {
			return true
		}
		select {
		case <-tick.C:
		case <-wait.C:
			return false // the seed's end is not taking it: let the seed end the session
		case <-ctx.Done():
			return false
		}
	}
}

// ackPoll is how often a node that would leave looks whether the seed has
// acknowledged its result: the kernel gives no event for it, and on a LAN
// it comes within a millisecond or two.
const ackPoll = 2 * time.Millisecond

package relay

import (
	"net/netip"
	"slices"
	"time"
)

// How the seed judges a node alive: how often it pings one, and when a
// relay that says nothing, or that a node linked to it says has stalled,
// loses its children.

// pingEvery is how often the seed sends a node with the given seed
// timeout a frame: three times in that timeout, so two may go missing,
// but not more often than every heartbeat. Each ping costs the seed's
// uplink a frame, and the seed's uplink is what every tree starts from:
// pinging 128 nodes every 2 s took 1 % of a 4 Mbit/s seed. A node that
// does not say its timeout (an earlier build) waits at least DeadAfter.
func pingEvery(cfg Config, nodeTimeout time.Duration) time.Duration {
	if nodeTimeout <= 0 {
		return cfg.DeadAfter / 2
	}
	return max(cfg.Heartbeat, min(nodeTimeout, maxSeedTimeout)/pingsPerTimeout)
}

// pingsPerTimeout: a node's seed timeout spans this many pings.
const pingsPerTimeout = 3

// A node silent for quietFor quarters of DeadAfter, three of its progress
// reports (every DeadAfter/4) missed, loses its children to other parents
// (tree.hush) before it counts as lost: a relay whose link went down cost
// its subtree DeadAfter, now three quarters of it. After two missed, on a
// lab of 16 CPU-bound hosts, healthy relays were moved too. So sooner,
// after starvedQuiet eighths (one report missed, and half a period more;
// longer for a node seen to report less often), on the word of a node
// linked to it as well: it takes nothing, or sends nothing, for
// stallAfter (see starved).
const (
	quietFor     = 3
	starvedQuiet = 3
)

// A silence is a flow between a node and peer (at addr), in a stripe,
// that moved nothing since a time, in the node's word.
type silence struct {
	peer   NodeID
	addr   netip.Addr
	stripe uint8
	since  time.Time
}

// silences turns a progress's stall reports, received at, into dst.
func silences(dst []silence, rs []stallReport, at time.Time) []silence {
	dst = dst[:0]
	for _, r := range rs {
		dst = append(dst, silence{peer: r.peer, addr: r.addr, stripe: r.stripe, since: at.Add(-time.Duration(r.millis) * time.Millisecond)})
	}
	return dst
}

// names reports whether ss says the flow with n in stripe st has moved
// nothing for at least d; with addrs, only a flow from n's own address
// counts (a node id in a hello is only a claim).
func names(ss []silence, n *node, addrs bool, st int, now time.Time, d time.Duration) bool {
	return slices.ContainsFunc(ss, func(e silence) bool {
		return e.peer == n.peer.ID && int(e.stripe) == st && now.Sub(e.since) >= d &&
			(!addrs || e.addr == n.peer.Addr.Addr().Unmap())
	})
}

// starved reports whether a parent of n says its flow to n's address has
// taken nothing for stallAfter (n does not read, or its link is down), or
// a child of n heard lately says n has sent it nothing for as long (n
// hangs, or its link is down). Each speaks only of its own parent or
// child, so no node can say it of a node it is not linked to.
func (s *seedRun) starved(n *node, now time.Time) bool {
	for st := range s.t.stripes {
		said := s.stalls
		switch p := s.t.parentOf(n.id, st); {
		case p == noParent:
			said = nil
		case p != seedID:
			said = s.nodes[p-1].stalls
		}
		if names(said, n, true, st, now, stallAfter) {
			return true
		}
		for _, c := range s.t.childrenIn(n.id, st) {
			k := s.nodes[c-1]
			if now.Sub(k.lastSeen) <= s.cfg.DeadAfter/2 && names(k.starved, n, false, st, now, stallAfter) {
				return true
			}
		}
	}
	return false
}

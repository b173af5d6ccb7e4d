package discover

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Peer is a receiver seen on the LAN.
type Peer struct {
	Instance string         // DNS-SD instance name (unique: name + "-" + first 8 hex of ID)
	ID       string         // node id, lowercase hex (32 chars)
	Name     string         // human name (not unique)
	Group    string         // "" = no group
	State    string         // StateIdle or StateBusy; a newer receiver may say more: treat anything but StateIdle as busy
	Version  int            // protocol version announced
	Addr     netip.AddrPort // IPv4 address + TCP port to connect to
	// Conflict, when valid, is a second address that answered for ID during
	// the browse: two machines claim the node id (one copied the other's, or
	// one spoofs it), so neither address can be trusted. Do not connect.
	Conflict netip.AddrPort
}

// Conflicted reports whether another address answered for p's node id.
func (p Peer) Conflicted() bool { return p.Conflict.IsValid() }

// BrowseOptions says which peers to look for and for how long.
type BrowseOptions struct {
	Group    string        // only peers announcing this group; "" = only peers announcing none
	AnyGroup bool          // every peer, whatever its group (Group is not looked at)
	Expect   int           // stop settle after this many matching peers without conflict are found (0 = no early stop)
	Wait     time.Duration // longest time to browse, then return what was found; 0 = one round
	OnPeer   func(Peer)    // optional: called once per newly found matching peer, from the goroutine that called Browse
}

// Browse queries for receivers in rounds, each cfg.Round long with a fresh
// query per interface, until opt.Expect distinct peers (by ID) match, opt.Wait
// has passed, or ctx ends. It returns the matching peers sorted by Instance.
// A peer is only ever found at an address in a subnet of the interface the
// query went out of. A node id that answers from two addresses is returned
// once, Conflicted, with both; once enough are found the round goes on for
// settle, so the faster of two answers does not win. The error is ctx.Err() only if ctx ended before
// any peer was found; a peer found earlier is returned without error.
func Browse(ctx context.Context, cfg Config, opt BrowseOptions, log *slog.Logger) ([]Peer, error) {
	log = orDiscard(log)
	links, err := interfaces(cfg)
	if err != nil {
		return nil, err
	}
	round := cfg.round()
	end := time.Now().Add(opt.Wait)
	if opt.Wait <= 0 {
		end = time.Now().Add(round)
	}
	b := &browser{opt: opt, seen: make(map[string]Peer)}
	for ctx.Err() == nil && !b.enough() {
		now := time.Now()
		if !now.Before(end) {
			break
		}
		deadline := now.Add(round)
		if deadline.After(end) {
			deadline = end
		}
		if err := b.round(ctx, links, deadline, log); err != nil {
			return b.peers(), err
		}
	}
	peers := b.peers()
	if len(peers) == 0 && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return peers, nil
}

type browser struct {
	opt  BrowseOptions
	seen map[string]Peer // by ID
}

// Once enough peers are found, a round goes on for a second answer for one
// of their ids (a twin, a spoofer) as long again as the answers took to
// come, from minSettle to maxSettle: on a LAN the answers to one query come
// within milliseconds of each other, a twin answering with its sibling,
// and queue only on a slow link (128 answers on 4 Mbit/s took 70 ms).
// A 1 KB package to 15 receivers spent a third of its session in a fixed
// 50 ms.
const (
	minSettle = 20 * time.Millisecond
	maxSettle = 50 * time.Millisecond
)

// settleFor is how long a round settles whose answers took took.
func settleFor(took time.Duration) time.Duration { return min(max(took, minSettle), maxSettle) }

// enough reports whether opt.Expect peers without a conflict are found.
func (b *browser) enough() bool {
	if b.opt.Expect <= 0 {
		return false
	}
	n := 0
	for _, p := range b.seen {
		if !p.Conflicted() {
			n++
		}
	}
	return n >= b.opt.Expect
}

// round queries every link at once until deadline or ctx ends. It fails only
// if the query failed on every link.
func (b *browser) round(ctx context.Context, links []link, deadline time.Time, log *slog.Logger) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	found := make(chan Peer)
	asked := make(chan time.Time, len(links)) // never blocks a query
	errs := make([]error, len(links))
	var wg sync.WaitGroup
	for i, l := range links {
		wg.Go(func() { errs[i] = query(rctx, l, deadline, asked, found, log) })
	}
	go func() {
		wg.Wait()
		close(found)
	}()
	var settling *time.Timer
	for p := range found {
		if q, ok := b.add(p); ok {
			log.Debug("two addresses answer for one node id", "id", q.ID, "addr", q.Addr, "other", q.Conflict)
		}
		if settling == nil && b.enough() {
			// Enough found: a twin's answer, were there one, comes within
			// the settle; the rest of the round need not pass.
			// The answers took as long as since the first question went
			// out (an answer came: its question did): on a bridge of 128
			// ports, sending it took 25 ms, the answers 2 ms more.
			settling = time.AfterFunc(settleFor(time.Since(<-asked)), cancel)
			defer settling.Stop()
		}
	}
	if rctx.Err() != nil && ctx.Err() == nil {
		return nil // cut short: enough found
	}
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			log.Debug("mDNS query failed", "err", err)
		}
	}
	if failed == len(links) {
		return errors.Join(errs...)
	}
	return nil
}

// add keeps p if it matches and is new, and tells OnPeer. If p's node id
// was seen at another address, the peer kept for it becomes conflicted, and
// add returns it and true the first time; at another port of the same
// address, p replaces it.
func (b *browser) add(p Peer) (Peer, bool) {
	if !b.opt.AnyGroup && p.Group != b.opt.Group {
		return Peer{}, false
	}
	have, ok := b.seen[p.ID]
	switch {
	case !ok:
		b.seen[p.ID] = p
		if b.opt.OnPeer != nil {
			b.opt.OnPeer(p)
		}
	case have.Addr == p.Addr || have.Conflicted():
	case have.Addr.Addr() == p.Addr.Addr():
		// One machine, another port: its receiver restarted.
		b.seen[p.ID] = p
	default:
		have.Conflict = p.Addr
		b.seen[p.ID] = have
		return have, true
	}
	return Peer{}, false
}

func (b *browser) peers() []Peer {
	peers := make([]Peer, 0, len(b.seen))
	for _, p := range b.seen {
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(x, y Peer) int {
		return cmp.Or(cmp.Compare(x.Instance, y.Instance), cmp.Compare(x.ID, y.ID))
	})
	return peers
}

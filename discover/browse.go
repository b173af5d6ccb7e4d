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
}

// BrowseOptions says which peers to look for and for how long.
type BrowseOptions struct {
	Group  string        // only peers announcing this group; "" matches every peer, whatever its group
	Expect int           // stop as soon as this many distinct matching peers are found (0 = no early stop)
	Wait   time.Duration // longest time to browse, then return what was found; 0 = one round
	OnPeer func(Peer)    // optional: called once per newly found matching peer, from the goroutine that called Browse
}

// Browse queries for receivers in rounds, each cfg.Round long with a fresh
// query per interface, until opt.Expect distinct peers (by ID) match, opt.Wait
// has passed, or ctx ends. It returns the matching peers sorted by Instance.
// The error is ctx.Err() only if ctx ended before any peer was found; a peer
// found earlier is returned without error.
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

func (b *browser) enough() bool {
	return b.opt.Expect > 0 && len(b.seen) >= b.opt.Expect
}

// round queries every link at once until deadline, ctx ends, or enough peers
// are found. It fails only if the query failed on every link.
func (b *browser) round(ctx context.Context, links []link, deadline time.Time, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	found := make(chan Peer)
	errs := make([]error, len(links))
	var wg sync.WaitGroup
	for i, l := range links {
		wg.Go(func() { errs[i] = query(ctx, l, deadline, found, log) })
	}
	go func() {
		wg.Wait()
		close(found)
	}()
	for p := range found {
		b.add(p)
		if b.enough() {
			cancel()
		}
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

// add keeps p if it matches and is new, and tells OnPeer.
func (b *browser) add(p Peer) {
	if b.opt.Group != "" && p.Group != b.opt.Group {
		return
	}
	if _, ok := b.seen[p.ID]; ok {
		return
	}
	b.seen[p.ID] = p
	if b.opt.OnPeer != nil {
		b.opt.OnPeer(p)
	}
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

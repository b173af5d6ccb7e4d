package discover

import (
	"context"
	"log/slog"
	"time"
)

// Pauses between browses that fail.
const (
	retryFirst = 500 * time.Millisecond // a link that flaps or renews its address is usually back by then
	retryMax   = 4 * time.Second        // at most this much later than the network's return a new receiver is found
)

// Watch browses as opt says, again and again until ctx ends, and hands the
// peers each browse returns to found, conflicted ones included. found runs
// on the caller's goroutine; it may block, and should return when ctx ends.
//
// When a browse fails (no usable interface, every query failing), Watch
// waits before the next one, retryFirst doubling up to retryMax, so a lost
// network costs no CPU. It logs a warning when browsing starts failing or
// fails for another reason, and says when it works again; not per attempt.
func Watch(ctx context.Context, cfg Config, opt BrowseOptions, found func([]Peer), log *slog.Logger) {
	log = orDiscard(log)
	w := watcher{
		browse: func(ctx context.Context) ([]Peer, error) { return Browse(ctx, cfg, opt, log) },
		first:  retryFirst,
		max:    retryMax,
		log:    log,
	}
	w.run(ctx, found)
}

type watcher struct {
	browse     func(context.Context) ([]Peer, error)
	first, max time.Duration // pauses after the first and after many failures in a row
	log        *slog.Logger
}

func (w *watcher) run(ctx context.Context, found func([]Peer)) {
	var pause time.Duration // 0 while browsing works
	failing := ""           // the error browsing last failed with; "" while it works
	for {
		peers, err := w.browse(ctx)
		if ctx.Err() != nil {
			return
		}
		if len(peers) > 0 {
			found(peers)
		}
		if err == nil {
			if failing != "" {
				w.log.Info("browsing for receivers works again")
			}
			pause, failing = 0, ""
			continue
		}
		pause = min(max(2*pause, w.first), w.max)
		if err.Error() != failing {
			failing = err.Error()
			w.log.Warn("browsing for receivers failed; receivers that appear are not found until it works again",
				"err", err, "retry", "at least every "+w.max.String())
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

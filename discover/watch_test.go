package discover

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWatchBacksOffWhileBrowsingFails: with no network a browse fails at
// once; the watcher must not retry it in a loop that eats a core.
func TestWatchBacksOffWhileBrowsingFails(t *testing.T) {
	var logs lockedBuffer
	var calls []time.Time
	w := watcher{
		browse: func(context.Context) ([]Peer, error) {
			calls = append(calls, time.Now())
			return nil, errors.New("no usable network interface: eth0 is down")
		},
		first: retryFirst,
		max:   retryMax,
		log:   slog.New(slog.NewTextHandler(&logs, nil)),
	}
	const window = 1800 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), window)
	defer cancel()
	w.run(ctx, func(p []Peer) { t.Errorf("found %+v, want nothing", p) })

	// Pauses of 0.5, 1 and 2 s: browses at 0, 0.5 and 1.5 s, then 3.5 s.
	if len(calls) < 2 || len(calls) > 3 {
		t.Errorf("%d browses in %v, want 2 or 3 (0.5 s, then 1 s between them)", len(calls), window)
	}
	for i := 1; i < len(calls); i++ {
		if gap, want := calls[i].Sub(calls[i-1]), retryFirst<<(i-1); gap < want {
			t.Errorf("browse %d came %v after the one before, want at least %v", i+1, gap, want)
		}
	}
	if n := strings.Count(logs.String(), "browsing for receivers failed"); n != 1 {
		t.Errorf("logged the failure %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "eth0 is down") {
		t.Errorf("the log does not say why browsing fails:\n%s", logs.String())
	}
}

// TestWatchRecovers follows a watcher through failures with two causes, a
// recovery and a new failure: it logs each change once, hands over what it
// finds, and starts its pauses afresh after browsing worked.
func TestWatchRecovers(t *testing.T) {
	alpha := Peer{Instance: "alpha-01234567", ID: idA, Name: "alpha", State: StateIdle, Version: 1,
		Addr: netip.MustParseAddrPort("10.1.0.7:7000")}
	beta := Peer{Instance: "beta-fedcba98", ID: idB, Name: "beta", State: StateIdle, Version: 1,
		Addr: netip.MustParseAddrPort("10.1.0.8:7000")}
	down := errors.New("no usable network interface: eth0 is down")
	refused := errors.New("query on eth0: send to 224.0.0.251:5353: network is unreachable")
	const first, most = 2 * time.Millisecond, 8 * time.Millisecond
	script := []struct {
		peers     []Peer
		err       error
		wantPause time.Duration // at least this long after the browse before
	}{
		{err: down},
		{err: down, wantPause: first},
		{err: down, wantPause: 2 * first},
		{err: refused, wantPause: 4 * first},
		{peers: []Peer{beta}, err: refused, wantPause: most}, // a peer found before the last round failed
		{peers: []Peer{alpha}, wantPause: most},
		{},
		{err: down},
		{err: down, wantPause: first},
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs lockedBuffer
	var calls []time.Time
	var found [][]Peer
	w := watcher{
		browse: func(ctx context.Context) ([]Peer, error) {
			calls = append(calls, time.Now())
			if i := len(calls) - 1; i < len(script) {
				return script[i].peers, script[i].err
			}
			cancel()
			return nil, ctx.Err()
		},
		first: first,
		max:   most,
		log:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	w.run(ctx, func(p []Peer) { found = append(found, p) })

	if len(calls) != len(script)+1 {
		t.Fatalf("%d browses, want %d", len(calls), len(script)+1)
	}
	for i := 1; i < len(script); i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < script[i].wantPause {
			t.Errorf("browse %d came %v after the one before, want at least %v", i+1, gap, script[i].wantPause)
		}
	}
	if want := [][]Peer{{beta}, {alpha}}; !slices.EqualFunc(found, want, slices.Equal) {
		t.Errorf("handed over %+v, want %+v", found, want)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		switch {
		case strings.Contains(line, "failed") && strings.Contains(line, "eth0 is down"):
			got = append(got, "failed: down")
		case strings.Contains(line, "failed") && strings.Contains(line, "unreachable"):
			got = append(got, "failed: unreachable")
		case strings.Contains(line, "works again"):
			got = append(got, "works again")
		default:
			got = append(got, line)
		}
	}
	want := []string{"failed: down", "failed: unreachable", "works again", "failed: down"}
	if !slices.Equal(got, want) {
		t.Errorf("logged\n%s\nwant one line each for %q", logs.String(), want)
	}
}

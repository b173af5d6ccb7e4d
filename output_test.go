package main

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/treecast/treecast/relay"
)

// Log lines read like the rest of treecast's: "treecast: warning: ...",
// one line each, whatever the error holds; the steps only with --verbose.
func TestLogLinesInTreecastStyle(t *testing.T) {
	multi := errors.New("run `./install.sh`: command exited with status 2: unpacking\n\tE: disk full\n")
	var quiet, verbose bytes.Buffer
	for _, l := range []*slog.Logger{slog.New(&lineHandler{w: &quiet}), slog.New(&lineHandler{w: &verbose, verbose: true})} {
		l.Warn("node lost", "node", "h3 (0123abcd)", "err", errors.New("read tcp 10.0.0.1:7000: connection reset by peer"))
		l.Warn("node failed", "node", "h4 (4567abcd)", "err", multi)
		l.Error("apply failed", "package", "app.tar.gz", "err", multi)
		l.Warn("skipping receiver: it speaks another protocol version", "name", "old", "addr", netip.MustParseAddrPort("10.0.0.9:7000"), "version", 4, "want", 3)
		l.Info("found receiver", "name", "h1", "addr", "10.0.0.2:7000", "state", "idle")
		l.With("lib", "mdns").Debug("[INFO] mdns: closing client")
		l.WithGroup("g").Warn("grouped", "k", time.Second)
		l.Warn("long", "err", strings.Repeat("x", 1000))
	}
	want := []string{
		"treecast: warning: node lost: h3 (0123abcd): read tcp 10.0.0.1:7000: connection reset by peer",
		"treecast: warning: node failed: h4 (4567abcd): run `./install.sh`: command exited with status 2: unpacking | E: disk full",
		"treecast: error: apply failed: app.tar.gz: run `./install.sh`: command exited with status 2: unpacking | E: disk full",
		"treecast: warning: skipping receiver: it speaks another protocol version: old, addr 10.0.0.9:7000, version 4, want 3",
		"treecast: warning: grouped: g.k 1s",
		"treecast: warning: long: " + strings.Repeat("x", logValueWidth/3) + "…" + strings.Repeat("x", logValueWidth-logValueWidth/3-1),
	}
	if got := strings.Split(strings.TrimSuffix(quiet.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("without --verbose:\n%s\nwant\n%s", quiet.String(), strings.Join(want, "\n"))
	}
	for _, w := range []string{
		"treecast: found receiver: h1, addr 10.0.0.2:7000, state idle\n",
		"treecast: debug: [INFO] mdns: closing client: lib mdns\n",
		"treecast: warning: long: " + strings.Repeat("x", 1000) + "\n",
	} {
		if !strings.Contains(verbose.String(), w) {
			t.Errorf("with --verbose, no line %q in\n%s", w, verbose.String())
		}
	}
	for _, out := range []string{quiet.String(), verbose.String()} {
		if strings.Contains(out, "level=") || strings.Contains(out, "msg=") || strings.Contains(out, "\t") {
			t.Errorf("a log line is not in treecast's style:\n%s", out)
		}
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if !strings.HasPrefix(l, "treecast: ") {
				t.Errorf("line %q does not start treecast: ", l)
			}
		}
	}
}

// A clock for the console that a test moves on.
type testClock struct{ t time.Time }

func (c *testClock) now() time.Time { return c.t }

// Off a terminal, the seed's progress is a plain line every few seconds
// in the package's bytes (what a node holds on average) and the rate at
// which bytes reach the fleet in all, never a rate from a missing sample.
func TestSeedProgressOffATerminal(t *testing.T) {
	const size = 15 << 20 // 15 MiB to each of 3 nodes
	var out bytes.Buffer
	clock := &testClock{time.Unix(1e9, 0)}
	con := &console{out: &out, now: clock.now}
	// A heartbeat every 500 ms; the fleet takes in 6 MiB/s (2 MiB/s a node).
	for i := 0; i <= 16; i++ {
		held := min(int64(i)*(1<<20), size)
		p := relay.SeedProgress{Nodes: 3, Verified: 3 * held, Total: 3 * size}
		if held == size {
			p.Done = 3
		}
		con.seedProgress(p)
		clock.t = clock.t.Add(500 * time.Millisecond)
	}
	for i := 0; i < 3; i++ { // all there: said once
		con.seedProgress(relay.SeedProgress{Nodes: 3, Done: 3, Verified: 3 * size, Total: 3 * size})
		clock.t = clock.t.Add(5 * time.Second)
	}
	want := "" +
		"treecast:   0.0%  0 B of 15.0 MiB per node on average, 0 of 3 nodes done\n" +
		"treecast:  40.0%  6.0 MiB of 15.0 MiB per node on average, 6.0 MiB/s in all, ETA 5s, 0 of 3 nodes done\n" +
		"treecast:  80.0%  12.0 MiB of 15.0 MiB per node on average, 6.0 MiB/s in all, ETA 2s, 0 of 3 nodes done\n" +
		"treecast: 100.0%  15.0 MiB of 15.0 MiB per node on average, 6.0 MiB/s in all, 3 of 3 nodes done\n"
	if out.String() != want {
		t.Errorf("progress lines\n%s\nwant\n%s", out.String(), want)
	}
	if strings.Contains(out.String(), "45.0 MiB") || strings.Contains(out.String(), " 0 B/s") {
		t.Error("bytes summed over nodes, or a rate of nothing")
	}

	// A failed node is counted, and a stall shows as one.
	out.Reset()
	con.endProgress()
	for range 8 {
		con.seedProgress(relay.SeedProgress{Nodes: 4, Failed: 1, Done: 1, Verified: 20 << 20, Total: 4 * size})
		clock.t = clock.t.Add(time.Second)
	}
	if want := "treecast:  33.3%  5.0 MiB of 15.0 MiB per node on average, 1 of 4 nodes done, 1 failed\n" +
		"treecast:  33.3%  5.0 MiB of 15.0 MiB per node on average, 0 B/s in all, 1 of 4 nodes done, 1 failed\n" +
		"treecast:  33.3%  5.0 MiB of 15.0 MiB per node on average, 0 B/s in all, 1 of 4 nodes done, 1 failed\n"; out.String() != want {
		t.Errorf("a stalled session:\n%s\nwant\n%s", out.String(), want)
	}
}

// A receiver's line keeps its form (scripts read its percentage), with
// its own rate once there is one.
func TestReceiverProgressOffATerminal(t *testing.T) {
	var out bytes.Buffer
	clock := &testClock{time.Unix(1e9, 0)}
	con := &console{out: &out, now: clock.now}
	for i := 0; i <= 8; i++ {
		con.progress(int64(i)<<20, 8<<20, "receiving app.bin")
		clock.t = clock.t.Add(time.Second)
	}
	want := "" +
		"treecast:   0.0%  0 B of 8.0 MiB, receiving app.bin\n" +
		"treecast:  37.5%  3.0 MiB of 8.0 MiB, 1.0 MiB/s, ETA 5s, receiving app.bin\n" +
		"treecast:  75.0%  6.0 MiB of 8.0 MiB, 1.0 MiB/s, ETA 2s, receiving app.bin\n" +
		"treecast: 100.0%  8.0 MiB of 8.0 MiB, 1.0 MiB/s, receiving app.bin\n"
	if out.String() != want {
		t.Errorf("progress lines\n%s\nwant\n%s", out.String(), want)
	}
}

func TestRateMeter(t *testing.T) {
	var m rateMeter
	t0 := time.Unix(1e9, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	m.add(at(0), 0)
	if _, ok := m.rate(at(0)); ok {
		t.Error("a rate from one sample")
	}
	m.add(at(500*time.Millisecond), 1000)
	if _, ok := m.rate(at(500 * time.Millisecond)); ok {
		t.Error("a rate from half a second")
	}
	m.add(at(time.Second), 2000)
	if r, ok := m.rate(at(time.Second)); !ok || r != 2000 {
		t.Errorf("rate %v %v, want 2000", r, ok)
	}
	// Fast, then slow: the window forgets the fast start.
	for s := 2; s <= 20; s++ {
		m.add(at(time.Duration(s)*time.Second), 2000+int64(s-1)*100)
	}
	if r, ok := m.rate(at(20 * time.Second)); !ok || r != 100 {
		t.Errorf("rate %v %v, want 100 over the last %s", r, ok, rateWindow)
	}
	m.add(at(21*time.Second), 10) // fewer bytes than before: start again
	if _, ok := m.rate(at(21 * time.Second)); ok {
		t.Error("a rate across a drop")
	}
}

func TestOneLineAndCut(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                      "plain",
		"two\nlines\n":               "two | lines",
		"  indented\r\n\n\tmore  \n": "indented | more",
		"tab\there, esc\x1b[31m red": "tab here, esc [31m red",
		"":                           "",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cut("ünïcödé and more", 8); got != "ünïcödé…" {
		t.Errorf("cut = %q", got)
	}
	if got := cut("short", 8); got != "short" {
		t.Errorf("cut = %q", got)
	}
	if got := shorten("run `make install`: command exited with status 2: disk full", 30); got != "run `make…status 2: disk full" {
		t.Errorf("shorten = %q", got)
	}
	if got := shorten("short", 8); got != "short" {
		t.Errorf("shorten = %q", got)
	}
}

// On a terminal, the bar is of the package's bytes too, and its words fit
// the terminal's width.
func TestSeedProgressOnATerminal(t *testing.T) {
	for _, cols := range []int{120, 80} {
		var out bytes.Buffer
		clock := &testClock{time.Unix(1e9, 0)}
		con := &console{out: &out, tty: true, now: clock.now, width: func() int { return cols }}
		for i := int64(0); i <= 4; i++ {
			con.seedProgress(relay.SeedProgress{Nodes: 3, Verified: 3 * i << 20, Total: 3 * 4 << 20})
			clock.t = clock.t.Add(time.Second)
		}
		con.endProgress()
		last := out.String()[strings.LastIndex(out.String(), "\r")+1:]
		if want := "100% |"; !strings.Contains(last, want) {
			t.Errorf("%d columns: the bar's last state %q does not say %q", cols, last, want)
		}
		if want := "4.0 MiB of 4.0 MiB per node on average, 3.0 MiB/s in all, 0 of 3 nodes done"; cols == 120 && !strings.Contains(last, want) {
			t.Errorf("%d columns: the bar's last state %q does not say %q", cols, last, want)
		}
		for _, l := range strings.Split(out.String(), "\r") {
			if n := utf8.RuneCountInString(strings.TrimRight(l, " \n")); n > cols {
				t.Errorf("a bar line of %d columns on a %d-column terminal: %q", n, cols, l)
			}
		}
		if strings.Contains(out.String(), "12.0 MiB") {
			t.Errorf("bytes summed over the nodes: %q", out.String())
		}
	}
}

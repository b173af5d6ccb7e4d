package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/treecast/treecast/discover"
	"github.com/treecast/treecast/relay"
)

// What treecast writes for people: stderr is the console's, where log
// lines and the progress take turns, every line starting "treecast: ".
// For scripts, --json: one JSON document on stdout, and the people's text
// on stderr. (The seed's table and report are in report.go.)

// console owns stderr: the progress bar and log lines take turns on it.
type console struct {
	mu    sync.Mutex
	out   io.Writer
	tty   bool
	width func() int       // the terminal's columns, 0 if unknown; nil: unknown
	now   func() time.Time // nil: time.Now
	bar   *progressbar.ProgressBar
	rate  rateMeter
	last  time.Time // when the last plain progress line was written
	full  bool      // the line saying it is all there was written
}

func newConsole() *console {
	fd := int(os.Stderr.Fd())
	return &console{out: os.Stderr, tty: term.IsTerminal(fd), width: func() int {
		w, _, _ := term.GetSize(fd)
		return w
	}}
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bar != nil {
		c.bar.Clear()
	}
	n, err := c.out.Write(p)
	if c.bar != nil {
		c.bar.RenderBlank()
	}
	return n, err
}

func (c *console) printf(format string, a ...any) { fmt.Fprintf(c, format, a...) }

func (c *console) time() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// Progress off a terminal: a plain line this often (and one when all is
// there), so a log file shows the pace without a line per heartbeat.
const plainEvery = 3 * time.Second

// progressView is one progress update.
type progressView struct {
	done, total int64  // bytes of the package: the bar and the percentage
	moved       int64  // bytes moved so far, whose rate is shown
	left        int64  // bytes still to move, for the ETA
	what        string // what done and total are, e.g. "6.9 MiB of 15.3 MiB"
	rateOf      string // whose rate it is, after it: "" or " in all"
	desc        string // what is going on, last
}

// progress shows a receiver's (or the hashing's) done of total bytes.
func (c *console) progress(done, total int64, desc string) {
	c.show(progressView{done: done, total: total, moved: done, left: total - done,
		what: relay.HumanBytes(done) + " of " + relay.HumanBytes(total), desc: desc})
}

// seedProgress shows the session at the seed: the bytes of the package an
// average node holds, how many nodes are done, and the rate at which bytes
// reach the fleet in all.
func (c *console) seedProgress(p relay.SeedProgress) {
	if p.Nodes == 0 {
		return
	}
	size := p.Total / int64(p.Nodes)
	avg := p.Verified / int64(p.Nodes)
	desc := fmt.Sprintf("%d of %d nodes done", p.Done, p.Nodes)
	if p.Failed > 0 {
		desc += fmt.Sprintf(", %d failed", p.Failed)
	}
	if p.Busy > 0 {
		desc += fmt.Sprintf(", %d busy", p.Busy)
	}
	c.show(progressView{done: avg, total: size, moved: p.Verified, left: p.Total - p.Verified, rateOf: " in all",
		what: relay.HumanBytes(avg) + " of " + relay.HumanBytes(size) + " per node on average", desc: desc})
}

// text is the line of v after its percentage: what, the rate and the ETA
// once the meter has them, and desc.
func (v progressView) text(rate float64, known bool) string {
	parts := []string{v.what}
	if known {
		parts = append(parts, relay.HumanBytes(int64(rate))+"/s"+v.rateOf)
		if rate > 0 && v.left > 0 {
			parts = append(parts, "ETA "+(time.Duration(float64(v.left)/rate*float64(time.Second))).Round(time.Second).String())
		}
	}
	if v.desc != "" {
		parts = append(parts, v.desc)
	}
	return strings.Join(parts, ", ")
}

// show draws v: a bar on a terminal, otherwise a plain line every
// plainEvery and one when all is there.
func (c *console) show(v progressView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.time()
	c.rate.add(now, v.moved)
	rate, known := c.rate.rate(now)
	if !c.tty {
		complete := v.done >= v.total
		if complete && c.full || !complete && !c.last.IsZero() && now.Sub(c.last) < plainEvery {
			return
		}
		c.last, c.full = now, complete
		pct := 100.0
		if v.total > 0 {
			pct = float64(v.done) * 100 / float64(v.total)
		}
		fmt.Fprintf(c.out, "treecast: %5.1f%%  %s\n", pct, v.text(rate, known))
		return
	}
	if v.total == 0 {
		return // a bar of 0 bytes errors
	}
	if c.bar == nil {
		c.bar = progressbar.NewOptions64(v.total,
			progressbar.OptionSetWriter(c.out),
			progressbar.OptionSetWidth(barWidth),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionThrottle(100*time.Millisecond),
		)
	}
	desc := v.text(rate, known)
	if c.width != nil {
		if w := c.width(); w > 0 {
			desc = cut(desc, w-barWidth-10) // " 100% |", "| " and a space: a longer line wraps and garbles the bar
		}
	}
	c.bar.Describe(desc)
	c.bar.Set64(v.done)
}

// barWidth is the progress bar's own width: the line's words need the rest.
const barWidth = 25

// endProgress removes the bar so the summary prints on a clean line, and
// starts the next progress afresh.
func (c *console) endProgress() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rate, c.last, c.full = rateMeter{}, time.Time{}, false
	if c.bar != nil {
		c.bar.Finish()
		fmt.Fprintln(c.out)
		c.bar = nil
	}
}

// The rate shown is that of the last rateWindow, and none until samples
// span minRateSpan: a rate from one sample would be 0 B/s, and one from a
// fraction of a second jumps about.
const (
	rateWindow  = 5 * time.Second
	minRateSpan = time.Second
)

// rateMeter turns a growing count of bytes into a rate.
type rateMeter struct {
	samples []rateSample // oldest first
}

type rateSample struct {
	at    time.Time
	bytes int64
}

func (m *rateMeter) add(at time.Time, bytes int64) {
	if n := len(m.samples); n > 0 && bytes < m.samples[n-1].bytes {
		m.samples = m.samples[:0] // fewer than before (a node gone): start again
	}
	m.samples = append(m.samples, rateSample{at, bytes})
	// Keep one sample at or before the window's start, so it is covered whole.
	i := 0
	for i+1 < len(m.samples) && !m.samples[i+1].at.After(at.Add(-rateWindow)) {
		i++
	}
	m.samples = m.samples[i:]
}

// rate is the bytes per second over the window, and whether the samples
// span enough time to say.
func (m *rateMeter) rate(now time.Time) (float64, bool) {
	if len(m.samples) < 2 {
		return 0, false
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	span := last.at.Sub(first.at)
	if span < minRateSpan {
		return 0, false
	}
	return float64(last.bytes-first.bytes) / span.Seconds(), true
}

// newLogger writes log lines through the console, so they never tear a
// live progress bar: warnings and errors always, the steps with --verbose.
func newLogger(c *cli.Context, con *console) *slog.Logger {
	return slog.New(&lineHandler{w: con, verbose: c.Bool("verbose")})
}

// logValueWidth cuts what a log line says of one attribute (an error with
// a command's output, say) unless --verbose: the report has it whole.
const logValueWidth = 240

// lineHandler writes a log record as one line in treecast's own style:
//
//	treecast: warning: node lost: h3 (0123abcd): read tcp ...: connection reset
//
// the level ("warning: ", "error: ", "debug: "; none for info), the
// message, then the attributes: what the line is about (node, name,
// package) by value alone, others as "key value", and the error or reason
// last. Every value is flattened to one line.
type lineHandler struct {
	w       io.Writer
	verbose bool
	group   string      // prefix of the keys of attrs added after WithGroup
	attrs   []slog.Attr // from WithAttrs, keys prefixed
}

// Keys whose value the line shows alone, and keys that say why.
var (
	subjectKeys = map[string]bool{"node": true, "name": true, "package": true}
	reasonKeys  = map[string]bool{"err": true, "reason": true, "detail": true}
)

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.verbose || l >= slog.LevelWarn
}

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("treecast: ")
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	case r.Level < slog.LevelInfo:
		b.WriteString("debug: ")
	}
	b.WriteString(oneLine(r.Message))
	var about, why []string
	var add func(prefix string, a slog.Attr)
	add = func(prefix string, a slog.Attr) {
		v := a.Value.Resolve()
		if v.Kind() == slog.KindGroup {
			if a.Key != "" {
				prefix += a.Key + "."
			}
			for _, ga := range v.Group() {
				add(prefix, ga)
			}
			return
		}
		if a.Equal(slog.Attr{}) {
			return
		}
		text := oneLine(v.String())
		if !h.verbose {
			text = shorten(text, logValueWidth)
		}
		switch key := prefix + a.Key; {
		case reasonKeys[key]:
			why = append(why, text)
		case subjectKeys[key]:
			about = append(about, text)
		default:
			about = append(about, key+" "+text)
		}
	}
	for _, a := range h.attrs {
		add("", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		add(h.group, a)
		return true
	})
	if len(about) > 0 {
		b.WriteString(": " + strings.Join(about, ", "))
	}
	for _, w := range why {
		b.WriteString(": " + w)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(h.w, b.String()) // one write: one line, whole
	return err
}

func (h *lineHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		if h.group != "" {
			a = slog.Group(strings.TrimSuffix(h.group, "."), a)
		}
		h2.attrs = append(h2.attrs, a)
	}
	return &h2
}

func (h *lineHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group += name + "."
	return &h2
}

// oneLine flattens s for a line of its own or a table cell: its lines,
// trimmed, joined by " | ", every other control character (a tab, an
// escape a hostile name or a command's output may hold) a space.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var lines []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		l = strings.TrimSpace(strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, l))
		if l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " | ")
}

// shorten cuts s to at most width characters by taking out its middle,
// marked "…": an error says what was done first and what went wrong last
// (a command, then its exit status and stderr), and both are kept.
func shorten(s string, width int) string {
	if width < 3 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	head := width / 3
	tail := width - head - 1
	return strings.TrimRight(string(r[:head]), " ") + "…" + strings.TrimLeft(string(r[len(r)-tail:]), " ")
}

// cut shortens s to at most width characters, ending it with "…" if it
// was longer.
func cut(s string, width int) string {
	if width < 1 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return strings.TrimRight(string(r[:width-1]), " ") + "…"
}

func jsonFlag(usage string) *cli.BoolFlag {
	return &cli.BoolFlag{Name: "json", Usage: usage}
}

// peerJSON is a receiver in `treecast peers --json`.
type peerJSON struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	Group   string `json:"group"`
	State   string `json:"state"` // "idle", "busy", or what a newer receiver announces
	Version int    `json:"version"`
	// Conflict is a second address that answered for the node id: two
	// machines claim it, and a seed sends to neither.
	Conflict string `json:"conflict,omitempty"`
}

// printPeersJSON writes the receivers found as one JSON document.
func printPeersJSON(w io.Writer, found []discover.Peer) error {
	doc := struct {
		Peers []peerJSON `json:"peers"`
	}{Peers: []peerJSON{}}
	for _, p := range found {
		pj := peerJSON{Name: p.Name, ID: p.ID, Addr: p.Addr.String(), Group: p.Group, State: p.State, Version: p.Version}
		if p.Conflicted() {
			pj.Conflict = p.Conflict.String()
		}
		doc.Peers = append(doc.Peers, pj)
	}
	b, err := jsonDoc(doc)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// jsonDoc is v as an indented JSON document and a newline, with <, > and &
// as they are: an error quoting a shell command stays readable.
func jsonDoc(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(v)
	return b.Bytes(), err
}

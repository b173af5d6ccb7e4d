package relay

import (
	"bytes"
	"strings"
	"sync"
	"unicode/utf8"
)

// outputTail keeps the end of what an apply's command writes to its
// stdout and stderr, for the node's result: the seed puts it in its
// report. It holds at most maxText bytes, the limit of a text on the wire.
type outputTail struct {
	mu  sync.Mutex
	buf []byte
	cut bool // bytes were dropped from the front
}

func (t *outputTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= maxText {
		p = p[len(p)-maxText:]
		t.buf, t.cut = t.buf[:0], true
	}
	if over := len(t.buf) + len(p) - maxText; over > 0 {
		t.buf, t.cut = append(t.buf[:0], t.buf[over:]...), true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String is the output kept: whole lines (the first one dropped if it was
// cut), trailing space trimmed, valid UTF-8 (invalid bytes replaced), at
// most maxText bytes.
func (t *outputTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if t.cut {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
		for len(b) > 0 && !utf8.RuneStart(b[0]) {
			b = b[1:] // the rest of a rune cut off
		}
	}
	s := strings.ToValidUTF8(string(bytes.TrimRight(b, " \t\r\n")), "\uFFFD")
	for len(s) > maxText { // invalid bytes replaced grew it
		_, n := utf8.DecodeRuneInString(s)
		s = s[n:]
	}
	return s
}

package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestOutputTailKeepsTheEnd(t *testing.T) {
	var lines []string
	for i := range 1000 {
		lines = append(lines, fmt.Sprintf("line %d", i))
	}
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"nothing", nil, ""},
		{"a few lines", []string{"one\n", "two\n\n"}, "one\ntwo"},
		{"a line in pieces", []string{"wor", "ld\n"}, "world"},
		{"past the limit in small writes", strings.SplitAfter(strings.Join(lines, "\n")+"\n", "\n"), ""},
		{"past the limit in one write", []string{strings.Join(lines, "\n") + "\n"}, ""},
		{"cut inside a rune", []string{strings.Repeat("é", maxText) + "z"}, strings.Repeat("é", maxText/2-1) + "z"},
		{"invalid UTF-8 grows past the limit", []string{strings.Repeat("\xffa", maxText)}, strings.Repeat("\uFFFDa", maxText/4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tail outputTail
			for _, w := range tc.writes {
				if n, err := io.WriteString(&tail, w); n != len(w) || err != nil {
					t.Fatalf("write %d bytes: %d, %v", len(w), n, err)
				}
			}
			got := tail.String()
			if len(got) > maxText {
				t.Fatalf("kept %d bytes, more than %d", len(got), maxText)
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("kept %q, want %q", got, tc.want)
			}
			if strings.HasPrefix(tc.name, "past the limit") {
				if !strings.HasSuffix(got, "\nline 999") || !strings.HasPrefix(got, "line ") {
					t.Errorf("kept %q...%q: want whole lines up to the last", got[:20], got[len(got)-20:])
				}
			}
			if !utf8.ValidString(got) {
				t.Errorf("kept invalid UTF-8: %q", got)
			}
		})
	}
}

// What an apply's command writes reaches the seed's report, in a result
// that succeeded and in one that failed, and no more than 4 KiB of it.
func TestApplyOutputReachesTheReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, _ := writePackage(t, 200<<10)
	nodes := startNodes(t, ctx, cfg, 3, func(i int, o *ReceiverOptions, _ *context.Context) {
		switch i {
		case 0:
			o.Apply = func(_ context.Context, p Package) error {
				fmt.Fprint(p.Output, "unpacking app\nE: disk full\n")
				return errors.New("run `install.sh`: command exited with status 2: E: disk full")
			}
		case 1:
			o.Apply = func(_ context.Context, p Package) error {
				for i := range 2000 {
					fmt.Fprintf(p.Output, "restarting service %d\n", i)
				}
				return nil
			}
		}
	})
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	for _, n := range nodes {
		<-n.applied
	}
	if n := rep.Nodes[0]; n.Status != StatusFailed || n.Output != "unpacking app\nE: disk full" {
		t.Errorf("failed node: status %q, output %q", n.Status, n.Output)
	}
	if n := rep.Nodes[1]; n.Status != StatusOK || len(n.Output) > maxText || !strings.HasSuffix(n.Output, "\nrestarting service 1999") || !strings.HasPrefix(n.Output, "restarting service ") {
		t.Errorf("node that applied it: status %q, %d bytes of output ending %q", n.Status, len(n.Output), n.Output[max(0, len(n.Output)-40):])
	}
	if n := rep.Nodes[2]; n.Status != StatusOK || n.Output != "" {
		t.Errorf("node without a command: status %q, output %q", n.Status, n.Output)
	}
}

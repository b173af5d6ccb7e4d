//go:build unix

package install

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExecEnvironment(t *testing.T) {
	pkg := spool(t, "app.bin", []byte("payload"))
	base := t.TempDir()
	out := filepath.Join(base, "env")
	cmd := `printf '%s\n' "$TREECAST_FILE" "$TREECAST_NAME" "$TREECAST_SHA256" "$(pwd)" "$TREECAST_TEST_INHERITED" > ` + out
	t.Setenv("TREECAST_TEST_INHERITED", "inherited")
	t.Setenv("TREECAST_NAME", "stale value from the parent")
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(base, "to")

	tests := []struct {
		name string
		cfg  Config
		file string
	}{
		{"spool file", Config{Exec: cmd}, pkg.Path},
		{"placed copy", Config{To: to, Exec: cmd}, filepath.Join(to, "app.bin")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Apply(context.Background(), tt.cfg, pkg); err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSuffix(readFile(t, out), "\n"), "\n")
			want := []string{tt.file, "app.bin", pkg.SHA256, cwd, "inherited"}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("command saw\n %q\nwant\n %q", got, want)
			}
		})
	}
}

func TestExecRelativeFileIsAbsolute(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	pkg := spool(t, "app.bin", []byte("payload"))
	out := filepath.Join(dir, "out")
	if err := Apply(context.Background(), Config{To: "rel", Exec: `echo "$TREECAST_FILE" > ` + out}, pkg); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(readFile(t, out)), filepath.Join(dir, "rel", "app.bin"); got != want {
		t.Errorf("TREECAST_FILE = %q, want %q", got, want)
	}
}

func TestExecFailure(t *testing.T) {
	var many strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&many, "echo 'line %d' >&2; ", i)
	}
	tests := []struct {
		name     string
		cmd      string
		code     int
		signal   string
		tail     string
		contains string // in Error()
	}{
		{"exit status", "echo starting; echo 'first problem' >&2; echo 'config missing' >&2; exit 3", 3, "", "first problem\nconfig missing",
			"command exited with status 3: first problem\nconfig missing"},
		{"no stderr", "exit 1", 1, "", "", "command exited with status 1 (no stderr output)"},
		{"killed by signal", "echo dying >&2; kill -TERM $$", -1, "terminated", "dying", "command was killed by a signal (terminated): dying"},
		{"long stderr", many.String() + "exit 9", 9, "", tailOf(81, 100), "status 9: line 81\n"},
		{"not found", "definitely-not-a-command-xyz", 127, "", "", "command exited with status 127: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Apply(context.Background(), Config{Exec: tt.cmd}, spool(t, "a", nil))
			var ee *ExecError
			if !errors.As(err, &ee) {
				t.Fatalf("Apply: %v, want an *ExecError", err)
			}
			if ee.ExitCode != tt.code || ee.Signal != tt.signal {
				t.Errorf("exit %d signal %q, want %d %q", ee.ExitCode, ee.Signal, tt.code, tt.signal)
			}
			if tt.tail != "" && ee.StderrTail != tt.tail {
				t.Errorf("stderr tail\n%q\nwant\n%q", ee.StderrTail, tt.tail)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("message %q does not contain %q", err, tt.contains)
			}
			if !strings.HasPrefix(err.Error(), "run `") {
				t.Errorf("message %q does not name the command", err)
			}
		})
	}
}

// What the command writes to stdout and stderr reaches Package.Output,
// whether it fails or not, and the failure's stderr tail is unchanged.
func TestExecOutput(t *testing.T) {
	for _, tc := range []struct {
		name, cmd, want string
		fails           bool
	}{
		{"succeeds", "echo restarting; echo 'a warning' >&2; echo done", "restarting\na warning\ndone\n", false},
		{"fails", "echo unpacking; echo 'disk full' >&2; exit 2", "unpacking\ndisk full\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			pkg := spool(t, "a", nil)
			pkg.Output = &out
			err := Apply(context.Background(), Config{Exec: tc.cmd}, pkg)
			if (err != nil) != tc.fails {
				t.Fatalf("Apply: %v", err)
			}
			// stdout and stderr are two pipes: their lines may come in either order.
			got, want := strings.Split(out.String(), "\n"), strings.Split(tc.want, "\n")
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("output %q, want the lines of %q", out.String(), tc.want)
			}
			if ee := (*ExecError)(nil); tc.fails && (!errors.As(err, &ee) || ee.StderrTail != "disk full") {
				t.Errorf("error %v", err)
			}
		})
	}
	t.Run("streamed", func(t *testing.T) {
		var out strings.Builder
		err := Stream(context.Background(), Config{Exec: "wc -c; echo read it >&2"}, "a", strings.Repeat("0", 64), strings.NewReader("12345"), &out)
		if got := strings.Fields(out.String()); err != nil || !slices.Contains(got, "5") || !strings.Contains(out.String(), "read it\n") {
			t.Errorf("Stream: %v, output %q", err, out.String())
		}
	})
}

// tailOf returns "line from" .. "line to", newline-separated.
func tailOf(from, to int) string {
	var lines []string
	for i := from; i <= to; i++ {
		lines = append(lines, "line "+strconv.Itoa(i))
	}
	return strings.Join(lines, "\n")
}

func TestTailWriter(t *testing.T) {
	var w tailWriter
	long := strings.Repeat("x", 3000)
	fmt.Fprint(&w, "dropped partial "+long+"\nkept 1\n")
	fmt.Fprint(&w, "kept 2\n\xff\n")
	got := w.String()
	if got != "kept 1\nkept 2\n\uFFFD" {
		t.Errorf("tail = %q", got)
	}
	var big tailWriter
	fmt.Fprint(&big, strings.Repeat("y", 5000))
	if n := len(big.String()); n != stderrTailBytes {
		t.Errorf("a single long line keeps %d bytes, want %d", n, stderrTailBytes)
	}
}

// TestExecCancelKillsGroup starts a shell that puts `sleep 30` in the
// background, waits for the sleep's pid, cancels, and checks that Apply
// returns the context error and that the sleep is gone too.
func TestExecCancelKillsGroup(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "ready")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Apply(ctx, Config{Exec: "sleep 30 & echo $! > " + fifo + "; wait"}, spool(t, "a", nil))
	}()

	f, err := os.Open(fifo) // blocks until the shell opens it for writing
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	cancel()

	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Apply: %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Apply did not return after its context was cancelled")
	}
	// SIGKILL is delivered asynchronously; allow the kernel generous time.
	deadline := time.Now().Add(20 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("background sleep %d survived the cancellation", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid is a process that is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestExecBackgroundChildDoesNotBlock: a command that starts a daemon holding
// stderr open still completes once the command itself has exited.
func TestExecBackgroundChildDoesNotBlock(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pid")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- Apply(context.Background(), Config{Exec: "sleep 30 & echo $! > " + fifo}, spool(t, "a", nil))
	}()
	f, err := os.Open(fifo)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Apply: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Apply waited for the background process")
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// A command still running at its exec_timeout is killed, with all it
// started, and the apply fails saying so; one that ends in time succeeds.
func TestExecTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	err := Apply(context.Background(), Config{Exec: "sleep 30 & echo $! > " + pidFile + "; wait", ExecTimeout: 300 * time.Millisecond}, spool(t, "a", nil))
	var te *ExecTimeoutError
	if !errors.As(err, &te) || te.Timeout != 300*time.Millisecond || !strings.Contains(err.Error(), "exec_timeout") {
		t.Fatalf("Apply of a command that outlives its timeout: %v, want an *ExecTimeoutError naming exec_timeout", err)
	}
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("the command's background child wrote no pid: %q", b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for alive(pid) { // polled: the kernel reaps it when it will
		if time.Now().After(deadline) {
			t.Fatalf("background sleep %d survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := Apply(context.Background(), Config{Exec: "true", ExecTimeout: 10 * time.Second}, spool(t, "a", nil)); err != nil {
		t.Errorf("a command that ends in time: %v", err)
	}
}

// Streamed, the timeout runs from the end of the command's stdin: a slow
// transfer longer than it does not kill a command that ends once it has
// read everything; one that hangs after the end is killed.
func TestStreamTimeoutRunsFromTheEnd(t *testing.T) {
	slow := func() *slowReader { return &slowReader{left: 6, every: 100 * time.Millisecond} }
	cfg := Config{Exec: "cat >/dev/null", Stdin: true, ExecTimeout: 300 * time.Millisecond}
	if err := Stream(context.Background(), cfg, "a", strings.Repeat("0", 64), slow(), nil); err != nil {
		t.Errorf("a command fed for 600 ms, done at once after: %v", err)
	}
	cfg.Exec = "cat >/dev/null; sleep 30"
	var te *ExecTimeoutError
	if err := Stream(context.Background(), cfg, "a", strings.Repeat("0", 64), slow(), nil); !errors.As(err, &te) {
		t.Errorf("a command that hangs after its stdin ended: %v, want an *ExecTimeoutError", err)
	}
}

// slowReader gives a byte every so often, left times, then EOF.
type slowReader struct {
	left  int
	every time.Duration
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.every)
	r.left--
	p[0] = 'x'
	return 1, nil
}

package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Bounds on the stderr kept for an ExecError.
const (
	stderrTailBytes = 2 << 10
	stderrTailLines = 20
)

// pipeGrace is how long run waits, after the command exited or was killed,
// for processes it left in the background to close its stderr. Past it the
// pipe is closed: a daemon started by the command must not hold up Apply.
const pipeGrace = 2 * time.Second

// run runs command with the platform's shell (shellCommand: `sh -c` on
// Unix) in its own process group, in the current working directory, with the
// process environment plus extraEnv. Stdin is the null device; stdout and
// stderr go to out, if it is not nil, as they come; the tail of stderr goes
// into an *ExecError when the command fails. When ctx ends, the whole
// process group is killed and the context's error is returned.
// With a timeout, the process group is killed that long after the command
// started, and an *ExecTimeoutError returned.
func run(ctx context.Context, command string, extraEnv []string, out io.Writer, timeout time.Duration) error {
	return runFed(ctx, command, extraEnv, nil, out, timeout)
}

// runFed is run with stdin fed from in, when in is not nil; the timeout
// then runs from the end of in. A command that exits 0 without reading all
// of in is taken at its word.
func runFed(ctx context.Context, command string, extraEnv []string, in io.Reader, out io.Writer, timeout time.Duration) error {
	parent := ctx
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var timer *time.Timer
	var timerMu sync.Mutex
	startTimer := func() {
		timerMu.Lock()
		defer timerMu.Unlock()
		if timeout > 0 && timer == nil {
			timer = time.AfterFunc(timeout, func() { stop(&ExecTimeoutError{Timeout: timeout}) })
		}
	}
	defer func() {
		timerMu.Lock()
		defer timerMu.Unlock()
		if timer != nil {
			timer.Stop()
		}
	}()
	cmd := shellCommand(ctx, command)
	cmd.Env = append(os.Environ(), extraEnv...) // later entries win over inherited ones
	if in != nil {
		cmd.Stdin = &endReader{r: in, end: startTimer}
	} else {
		startTimer()
	}
	tail := &tailWriter{}
	cmd.Stderr = tail
	if out != nil {
		w := &outputWriter{w: out}
		cmd.Stdout, cmd.Stderr = w, io.MultiWriter(tail, w)
	}
	cmd.WaitDelay = pipeGrace

	err := cmd.Run()
	if err == nil || errors.Is(err, exec.ErrWaitDelay) { // exited 0; a background child kept stderr open
		return nil
	}
	if ctxErr := parent.Err(); ctxErr != nil {
		return fmt.Errorf("command stopped: %w", ctxErr)
	}
	var te *ExecTimeoutError
	if errors.As(context.Cause(ctx), &te) {
		return te
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return err // it did not start: no shell, a bad environment
	}
	return &ExecError{ExitCode: exitErr.ExitCode(), Signal: killSignal(exitErr), StderrTail: tail.String()}
}

// endReader calls end once r has ended (EOF, or an error).
type endReader struct {
	r    io.Reader
	end  func()
	once sync.Once
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.once.Do(e.end)
	}
	return n, err
}

// outputWriter passes a command's stdout and stderr, copied by two
// goroutines, to w one write at a time. A failing w loses output, never
// fails the command.
type outputWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (o *outputWriter) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.w.Write(p)
	return len(p), nil
}

// tailWriter keeps the last stderrTailBytes written to it.
type tailWriter struct {
	buf       []byte
	truncated bool
}

func (w *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= stderrTailBytes {
		p = p[len(p)-stderrTailBytes:]
		w.buf = w.buf[:0]
		w.truncated = true
	}
	if over := len(w.buf) + len(p) - stderrTailBytes; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
		w.truncated = true
	}
	w.buf = append(w.buf, p...)
	return n, nil
}

// String returns the kept output: whole lines only, at most stderrTailLines
// of them, trailing space trimmed, valid UTF-8.
func (w *tailWriter) String() string {
	b := w.buf
	if w.truncated {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i+1 < len(b) {
			b = b[i+1:] // drop the partial first line
		}
	}
	b = bytes.TrimRight(b, " \t\r\n")
	for i, n := len(b)-1, 0; i >= 0; i-- {
		if b[i] == '\n' {
			if n++; n == stderrTailLines {
				b = b[i+1:]
				break
			}
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

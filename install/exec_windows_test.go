//go:build windows

package install

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The command runs through cmd.exe, sees the package in its environment,
// and a non-zero exit is an ExecError with the tail of stderr.
func TestExecCmdShell(t *testing.T) {
	pkg := spool(t, "app.bin", []byte("payload"))
	out := filepath.Join(t.TempDir(), "out")
	if err := Apply(context.Background(), Config{Exec: `echo %TREECAST_NAME% %TREECAST_SHA256%> "` + out + `"`}, pkg); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(readFile(t, out)), "app.bin "+pkg.SHA256; got != want {
		t.Errorf("command wrote %q, want %q", got, want)
	}
	err := Apply(context.Background(), Config{Exec: `echo config missing 1>&2 & exit /b 3`}, pkg)
	var ee *ExecError
	if !errors.As(err, &ee) || ee.ExitCode != 3 || ee.StderrTail != "config missing" {
		t.Errorf("Apply = %v, want exit status 3 with stderr %q", err, "config missing")
	}
}

// Cancelling ends the command's process tree.
func TestExecCancelWindows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := Apply(ctx, Config{Exec: `ping -n 30 127.0.0.1 >NUL`}, spool(t, "a", nil))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Apply = %v, want the deadline", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Apply returned after %s", d)
	}
}

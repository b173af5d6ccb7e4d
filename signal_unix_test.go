//go:build unix

package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// SIGINT ends the context with the signal as its cause, which sets the
// exit code; a second one would end the process.
func TestSignalContextSaysWhichSignal(t *testing.T) {
	ctx, stop := signalContext(context.Background())
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	sig, ok := stoppedBy(ctx)
	if !ok || sig.code() != 130 || sig.name() != "SIGINT" {
		t.Errorf("stopped by %v (%v), want SIGINT, exit 130", sig, ok)
	}
	if _, ok := stoppedBy(context.Background()); ok {
		t.Error("a context no signal ended is reported stopped by one")
	}
}

// A signal sent again right after the first (timeout(1) sends it to the
// command and to its process group) is the same stop: treecast goes on
// stopping and exits as it would. One sent later ends it at once.
func TestSignalSentTwice(t *testing.T) {
	if gap := os.Getenv("TREECAST_SIGNAL_GAP"); gap != "" {
		after, err := time.ParseDuration(gap)
		if err != nil {
			os.Exit(3)
		}
		ctx, stop := signalContext(context.Background())
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		<-ctx.Done()
		time.Sleep(after)
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(200 * time.Millisecond) // time to die of it, if it kills
		stop()
		os.Exit(0)
	}
	for _, tc := range []struct {
		gap    time.Duration
		killed bool
	}{
		{0, false},
		{sameSignal / 5, false},
		{sameSignal + 300*time.Millisecond, true},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSignalSentTwice$")
		cmd.Env = append(os.Environ(), "TREECAST_SIGNAL_GAP="+tc.gap.String())
		err := cmd.Run()
		var ee *exec.ExitError
		killed := errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM
		if killed != tc.killed || !killed && err != nil {
			t.Errorf("second SIGTERM %s after the first: %v, want killed %v", tc.gap, err, tc.killed)
		}
	}
}

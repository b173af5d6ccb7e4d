//go:build unix

package main

import (
	"context"
	"os"
	"syscall"
	"testing"
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

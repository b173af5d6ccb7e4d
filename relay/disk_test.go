//go:build linux

package relay

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A disk that fills up mid-transfer fails that node, with a message that
// says so, and nobody else.
func TestFullDiskFailsOnlyThatNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount a 4 MiB tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 3<<20)
	var fill sync.Once
	nodes := startNodes(t, ctx, cfg, 3, func(i int, o *ReceiverOptions, _ *context.Context) {
		if i != 2 { // a leaf
			return
		}
		o.Dir = dir
		// Something else on the machine takes the space once the session started.
		o.Progress = func(ReceiverProgress) {
			fill.Do(func() { os.WriteFile(filepath.Join(dir, "filler"), make([]byte, 2<<20), 0o600) })
		}
	})
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	if rep.Nodes[2].Status != StatusFailed || !strings.Contains(rep.Nodes[2].Error, "no space left on device") {
		t.Errorf("full node: %q %q, want failed with no space left", rep.Nodes[2].Status, rep.Nodes[2].Error)
	}
	if _, err := os.Stat(nodes[2].dest); err == nil {
		t.Errorf("the full node applied a package")
	}
	for i := range 2 {
		<-nodes[i].applied
		if got, _ := os.ReadFile(nodes[i].dest); rep.Nodes[i].Status != StatusOK || !bytes.Equal(got, data) {
			t.Errorf("node %d: %+v", i, rep.Nodes[i])
		}
	}
}

//go:build linux

package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// mountTmpfs mounts a tmpfs of the given size (e.g. "1m") on a new directory
// and unmounts it when the test ends. It needs root; a non-root run skips.
func mountTmpfs(t *testing.T, at, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs; run `go test` as root to exercise this fault")
	}
	if at == "" {
		at = filepath.Join(t.TempDir(), "tmpfs")
	}
	if err := os.Mkdir(at, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", at, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", at, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(at, 0); err != nil {
			t.Errorf("unmount %s: %v", at, err)
		}
	})
	return at
}

func TestCopyDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, "", "1m")
	pkg := spool(t, "app.bin", randomBytes(2<<20, 3))
	err := Apply(context.Background(), Config{To: mnt}, pkg)
	if err == nil {
		t.Fatal("copying 2 MiB into a 1 MiB filesystem succeeded")
	}
	msg := err.Error()
	t.Log(msg)
	if !strings.Contains(msg, "no space left on device") || !strings.Contains(msg, "write "+mnt+"/.app.bin.tmp-") {
		t.Errorf("message %q should name the file being written and say the disk is full", msg)
	}
	if !IsNoSpace(err) {
		t.Errorf("IsNoSpace(%v) = false", err)
	}
	if n := names(t, mnt); n != nil {
		t.Errorf("left behind on the full disk: %v", n)
	}
}

func TestExtractDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, "", "1m")
	pkg := spool(t, "site.tar", buildTar(t, []tarEntry{
		{name: "small", body: "fits"},
		{name: "big", body: string(randomBytes(2<<20, 4))},
	}))

	// By default the size cap is the free space: refused before a byte is written.
	err := Apply(context.Background(), Config{Extract: mnt}, pkg)
	var le *LimitError
	if !errors.As(err, &le) || le.FreeOf != mnt || !IsNoSpace(err) {
		t.Fatalf("Apply: %v, want a *LimitError for the free space of %s that IsNoSpace", err, mnt)
	}
	if n := names(t, mnt); n != nil {
		t.Errorf("left behind on the small disk: %v", n)
	}

	// With a cap above the free space, the disk fills while staging.
	err = Apply(context.Background(), Config{Extract: mnt, MaxExtractSize: "1GiB"}, pkg)
	if err == nil {
		t.Fatal("extracting 2 MiB into a 1 MiB filesystem succeeded")
	}
	msg := err.Error()
	t.Log(msg)
	if !strings.Contains(msg, "no space left on device") || !strings.Contains(msg, `entry "big": write `+mnt+"/"+stagingPrefix) {
		t.Errorf("message %q should name the entry and file being written and say the disk is full", msg)
	}
	if !IsNoSpace(err) {
		t.Errorf("IsNoSpace(%v) = false", err)
	}
	if n := names(t, mnt); n != nil {
		t.Errorf("left behind on the full disk: %v", n)
	}
}

// TestExtractUndoesPartialMove makes the last top-level move fail (a mount
// point cannot be renamed) after two entries were already moved in, and
// checks that the destination is back to its previous contents.
func TestExtractUndoesPartialMove(t *testing.T) {
	parent, dir := newDest(t)
	must(t, os.WriteFile(filepath.Join(dir, "aaa"), []byte("old aaa"), 0o644))
	mnt := mountTmpfs(t, filepath.Join(dir, "mnt"), "1m")
	must(t, os.WriteFile(filepath.Join(mnt, "data"), []byte("mounted data"), 0o644))

	pkg := spool(t, "r.tar", buildTar(t, []tarEntry{
		{name: "aaa", body: "new aaa"},
		{name: "bbb/file", body: "new bbb"},
		{name: "mnt/x", body: "new x"},
	}))
	err := Apply(context.Background(), Config{Extract: dir}, pkg)
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "move the previous "+mnt+" aside") {
		t.Fatalf("Apply: %v, want the move of the mount point to fail", err)
	}
	if n := names(t, dir); !slices.Equal(n, []string{"aaa", "keep", "mnt"}) {
		t.Errorf("destination holds %v, want its previous entries only", n)
	}
	if got := readFile(t, filepath.Join(dir, "aaa")); got != "old aaa" {
		t.Errorf("aaa = %q, want the previous content", got)
	}
	if got := readFile(t, filepath.Join(mnt, "data")); got != "mounted data" {
		t.Errorf("mounted data = %q", got)
	}
	if n := names(t, parent); !slices.Equal(n, []string{"dest"}) {
		t.Errorf("outside the destination: %v", n)
	}
}

// TestExtractMeasuresFreeSpaceWithoutLeftovers fills most of a small disk
// with what a killed extraction left, then extracts a package that fits only
// once that is gone: leftovers are removed before the free space is measured.
func TestExtractMeasuresFreeSpaceWithoutLeftovers(t *testing.T) {
	mnt := mountTmpfs(t, "", "4m")
	must(t, os.Mkdir(filepath.Join(mnt, stagingPrefix+"1"), 0o700))
	must(t, os.WriteFile(filepath.Join(mnt, stagingPrefix+"1", "half"), randomBytes(3<<20, 5), 0o600))
	body := randomBytes(2<<20, 6)
	pkg := spool(t, "site.tar", buildTar(t, []tarEntry{{name: "big", body: string(body)}}))
	if err := Apply(context.Background(), Config{Extract: mnt}, pkg); err != nil {
		t.Fatal(err)
	}
	if n := names(t, mnt); !slices.Equal(n, []string{"big"}) {
		t.Errorf("disk holds %v, want only big", n)
	}
	if got := readFile(t, filepath.Join(mnt, "big")); got != string(body) {
		t.Errorf("big holds %d bytes, not the package's", len(got))
	}
}

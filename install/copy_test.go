package install

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestCopy(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"small", []byte("hello\n")},
		{"several buffers", randomBytes(3*copyBufSize+17, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkg := spool(t, "app.tar.gz", tt.data)
			to := filepath.Join(t.TempDir(), "missing", "parents")
			if err := Apply(context.Background(), Config{To: to}, pkg); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(to, "app.tar.gz")
			got, err := os.ReadFile(dest)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.data) {
				t.Errorf("placed file differs: %d bytes, want %d", len(got), len(tt.data))
			}
			fi, err := os.Stat(dest)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != 0o644 {
				t.Errorf("mode %v, want 0644", fi.Mode())
			}
			if n := names(t, to); len(n) != 1 {
				t.Errorf("destination holds %v, want only the package", n)
			}
			if !bytes.Equal([]byte(readFile(t, pkg.Path)), tt.data) {
				t.Error("spool file changed")
			}
		})
	}
}

func TestCopyReplacesExisting(t *testing.T) {
	to := t.TempDir()
	if err := os.WriteFile(filepath.Join(to, "app.bin"), []byte("old version, longer than the new"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A symlink of the package's name is replaced, its target left alone.
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, []byte("target"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(to, "tool")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app.bin", "tool"} {
		if err := Apply(context.Background(), Config{To: to}, spool(t, name, []byte("new"))); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(to, name)); got != "new" {
			t.Errorf("%s holds %q, want %q", name, got, "new")
		}
	}
	if fi, _ := os.Lstat(filepath.Join(to, "tool")); fi.Mode()&os.ModeSymlink != 0 {
		t.Error("symlink was followed instead of replaced")
	}
	if got := readFile(t, target); got != "target" {
		t.Errorf("symlink target was written: %q", got)
	}
	if n := names(t, to); !slices.Equal(n, []string{"app.bin", "tool"}) {
		t.Errorf("destination holds %v", n)
	}
}

func TestCopyIntoSpoolDirLeavesSpoolAlone(t *testing.T) {
	pkg := spool(t, "spool", []byte("verified"))
	before, err := os.Stat(pkg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(context.Background(), Config{To: filepath.Dir(pkg.Path)}, pkg); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(pkg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) || readFile(t, pkg.Path) != "verified" {
		t.Error("the spool file was replaced")
	}
	if n := names(t, filepath.Dir(pkg.Path)); !slices.Equal(n, []string{"spool"}) {
		t.Errorf("spool directory holds %v", n)
	}
}

func TestCopyFailures(t *testing.T) {
	t.Run("destination name is a directory", func(t *testing.T) {
		to := t.TempDir()
		if err := os.MkdirAll(filepath.Join(to, "app.bin", "inner"), 0o755); err != nil {
			t.Fatal(err)
		}
		err := Apply(context.Background(), Config{To: to}, spool(t, "app.bin", []byte("x")))
		if err == nil || !strings.Contains(err.Error(), filepath.Join(to, "app.bin")+" is a directory") {
			t.Fatalf("Apply: %v, want a clear refusal", err)
		}
		if n := names(t, to); !slices.Equal(n, []string{"app.bin"}) {
			t.Errorf("destination holds %v", n)
		}
		if n := names(t, filepath.Join(to, "app.bin")); !slices.Equal(n, []string{"inner"}) {
			t.Errorf("directory was changed: %v", n)
		}
	})
	t.Run("to is a file", func(t *testing.T) {
		parent := t.TempDir()
		to := filepath.Join(parent, "file")
		if err := os.WriteFile(to, []byte("i am a file"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := Apply(context.Background(), Config{To: to}, spool(t, "app.bin", []byte("x")))
		if err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("Apply: %v, want 'not a directory'", err)
		}
		if n := names(t, parent); !slices.Equal(n, []string{"file"}) {
			t.Errorf("left behind: %v", n)
		}
	})
	t.Run("spool changed after verification", func(t *testing.T) {
		pkg := spool(t, "app.bin", []byte("verified"))
		pkg.SHA256 = strings.Repeat("0", 64)
		to := t.TempDir()
		err := Apply(context.Background(), Config{To: to}, pkg)
		if err == nil || !strings.Contains(err.Error(), "changed after it was verified") {
			t.Fatalf("Apply: %v, want a hash mismatch", err)
		}
		if n := names(t, to); n != nil {
			t.Errorf("left behind: %v", n)
		}
	})
	t.Run("checked by the caller", func(t *testing.T) {
		// The caller read it back as it came: the copy does not hash it
		// again, but still takes no file of another size.
		data := randomBytes(100_000, 3)
		pkg := spool(t, "app.bin", data)
		pkg.Checked, pkg.SHA256 = true, strings.Repeat("0", 64)
		to := t.TempDir()
		if err := Apply(context.Background(), Config{To: to}, pkg); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if got, err := os.ReadFile(filepath.Join(to, "app.bin")); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("placed %d bytes (%v), want the %d checked", len(got), err, len(data))
		}
		pkg.Size++
		err := Apply(context.Background(), Config{To: t.TempDir()}, pkg)
		if err == nil || !strings.Contains(err.Error(), "changed after it was verified") {
			t.Fatalf("Apply of a checked file of another size: %v, want refused", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		to := t.TempDir()
		err := Apply(ctx, Config{To: to}, spool(t, "app.bin", randomBytes(1000, 2)))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Apply: %v, want context.Canceled", err)
		}
		if n := names(t, to); n != nil {
			t.Errorf("left behind: %v", n)
		}
	})
}

func TestTempPatternBoundsLength(t *testing.T) {
	long := strings.Repeat("é", 127) // 254 bytes, within a 255-byte name limit
	to := t.TempDir()
	if err := Apply(context.Background(), Config{To: to}, spool(t, long, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(to, long)); got != "x" {
		t.Errorf("got %q", got)
	}
}

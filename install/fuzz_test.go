package install

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzExtract feeds arbitrary bytes to extraction. Whatever they are, it must
// not panic, must create nothing outside the destination, must leave the
// destination empty when it fails, and may only create regular files,
// directories and symlinks that resolve inside, with no special mode bits.
func FuzzExtract(f *testing.F) {
	unsafe := []tarEntry{
		{name: "ok", body: "fine"},
		{name: "link", typ: tar.TypeSymlink, link: "../outside"},
		{name: "link/x", body: "through"},
		{name: "../up", body: "x"},
		{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"},
	}
	for _, e := range [][]tarEntry{goodEntries, unsafe, nil} {
		f.Add(buildTar(f, e))
		f.Add(gzipBytes(f, buildTar(f, e)))
	}
	f.Add(buildZip(f, goodEntries))
	f.Add(buildZip(f, []tarEntry{{name: "../z", body: "x"}, {name: "s", typ: tar.TypeSymlink, link: "/etc"}}))
	f.Add(buildZip(f, nil))
	f.Add([]byte("PK\x03\x04garbage"))
	f.Add([]byte{0x1f, 0x8b})

	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		parent := filepath.Join(base, "parent")
		dir := filepath.Join(parent, "dest")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		spoolPath := filepath.Join(base, "spool")
		if err := os.WriteFile(spoolPath, data, 0o444); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		pkg := Package{Path: spoolPath, Name: "fuzz", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}

		err := Apply(context.Background(), Config{Extract: dir}, pkg)

		if n := names(t, base); !slices.Equal(n, []string{"parent", "spool"}) {
			t.Fatalf("created outside the destination: %v", n)
		}
		if n := names(t, parent); !slices.Equal(n, []string{"dest"}) {
			t.Fatalf("created outside the destination: %v", n)
		}
		if err != nil {
			if n := names(t, dir); n != nil {
				t.Fatalf("failed with %v but left %v", err, n)
			}
			return
		}
		walkErr := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == dir {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if strings.HasPrefix(rel, ".treecast-") {
				t.Errorf("working directory %s left behind", rel)
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			mode := fi.Mode()
			switch {
			case mode&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				resolved := path.Join(path.Dir(filepath.ToSlash(rel)), target)
				if path.IsAbs(target) || resolved == ".." || strings.HasPrefix(resolved, "../") {
					t.Errorf("symlink %s -> %s points outside", rel, target)
				}
			case mode.IsDir(), mode.IsRegular():
			default:
				t.Errorf("%s has type %v", rel, mode.Type())
			}
			if mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
				t.Errorf("%s has mode %v", rel, mode)
			}
			return nil
		})
		if walkErr != nil {
			t.Fatal(walkErr)
		}
	})
}

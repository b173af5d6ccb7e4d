package install

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tarEntry describes an archive member for the builders below.
type tarEntry struct {
	name string
	typ  byte // tar type flag; 0 means a regular file
	body string
	link string
	mode int64 // 0 means 0644 for files, 0755 for directories
}

func buildTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// buildZip writes entries as a zip; the tar type flag picks the zip mode.
func buildZip(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		perm := fs.FileMode(e.mode)
		if perm == 0 {
			perm = 0o644
		}
		h := &zip.FileHeader{Name: e.name, Method: zip.Store}
		body := e.body
		switch e.typ {
		case 0, tar.TypeReg:
			h.SetMode(perm)
		case tar.TypeDir:
			if e.mode == 0 {
				perm = 0o755
			}
			h.SetMode(fs.ModeDir | perm)
		case tar.TypeSymlink:
			h.SetMode(fs.ModeSymlink | 0o777)
			body = e.link
		case tar.TypeChar:
			h.SetMode(fs.ModeDevice | fs.ModeCharDevice | 0o666)
		case tar.TypeFifo:
			h.SetMode(fs.ModeNamedPipe | 0o666)
		default:
			t.Fatalf("zip builder: no mapping for type %q", e.typ)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatalf("zip header %q: %v", e.name, err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newDest makes parent/dest holding one file, keep, and returns both paths.
func newDest(t *testing.T) (parent, dir string) {
	t.Helper()
	parent = t.TempDir()
	dir = filepath.Join(parent, "dest")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	return parent, dir
}

// assertUntouched checks that nothing appeared next to dir and that dir holds
// only what newDest put there: no partial extraction, no staging leftovers.
func assertUntouched(t *testing.T, parent, dir string) {
	t.Helper()
	if n := names(t, parent); !slices.Equal(n, []string{"dest"}) {
		t.Errorf("outside the destination: %v, want only dest", n)
	}
	if n := names(t, dir); !slices.Equal(n, []string{"keep"}) {
		t.Errorf("destination holds %v, want only keep", n)
	}
	if got := readFile(t, filepath.Join(dir, "keep")); got != "keep" {
		t.Errorf("keep was changed to %q", got)
	}
}

// tree describes everything under dir: "dir 0755", "file 0644 content" or
// "link -> target", keyed by slash path.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = "link -> " + target
		case fi.IsDir():
			out[filepath.ToSlash(rel)] = fmt.Sprintf("dir %#o", fi.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = fmt.Sprintf("file %#o %s", fi.Mode()&^fs.ModeType, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTree(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("missing %s (want %s)", k, w)
		} else if g != w {
			t.Errorf("%s: got %q, want %q", k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s (%s)", k, g)
		}
	}
}

const script = "#!/bin/sh\necho run\n"

// goodEntries exercise every allowed kind: explicit and implied directories,
// modes, empty files, symlinks inside the tree.
var goodEntries = []tarEntry{
	{name: "app/", typ: tar.TypeDir, mode: 0o750},
	{name: "app/bin/", typ: tar.TypeDir, mode: 0o555},
	{name: "app/bin/run", body: script, mode: 0o4755},
	{name: "app/README", body: "readme"},
	{name: "app/lib/x/y.txt", body: "deep", mode: 0o600},
	{name: "app/current", typ: tar.TypeSymlink, link: "bin/run"},
	{name: "app/up", typ: tar.TypeSymlink, link: "../top.txt"},
	{name: "app/empty", body: ""},
	{name: "top.txt", body: "top"},
}

var goodTree = map[string]string{
	"keep":            "file 0644 keep",
	"app":             "dir 0750",
	"app/bin":         "dir 0755",
	"app/bin/run":     "file 0755 " + script,
	"app/README":      "file 0644 readme",
	"app/lib":         "dir 0755",
	"app/lib/x":       "dir 0755",
	"app/lib/x/y.txt": "file 0600 deep",
	"app/current":     "link -> bin/run",
	"app/up":          "link -> ../top.txt",
	"app/empty":       "file 0644 ",
	"top.txt":         "file 0644 top",
}

func TestExtractGood(t *testing.T) {
	// tar as `tar -C dir .` writes it: a "./" entry and "./" prefixes, plus a hard link.
	tarEntries := append([]tarEntry{{name: "./", typ: tar.TypeDir}}, goodEntries...)
	tarEntries = append(tarEntries, tarEntry{name: "./app/bin/run2", typ: tar.TypeLink, link: "./app/bin/run"})
	tarEntries[4].name = "./" + tarEntries[4].name
	tarTree := maps(goodTree, map[string]string{"app/bin/run2": "file 0755 " + script})

	tests := []struct {
		name string
		data []byte
		want map[string]string
	}{
		{"tar", buildTar(t, tarEntries), tarTree},
		{"tar.gz", gzipBytes(t, buildTar(t, tarEntries)), tarTree},
		{"zip", buildZip(t, goodEntries), goodTree},
		{"empty tar", buildTar(t, nil), map[string]string{"keep": "file 0644 keep"}},
		{"empty tar.gz", gzipBytes(t, buildTar(t, nil)), map[string]string{"keep": "file 0644 keep"}},
		{"empty zip", buildZip(t, nil), map[string]string{"keep": "file 0644 keep"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The name says nothing: the format is recognised by content.
			pkg := spool(t, "package.bin", tt.data)
			parent, dir := newDest(t)
			setUmask(t, 0o077) // modes must not depend on the umask
			if err := Apply(context.Background(), Config{Extract: dir}, pkg); err != nil {
				t.Fatal(err)
			}
			diffTree(t, tree(t, dir), tt.want)
			if n := names(t, parent); !slices.Equal(n, []string{"dest"}) {
				t.Errorf("outside the destination: %v", n)
			}
			if _, ok := tt.want["app/current"]; ok {
				if got := readFile(t, filepath.Join(dir, "app/current")); got != script {
					t.Errorf("symlink resolves to %q", got)
				}
			}
			if _, ok := tt.want["app/bin/run2"]; ok {
				a, _ := os.Stat(filepath.Join(dir, "app/bin/run"))
				b, _ := os.Stat(filepath.Join(dir, "app/bin/run2"))
				if !os.SameFile(a, b) {
					t.Error("hard link is a copy, not a link")
				}
			}
		})
	}
}

func maps(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func TestExtractCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	pkg := spool(t, "a.zip", buildZip(t, []tarEntry{{name: "f", body: "x"}}))
	if err := Apply(context.Background(), Config{Extract: dir}, pkg); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "f")); got != "x" {
		t.Errorf("got %q", got)
	}
}

func TestExtractReplacesTopLevelEntries(t *testing.T) {
	parent, dir := newDest(t)
	outside := filepath.Join(parent, "outside")
	must(t, os.WriteFile(outside, []byte("operator's file"), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "app"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "app/old.txt"), []byte("stale"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "conf"), []byte("old conf"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "bin"), []byte("a file"), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "x/y"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(dir, "cur")))

	pkg := spool(t, "release.tar.gz", gzipBytes(t, buildTar(t, []tarEntry{
		{name: "app/new.txt", body: "fresh"},
		{name: "conf", body: "new conf"},
		{name: "bin/tool", body: "tool", mode: 0o755},
		{name: "x", body: "now a file"},
		{name: "cur", body: "cur"},
	})))
	if err := Apply(context.Background(), Config{Extract: dir}, pkg); err != nil {
		t.Fatal(err)
	}
	diffTree(t, tree(t, dir), map[string]string{
		"keep":        "file 0644 keep",
		"app":         "dir 0755",
		"app/new.txt": "file 0644 fresh",
		"conf":        "file 0644 new conf",
		"bin":         "dir 0755",
		"bin/tool":    "file 0755 tool",
		"x":           "file 0644 now a file",
		"cur":         "file 0644 cur",
	})
	if got := readFile(t, outside); got != "operator's file" {
		t.Errorf("replacing a symlink wrote through it: %q", got)
	}
	if n := names(t, parent); !slices.Equal(n, []string{"dest", "outside"}) {
		t.Errorf("outside the destination: %v", n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestExtractRefusesUnsafe(t *testing.T) {
	const (
		asTar = 1 << iota
		asTgz
		asZip
	)
	tests := []struct {
		name    string
		formats int
		entries []tarEntry
		entry   string // the entry the error must name
		reason  string
	}{
		{"absolute path", asTar | asZip, []tarEntry{{name: "/PARENT/abs", body: "x"}}, "/PARENT/abs", "absolute path"},
		{"dotdot", asTar | asTgz | asZip, []tarEntry{{name: "../escape", body: "x"}}, "../escape", "path escapes the destination"},
		{"dotdot deeper", asTar | asZip, []tarEntry{{name: "a/../../escape", body: "x"}}, "a/../../escape", "path escapes the destination"},
		{"good entries then a bad one", asTar | asTgz | asZip, []tarEntry{
			{name: "fine/", typ: tar.TypeDir}, {name: "fine/ok.txt", body: "ok"}, {name: "../escape", body: "x"},
		}, "../escape", "path escapes the destination"},
		{"symlink escape then write through it", asTar | asZip, []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "../"}, {name: "evil/pwned", body: "x"},
		}, "evil", "escapes the destination"},
		{"absolute symlink", asTar | asZip, []tarEntry{{name: "etc", typ: tar.TypeSymlink, link: "/PARENT"}}, "etc", "is absolute"},
		{"symlink inside then write through it", asTar | asZip, []tarEntry{
			{name: "sub/", typ: tar.TypeDir}, {name: "ok", typ: tar.TypeSymlink, link: "sub"}, {name: "ok/file", body: "x"},
		}, "ok/file", "path goes through symlink \"ok\""},
		{"symlink dotdot after a name", asTar | asZip, []tarEntry{
			{name: "x", typ: tar.TypeSymlink, link: "."}, {name: "l", typ: tar.TypeSymlink, link: "x/.."},
		}, "l", "could escape"},
		{"empty symlink target", asTar, []tarEntry{{name: "l", typ: tar.TypeSymlink, link: ""}}, "l", "empty target"},
		{"hard link escape", asTar, []tarEntry{{name: "h", typ: tar.TypeLink, link: "../outside"}}, "h", "escapes the destination"},
		{"absolute hard link", asTar, []tarEntry{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, "h", "escapes the destination"},
		{"hard link to a later entry", asTar, []tarEntry{{name: "h", typ: tar.TypeLink, link: "f"}, {name: "f", body: "x"}}, "h", "not an earlier file"},
		{"hard link through a symlink", asTar, []tarEntry{
			{name: "d/", typ: tar.TypeDir}, {name: "d/f", body: "x"}, {name: "s", typ: tar.TypeSymlink, link: "d"}, {name: "h", typ: tar.TypeLink, link: "s/f"},
		}, "h", "not an earlier file"},
		{"write through a hard link", asTar, []tarEntry{
			{name: "f", body: "x"}, {name: "h", typ: tar.TypeLink, link: "f"}, {name: "h/x", body: "y"},
		}, "h/x", "parent \"h\" is not a directory"},
		{"character device", asTar | asZip, []tarEntry{{name: "null", typ: tar.TypeChar}}, "null", "character device not allowed"},
		{"block device", asTar, []tarEntry{{name: "sda", typ: tar.TypeBlock}}, "sda", "block device not allowed"},
		{"fifo", asTar | asZip, []tarEntry{{name: "pipe", typ: tar.TypeFifo}}, "pipe", "fifo"},
		{"dot as a file", asTar | asZip, []tarEntry{{name: ".", body: "x"}}, ".", "replace the destination directory"},
		{"dot slash as a symlink", asTar, []tarEntry{{name: "./", typ: tar.TypeSymlink, link: "elsewhere"}}, "./", "replace the destination directory"},
		{"empty name", asTar, []tarEntry{{name: "", body: "x"}}, "", "empty name"},
		{"duplicate file", asTar | asZip, []tarEntry{{name: "a", body: "1"}, {name: "a", body: "2"}}, "a", "more than once"},
		{"file over a directory", asTar, []tarEntry{{name: "a/", typ: tar.TypeDir}, {name: "a", body: "2"}}, "a", "more than once"},
		{"working directory name", asTar | asZip, []tarEntry{{name: ".treecast-extract-1/x", body: "x"}}, ".treecast-extract-1/x", "reserved for treecast"},
		{"file under a file", asTar | asZip, []tarEntry{{name: "a", body: "1"}, {name: "a/b", body: "2"}}, "a/b", "parent \"a\" is not a directory"},
	}
	for _, tt := range tests {
		for _, f := range []struct {
			bit   int
			name  string
			build func(testing.TB, []tarEntry) []byte
		}{
			{asTar, "tar", buildTar},
			{asTgz, "tar.gz", func(t testing.TB, e []tarEntry) []byte { return gzipBytes(t, buildTar(t, e)) }},
			{asZip, "zip", buildZip},
		} {
			if tt.formats&f.bit == 0 {
				continue
			}
			t.Run(tt.name+"/"+f.name, func(t *testing.T) {
				parent, dir := newDest(t)
				entries := slices.Clone(tt.entries)
				for i := range entries {
					entries[i].name = strings.ReplaceAll(entries[i].name, "/PARENT", parent)
					entries[i].link = strings.ReplaceAll(entries[i].link, "/PARENT", parent)
				}
				want := strings.ReplaceAll(tt.entry, "/PARENT", parent)
				pkg := spool(t, "pkg", f.build(t, entries))
				err := Apply(context.Background(), Config{Extract: dir}, pkg)
				var ue *UnsafeEntryError
				if !errors.As(err, &ue) {
					t.Fatalf("Apply: %v, want an *UnsafeEntryError", err)
				}
				if ue.Entry != want || !strings.Contains(ue.Reason, tt.reason) {
					t.Errorf("refused %q (%s), want %q (%s)", ue.Entry, ue.Reason, want, tt.reason)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("unsafe archive entry %q", want)) {
					t.Errorf("message %q does not name the entry", err)
				}
				assertUntouched(t, parent, dir)
			})
		}
	}
}

func TestUnsafeEntryErrorText(t *testing.T) {
	err := &UnsafeEntryError{Entry: "../x", Reason: "path escapes the destination"}
	if got, want := err.Error(), `unsafe archive entry "../x": path escapes the destination`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestExtractFailures(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 4096)
	truncated := buildTar(t, []tarEntry{{name: "a", body: "x"}, {name: "big", body: big}})
	truncated = truncated[:len(truncated)-1024-len(big)/2]

	// A stored zip whose second file's bytes are flipped: only extraction,
	// not validation, reads file content, so this fails in the staging step.
	corrupt := buildZip(t, []tarEntry{{name: "first/ok", body: "fine"}, {name: "second", body: "GOODBYTES"}})
	i := bytes.LastIndex(corrupt, []byte("GOODBYTES"))
	corrupt[i] = 'X'

	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"not an archive", []byte("just some text, long enough to look at"), "package pkg.tar.gz: not a supported archive: want .tar, .tar.gz (.tgz) or .zip"},
		{"empty file", nil, "not a supported archive"},
		{"gzip without tar", gzipBytes(t, []byte("plain text")), "gzip-compressed data is not a tar archive"},
		{"truncated tar", truncated, "read tar: unexpected EOF"},
		{"corrupt zip data", corrupt, "checksum error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, dir := newDest(t)
			err := Apply(context.Background(), Config{Extract: dir}, spool(t, "pkg.tar.gz", tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply: %v, want error containing %q", err, tt.want)
			}
			assertUntouched(t, parent, dir)
		})
	}
	t.Run("unknown format is typed", func(t *testing.T) {
		_, dir := newDest(t)
		err := Apply(context.Background(), Config{Extract: dir}, spool(t, "x", []byte("text")))
		if !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("Apply: %v, want ErrUnknownFormat", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		parent, dir := newDest(t)
		err := Apply(ctx, Config{Extract: dir}, spool(t, "a.tar", buildTar(t, goodEntries)))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Apply: %v, want context.Canceled", err)
		}
		assertUntouched(t, parent, dir)
	})
}

func TestSniff(t *testing.T) {
	ustar := make([]byte, 512)
	copy(ustar[257:], "ustar")
	tests := []struct {
		name string
		head []byte
		want archiveFormat
	}{
		{"gzip", []byte{0x1f, 0x8b, 8}, formatTarGz},
		{"zip", []byte("PK\x03\x04rest"), formatZip},
		{"empty zip", []byte("PK\x05\x06"), formatZip},
		{"ustar", ustar, formatTar},
		{"zero block", make([]byte, 512), formatTar},
		{"short zeros", make([]byte, 100), formatUnknown},
		{"text", []byte("hello"), formatUnknown},
		{"nothing", nil, formatUnknown},
		{"spanned zip marker", []byte("PK\x07\x08"), formatUnknown},
	}
	for _, tt := range tests {
		if got := sniffBytes(tt.head); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

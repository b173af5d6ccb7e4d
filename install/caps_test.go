package install

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sparseTar returns a tar of one GNU sparse file of size bytes that are all
// hole: a header block and the end-of-archive blocks, 1.5 KiB whatever size.
func sparseTar(t *testing.T, name string, size int64) []byte {
	t.Helper()
	blk := make([]byte, tarBlock)
	copy(blk[0:], name)
	copy(blk[100:], "0000644\x00")     // mode
	copy(blk[108:], "0000000\x00")     // uid
	copy(blk[116:], "0000000\x00")     // gid
	copy(blk[124:], "00000000000\x00") // bytes stored in the archive: none
	copy(blk[136:], "00000000000\x00") // mtime
	blk[156] = tar.TypeGNUSparse       // the sparse map at 386 is empty: all hole
	copy(blk[257:], "ustar  \x00")     // GNU magic and version
	blk[483] = 0x80                    // real size, base-256
	binary.BigEndian.PutUint64(blk[487:495], uint64(size))
	copy(blk[148:156], "        ")
	sum := 0
	for _, b := range blk {
		sum += int(b)
	}
	copy(blk[148:], fmt.Sprintf("%06o\x00 ", sum))
	return append(blk, make([]byte, 2*tarBlock)...)
}

// gzipBomb returns a tar.gz of one file of size zero bytes (whole MiBs):
// one gzipped MiB of zeros, about 1 KiB, repeated, since gzip members
// concatenate. 1 GiB takes about 1 MiB.
func gzipBomb(t *testing.T, name string, size int64) []byte {
	t.Helper()
	var hdr bytes.Buffer
	if err := tar.NewWriter(&hdr).WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	out := gzipBytes(t, hdr.Bytes())
	mib := gzipBytes(t, make([]byte, 1<<20))
	for range size >> 20 {
		out = append(out, mib...)
	}
	return append(out, gzipBytes(t, make([]byte, 2*tarBlock))...)
}

// zipBomb returns a zip of one deflated file of size zero bytes (whole MiBs),
// its stream one deflated MiB repeated.
func zipBomb(t *testing.T, name string, size int64) []byte {
	t.Helper()
	zeros := make([]byte, 1<<20)
	var mib, end bytes.Buffer
	fw, _ := flate.NewWriter(&mib, flate.BestCompression)
	fw.Write(zeros)
	fw.Flush() // ends on a byte boundary, not final: copies of it follow one another
	fw, _ = flate.NewWriter(&end, flate.BestCompression)
	fw.Close()
	var raw []byte
	crc := uint32(0)
	for range size >> 20 {
		raw = append(raw, mib.Bytes()...)
		crc = crc32.Update(crc, crc32.IEEETable, zeros)
	}
	raw = append(raw, end.Bytes()...)

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Deflate, CRC32: crc,
		CompressedSize64: uint64(len(raw)), UncompressedSize64: uint64(size)})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(raw)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// assertLimit checks that err is a *LimitError for setting with cap max.
func assertLimit(t *testing.T, err error, setting string, max int64) *LimitError {
	t.Helper()
	var le *LimitError
	if !errors.As(err, &le) {
		t.Fatalf("Apply: %v, want a *LimitError", err)
	}
	if le.Setting != setting || (max >= 0 && le.Max != max) {
		t.Errorf("refused by %s at %d, want %s at %d", le.Setting, le.Max, setting, max)
	}
	if !strings.Contains(err.Error(), setting) {
		t.Errorf("message %q does not name the setting %s", err, setting)
	}
	return le
}

func TestExtractRefusesBombs(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name     string
		data     []byte
		maxSize  string
		wantFree bool // refused by the default cap, the free space
	}{
		{"sparse tar of 1 PiB, default cap", sparseTar(t, "hole", 1<<50), "", true},
		{"sparse tar of 1 GiB", sparseTar(t, "hole", gib), "64MiB", false},
		{"tar.gz of 1 GiB", gzipBomb(t, "zeros", gib), "64MiB", false},
		{"zip of 1 GiB", zipBomb(t, "zeros", gib), "64MiB", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.data) > 2<<20 {
				t.Fatalf("the bomb takes %d bytes; it should be small on disk", len(tt.data))
			}
			parent, dir := newDest(t)
			err := Apply(context.Background(), Config{Extract: dir, MaxExtractSize: tt.maxSize}, spool(t, "bomb", tt.data))
			t.Log(err)
			max := int64(64 << 20)
			if tt.wantFree {
				max = -1
			}
			le := assertLimit(t, err, "max_extract_size", max)
			if got := le.FreeOf != ""; got != tt.wantFree {
				t.Errorf("cap from free space: %v, want %v", got, tt.wantFree)
			}
			if tt.wantFree && !IsNoSpace(err) {
				t.Errorf("IsNoSpace(%v) = false for an archive larger than the free space", err)
			}
			assertUntouched(t, parent, dir)
		})
	}
}

func TestExtractSizeCapCountsWhatIsWritten(t *testing.T) {
	files := []tarEntry{{name: "a", body: "12345"}, {name: "d/b", body: "678"}, {name: "c", body: "90"}, {name: "empty"}}
	for _, f := range []struct {
		name  string
		build func(testing.TB, []tarEntry) []byte
	}{{"tar", buildTar}, {"zip", buildZip}} {
		t.Run(f.name+" at the cap", func(t *testing.T) {
			_, dir := newDest(t)
			if err := Apply(context.Background(), Config{Extract: dir, MaxExtractSize: "10"}, spool(t, "p", f.build(t, files))); err != nil {
				t.Fatalf("10 bytes under a 10-byte cap: %v", err)
			}
			if got := readFile(t, filepath.Join(dir, "d/b")) + readFile(t, filepath.Join(dir, "c")); got != "67890" {
				t.Errorf("extracted %q", got)
			}
		})
		t.Run(f.name+" one byte over", func(t *testing.T) {
			parent, dir := newDest(t)
			err := Apply(context.Background(), Config{Extract: dir, MaxExtractSize: "9B"}, spool(t, "p", f.build(t, files)))
			assertLimit(t, err, "max_extract_size", 9)
			if !strings.Contains(err.Error(), `entry "c"`) {
				t.Errorf("message %q does not name the entry that passed the cap", err)
			}
			assertUntouched(t, parent, dir)
		})
	}
	t.Run("sparse file within the cap is written whole", func(t *testing.T) {
		_, dir := newDest(t)
		if err := Apply(context.Background(), Config{Extract: dir, MaxExtractSize: "64KiB"}, spool(t, "p", sparseTar(t, "hole", 64<<10))); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(dir, "hole")); got != string(make([]byte, 64<<10)) {
			t.Errorf("hole holds %d bytes, want 64 KiB of zeros", len(got))
		}
	})
}

// Headers are checked first, but bytes are counted again as they are
// written: content longer than its header said still stops at the cap.
func TestStageStopsAtTheSizeCap(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()
	must(t, root.Mkdir("staging", 0o700))
	walk := func(fn func(*entry) error) error {
		return fn(&entry{name: "liar", kind: kindFile, mode: 0o644, size: 1, data: bytes.NewReader(make([]byte, 4<<20))})
	}
	err = stage(context.Background(), root, "staging", walk, extractCaps{bytes: 1 << 20, entries: 10})
	assertLimit(t, err, "max_extract_size", 1<<20)
	if fi, err := os.Stat(filepath.Join(dir, "staging", "liar")); err != nil || fi.Size() > 1<<20+1 {
		t.Errorf("wrote %v bytes (%v), want at most one past the 1 MiB cap", fi.Size(), err)
	}
}

func TestExtractEntryCap(t *testing.T) {
	var entries []tarEntry
	for i := range 11 {
		entries = append(entries, tarEntry{name: fmt.Sprintf("d/f%02d", i), body: "x"})
	}
	for _, f := range []struct {
		name  string
		build func(testing.TB, []tarEntry) []byte
	}{{"tar", buildTar}, {"tar.gz", func(t testing.TB, e []tarEntry) []byte { return gzipBytes(t, buildTar(t, e)) }}, {"zip", buildZip}} {
		t.Run(f.name, func(t *testing.T) {
			parent, dir := newDest(t)
			err := Apply(context.Background(), Config{Extract: dir, MaxExtractEntries: 10}, spool(t, "p", f.build(t, entries)))
			t.Log(err)
			assertLimit(t, err, "max_extract_entries", 10)
			assertUntouched(t, parent, dir)

			if err := Apply(context.Background(), Config{Extract: dir, MaxExtractEntries: 11}, spool(t, "p", f.build(t, entries))); err != nil {
				t.Fatalf("11 entries under a cap of 11: %v", err)
			}
			if n := names(t, filepath.Join(dir, "d")); len(n) != 11 {
				t.Errorf("extracted %v", n)
			}
		})
	}
}

// TestExtractRemovesKilledLeftovers puts in the destination what an
// extraction killed while moving entries in leaves: its staging directory,
// and its trash holding an entry set aside (conf, no longer in place) and one
// already replaced (app). The next extraction clears both and puts conf back.
func TestExtractRemovesKilledLeftovers(t *testing.T) {
	parent, dir := newDest(t)
	must(t, os.MkdirAll(filepath.Join(dir, ".treecast-extract-12345/app/bin"), 0o700))
	must(t, os.WriteFile(filepath.Join(dir, ".treecast-extract-12345/app/bin/half"), []byte("half written"), 0o600))
	must(t, os.MkdirAll(filepath.Join(dir, ".treecast-old-678/app"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, ".treecast-old-678/app/v1"), []byte("v1"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, ".treecast-old-678/conf"), []byte("old conf"), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "app"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "app/v2"), []byte("v2"), 0o644))
	// Not names treecast gives its working directories: left alone.
	must(t, os.WriteFile(filepath.Join(dir, ".treecast-extract-notes"), []byte("mine"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, ".treecast-old-9"), []byte("a file, not a directory"), 0o644))

	pkg := spool(t, "r.tar", buildTar(t, []tarEntry{{name: "app/v3", body: "v3"}}))
	if err := Apply(context.Background(), Config{Extract: dir}, pkg); err != nil {
		t.Fatal(err)
	}
	diffTree(t, tree(t, dir), map[string]string{
		"keep":                    "file 0644 keep",
		"conf":                    "file 0644 old conf",
		"app":                     "dir 0755",
		"app/v3":                  "file 0644 v3",
		".treecast-extract-notes": "file 0644 mine",
		".treecast-old-9":         "file 0644 a file, not a directory",
	})
	if n := names(t, parent); len(n) != 1 {
		t.Errorf("outside the destination: %v", n)
	}
}

func TestExtractRefusesABusyDestination(t *testing.T) {
	parent, dir := newDest(t)
	held, err := openDestination(dir)
	must(t, err)
	err = Apply(context.Background(), Config{Extract: dir}, spool(t, "p.tar", buildTar(t, goodEntries)))
	held.close()
	if err == nil || !strings.Contains(err.Error(), "another treecast is extracting into "+dir) {
		t.Fatalf("Apply: %v, want it to say another extraction holds %s", err, dir)
	}
	assertUntouched(t, parent, dir)
	if err := Apply(context.Background(), Config{Extract: dir}, spool(t, "p.tar", buildTar(t, goodEntries))); err != nil {
		t.Errorf("once released: %v", err)
	}
}

// The count a zip's end record gives is read before any entry is: a plain
// end record, one behind a comment, and a zip64 one (over 65,535 entries).
func TestZipCount(t *testing.T) {
	build := func(n int, comment string) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for i := range n {
			if _, err := zw.CreateRaw(&zip.FileHeader{Name: strconv.Itoa(i)}); err != nil {
				t.Fatal(err)
			}
		}
		zw.SetComment(comment)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		zip  []byte
		want uint64
		ok   bool
	}{
		{"empty", build(0, ""), 0, true},
		{"three", build(3, ""), 3, true},
		{"three and a comment", build(3, strings.Repeat("PK", 30000)), 3, true},
		{"a comment that holds an end record", build(3, "PK\x05\x06"+strings.Repeat("\x09", 18)), 3, true},
		{"zip64", build(70000, ""), 70000, true},
		{"not a zip", []byte("no end record here"), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, ok := zipCount(bytes.NewReader(tc.zip), int64(len(tc.zip)))
			if n != tc.want || ok != tc.ok {
				t.Errorf("zipCount = %d, %v; want %d, %v", n, ok, tc.want, tc.ok)
			}
		})
	}
}

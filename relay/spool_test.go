package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// spoolFixture is a package of 3 full chunks and a 123-byte last one, a
// block each.
func spoolFixture() ([]byte, *Manifest) {
	data := testData(3*MinChunkSize + 123)
	return data, testManifest(data, MinChunkSize)
}

func blockOf(data []byte, m *Manifest, g int) []byte {
	off := g * m.BlockSize
	return data[off : off+m.BlockLen(g)]
}

func mustOpenSpool(t *testing.T, dir string, m *Manifest) *spool {
	t.Helper()
	s, err := openSpool(dir, m)
	if err != nil {
		t.Fatalf("openSpool: %v", err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

func mustPut(t *testing.T, s *spool, data []byte, blocks ...int) {
	t.Helper()
	for _, g := range blocks {
		if err := s.put(g, blockOf(data, s.m, g)); err != nil {
			t.Fatalf("put block %d: %v", g, err)
		}
	}
}

// held returns how many blocks the spool holds and a copy of its bitmap.
func (s *spool) heldBlocks() (int, bitmap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, bytes.Clone(s.have)
}

// wait blocks until block g can be relayed, as a feeder does.
func (s *spool) wait(ctx context.Context, g int, idle time.Duration) error {
	return waitUntil(ctx, idle, func() (bool, <-chan struct{}) { return s.ready(g) })
}

// heldChunks lists the blocks the spool says it holds.
func heldChunks(s *spool) []int {
	_, have := s.heldBlocks()
	var out []int
	for g := range s.m.Blocks() {
		if have.has(g) {
			out = append(out, g)
		}
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSpoolStoresChunksInAnyOrder(t *testing.T) {
	data, m := spoolFixture()
	dir := t.TempDir()
	s := mustOpenSpool(t, dir, m)
	if n, _ := s.heldBlocks(); n != 0 || s.complete() {
		t.Fatalf("a new spool holds %d chunks, complete=%v", n, s.complete())
	}
	order := []int{3, 0, 2, 1}
	for k, i := range order {
		mustPut(t, s, data, i)
		n, have := s.heldBlocks()
		if n != k+1 || !have.has(i) || !s.has(i) {
			t.Fatalf("after putting chunk %d: held %d, has=%v", i, n, have.has(i))
		}
		if s.complete() != (k == len(order)-1) {
			t.Fatalf("after %d of %d chunks complete=%v", k+1, len(order), s.complete())
		}
	}
	mustPut(t, s, data, 2) // a chunk that arrives twice counts once
	if n, _ := s.heldBlocks(); n != len(m.Chunks) {
		t.Errorf("held %d after a duplicate, want %d", n, len(m.Chunks))
	}
	buf := make([]byte, m.ChunkSize)
	for i := range m.Chunks {
		got, err := s.readBlock(i, buf)
		if err != nil {
			t.Fatalf("readChunk %d: %v", i, err)
		}
		if !bytes.Equal(got, blockOf(data, m, i)) {
			t.Errorf("chunk %d reads back different bytes", i)
		}
	}
	if onDisk := mustRead(t, s.path); !bytes.Equal(onDisk, data) {
		t.Errorf("spool file (%d bytes) is not the package (%d bytes)", len(onDisk), len(data))
	}
	if want := filepath.Join(dir, "spool", m.SumHex()+".part"); s.path != want {
		t.Errorf("spool at %s, want %s (keyed by the package hash, so a new session resumes it)", s.path, want)
	}
}

func TestSpoolHeldBitmapIsACopy(t *testing.T) {
	data, m := spoolFixture()
	s := mustOpenSpool(t, t.TempDir(), m)
	mustPut(t, s, data, 1)
	_, have := s.heldBlocks()
	have[0] = 0xff // a caller scribbling on its copy (feed, or a want being built)
	if got := heldChunks(s); !equalInts(got, []int{1}) {
		t.Errorf("spool holds %v after a caller changed its copy of the bitmap, want [1]", got)
	}
}

func TestSpoolPutRejectsWrongLength(t *testing.T) {
	data, m := spoolFixture()
	last := len(m.Chunks) - 1
	tests := []struct {
		name  string
		i     int
		chunk []byte
	}{
		{"empty", 0, nil},
		{"one byte short", 0, data[:m.ChunkSize-1]},
		{"one byte long", 0, data[:m.ChunkSize+1]},
		{"last chunk padded to full size", last, data[:m.ChunkSize]},
		{"last chunk one byte short", last, data[:m.ChunkLen(last)-1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpenSpool(t, t.TempDir(), m)
			err := s.put(tt.i, tt.chunk)
			if err == nil {
				t.Fatalf("put of %d bytes as chunk %d accepted", len(tt.chunk), tt.i)
			}
			if !strings.Contains(err.Error(), "manifest says") {
				t.Errorf("error %q does not say what the manifest expects", err)
			}
			if n, _ := s.heldBlocks(); n != 0 || s.has(tt.i) {
				t.Errorf("a rejected chunk is held")
			}
		})
	}
}

func TestSpoolResumesAfterSync(t *testing.T) {
	data, m := spoolFixture()
	dir := t.TempDir()
	s, err := openSpool(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, data, 0, 2)
	if err := s.sync(); err != nil {
		t.Fatalf("sync: %v", err)
	}
	s.close()

	r := mustOpenSpool(t, dir, m)
	if got := heldChunks(r); !equalInts(got, []int{0, 2}) {
		t.Fatalf("reopened spool holds %v, want [0 2]", got)
	}
	if n, _ := r.heldBlocks(); n != 2 || r.complete() {
		t.Errorf("reopened spool: held %d, complete=%v", n, r.complete())
	}
	buf := make([]byte, m.ChunkSize)
	for _, i := range []int{0, 2} {
		if got, err := r.readBlock(i, buf); err != nil || !bytes.Equal(got, blockOf(data, m, i)) {
			t.Errorf("resumed chunk %d does not read back: %v", i, err)
		}
	}
	mustPut(t, r, data, 1, 3)
	if !r.complete() {
		t.Fatalf("not complete after the missing chunks arrived")
	}
	if !bytes.Equal(mustRead(t, r.path), data) {
		t.Errorf("the resumed spool does not hold the package")
	}
}

func TestSpoolStateOnlyAfterSync(t *testing.T) {
	data, m := spoolFixture()
	dir := t.TempDir()
	s, err := openSpool(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, data, 0, 1, 2, 3)
	if _, err := os.Stat(s.statePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file exists before sync (%v): it may claim chunks not yet on disk", err)
	}
	s.close() // a crash: no sync

	r := mustOpenSpool(t, dir, m)
	if n, _ := r.heldBlocks(); n != 0 {
		t.Errorf("without a sync the reopened spool claims %d chunks", n)
	}
}

func TestSpoolIgnoresForeignState(t *testing.T) {
	data, m := spoolFixture()
	otherData := bytes.Clone(data) // same size and chunking, one bit apart
	otherData[0] ^= 1
	other := testManifest(otherData, MinChunkSize)

	// savedState returns the state file of a spool of om holding every chunk.
	savedState := func(t *testing.T, om *Manifest, od []byte) []byte {
		t.Helper()
		dir := t.TempDir()
		s := mustOpenSpool(t, dir, om)
		for i := range om.Chunks {
			mustPut(t, s, od, i)
		}
		if err := s.sync(); err != nil {
			t.Fatal(err)
		}
		return mustRead(t, s.statePath)
	}
	full := savedState(t, m, data)
	tests := []struct {
		name  string
		state []byte
		m     *Manifest // the manifest the spool is reopened with
	}{
		{"another package's state", savedState(t, other, otherData), m},
		{"same package, other chunk size", full, testManifest(data, 2*MinChunkSize)},
		{"state cut short", full[:len(full)-1], m},
		{"state with a byte too many", append(bytes.Clone(full), 0xff), m},
		{"empty state", nil, m},
		{"garbage state", testData(len(full)), m},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, statePath := spoolPaths(dir, tt.m)
			if err := os.MkdirAll(filepath.Dir(statePath), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(statePath, tt.state, 0o600); err != nil {
				t.Fatal(err)
			}
			s := mustOpenSpool(t, dir, tt.m)
			if n, _ := s.heldBlocks(); n != 0 || s.complete() {
				t.Errorf("spool trusts a state file that is not its own: holds %d chunks", n)
			}
		})
	}
}

// The state file is a claim about the data file. When the data file is
// gone (cleaned up by hand, a tmp reaper, a new disk), the claim is false:
// the receiver would accept with chunks it does not have, never fetch
// them, and fail the whole-file check at the end.
func TestSpoolForgetsStateWhenDataIsGone(t *testing.T) {
	data, m := spoolFixture()
	dir := t.TempDir()
	s, err := openSpool(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, data, 0, 1, 2, 3)
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	s.close()
	if err := os.Remove(s.path); err != nil {
		t.Fatal(err)
	}

	r := mustOpenSpool(t, dir, m)
	buf := make([]byte, m.ChunkSize)
	for _, i := range heldChunks(r) {
		got, err := r.readBlock(i, buf)
		if err != nil || !bytes.Equal(got, blockOf(data, m, i)) {
			t.Errorf("spool claims chunk %d, but its data file was deleted (read: %v)", i, err)
		}
	}
}

// A sync that fails (disk full, I/O error) must not lose the claim for
// good: the next sync, once the disk recovers, records the chunks.
func TestSpoolSyncRetriesAfterFailure(t *testing.T) {
	data, m := spoolFixture()
	dir := t.TempDir()
	s, err := openSpool(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, data, 0, 1)
	blocker := s.statePath + ".tmp" // a directory where sync writes its temp file
	if err := os.Mkdir(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.sync(); err == nil {
		t.Fatalf("sync succeeded with its temp file blocked")
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if err := s.sync(); err != nil {
		t.Fatalf("sync after the disk recovered: %v", err)
	}
	s.close()

	r := mustOpenSpool(t, dir, m)
	if got := heldChunks(r); !equalInts(got, []int{0, 1}) {
		t.Errorf("after a failed then a successful sync the reopened spool holds %v, want [0 1]", got)
	}
}

func TestSpoolOfEmptyPackageIsComplete(t *testing.T) {
	m := testManifest(nil, MinChunkSize)
	s := mustOpenSpool(t, t.TempDir(), m)
	if !s.complete() {
		t.Errorf("spool of a 0-byte package is not complete")
	}
	if n, _ := s.heldBlocks(); n != 0 {
		t.Errorf("held %d chunks of 0", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // waitComplete must not need to wait at all
	if err := s.waitComplete(ctx); err != nil {
		t.Errorf("waitComplete: %v", err)
	}
	if st, err := os.Stat(s.path); err != nil || st.Size() != 0 {
		t.Errorf("spool file: %v, %v; want an empty file", st, err)
	}
	if err := s.sync(); err != nil {
		t.Errorf("sync: %v", err)
	}
}

func TestSpoolWait(t *testing.T) {
	t.Run("held chunk", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			data, m := spoolFixture()
			s := mustOpenSpool(t, t.TempDir(), m)
			mustPut(t, s, data, 2)
			start := time.Now()
			if err := s.wait(context.Background(), 2, time.Hour); err != nil {
				t.Fatalf("wait for a held chunk: %v", err)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("wait for a held chunk took %v", d)
			}
		})
	})
	t.Run("idle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, m := spoolFixture()
			s := mustOpenSpool(t, t.TempDir(), m)
			start := time.Now()
			if err := s.wait(context.Background(), 1, 500*time.Millisecond); !errors.Is(err, errIdle) {
				t.Fatalf("wait for a missing chunk: %v, want errIdle", err)
			}
			if d := time.Since(start); d != 500*time.Millisecond {
				t.Errorf("errIdle after %v, want after the idle time 500ms", d)
			}
		})
	})
	t.Run("cancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, m := spoolFixture()
			s := mustOpenSpool(t, t.TempDir(), m)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.wait(ctx, 1, time.Hour) }()
			synctest.Wait()
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("wait after cancel: %v, want context.Canceled", err)
			}
		})
	})
	t.Run("woken by put", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			data, m := spoolFixture()
			s := mustOpenSpool(t, t.TempDir(), m)
			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- s.wait(context.Background(), 3, time.Hour) }()
			synctest.Wait() // the waiter is blocked on the spool

			mustPut(t, s, data, 0) // another chunk: the waiter looks and keeps waiting
			synctest.Wait()
			select {
			case err := <-done:
				t.Fatalf("wait for chunk 3 returned %v when chunk 0 arrived", err)
			default:
			}

			mustPut(t, s, data, 3)
			if err := <-done; err != nil {
				t.Fatalf("wait for chunk 3 after it arrived: %v", err)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("the waiter woke after %v, not when the chunk arrived", d)
			}
		})
	})
}

func TestSpoolWaitComplete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		data, m := spoolFixture()
		s := mustOpenSpool(t, t.TempDir(), m)
		done := make(chan error, 1)
		go func() { done <- s.waitComplete(context.Background()) }()
		for i := range len(m.Chunks) - 1 {
			mustPut(t, s, data, i)
			synctest.Wait()
			select {
			case err := <-done:
				t.Fatalf("waitComplete returned %v with %d of %d chunks", err, i+1, len(m.Chunks))
			default:
			}
		}
		mustPut(t, s, data, len(m.Chunks)-1)
		if err := <-done; err != nil {
			t.Fatalf("waitComplete: %v", err)
		}
	})
}

// seedFile writes data to a file, as the seed's package, and opens it.
func seedFile(t *testing.T, data []byte) (path string, f *os.File) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "app.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return path, f
}

func TestFileSourceServesTheFile(t *testing.T) {
	data, m := spoolFixture()
	path, f := seedFile(t, data)
	src := newFileSource(f, m)
	buf := make([]byte, m.BlockSize)
	for i := range m.Chunks {
		if ok, _ := src.ready(i); !ok {
			t.Fatalf("block %d of a whole file is not ready", i)
		}
		leaves, err := src.leaves(i)
		if err != nil || sha256.Sum256(leaves) != m.Chunks[i] {
			t.Fatalf("block hashes of chunk %d from the seed's file do not match the manifest: %v", i, err)
		}
		got, err := src.readBlock(i, buf)
		if err != nil || sha256.Sum256(got) != [32]byte(leaves) {
			t.Errorf("block %d from the seed's file does not match its hash: %v", i, err)
		}
	}
	changed := bytes.Clone(data)
	changed[1] ^= 1
	if err := os.WriteFile(path, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	src = newFileSource(f, m)
	if _, err := src.leaves(0); !errors.Is(err, ErrSourceChanged) {
		t.Errorf("block hashes of a file changed on disk: %v, want ErrSourceChanged", err)
	}
}

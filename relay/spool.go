package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// bitmap is a set of chunk indexes, bit i LSB-first in byte i/8.
type bitmap []byte

func newBitmap(n int) bitmap    { return make(bitmap, (n+7)/8) }
func (b bitmap) has(i int) bool { return i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0 }
func (b bitmap) set(i int)      { b[i/8] |= 1 << (i % 8) }

// errIdle is returned by a wait that timed out with the chunk still missing.
var errIdle = errors.New("chunk not yet available")

// source is where a parent's feeders read chunks from.
type source interface {
	// wait blocks until chunk i is held, ctx ends, or idle passes (errIdle).
	wait(ctx context.Context, i int, idle time.Duration) error
	// readChunk reads chunk i into buf, which has room for a whole chunk.
	readChunk(i int, buf []byte) ([]byte, error)
}

// fileSource serves a complete, already hashed file: the seed's.
type fileSource struct {
	f *os.File
	m *Manifest
}

func (s *fileSource) wait(context.Context, int, time.Duration) error { return nil }

func (s *fileSource) readChunk(i int, buf []byte) ([]byte, error) {
	buf = buf[:s.m.ChunkLen(i)]
	if _, err := s.f.ReadAt(buf, int64(i)*int64(s.m.ChunkSize)); err != nil {
		return nil, fmt.Errorf("read chunk %d of %s: %w", i, s.f.Name(), err)
	}
	return buf, nil
}

// spool holds a session's verified chunks on disk while they arrive.
// Its state file records which chunks are held, so an interrupted
// session resumes instead of starting over. Spools are keyed by the
// package's whole SHA-256, so a new seed run of the same file resumes too.
type spool struct {
	m         *Manifest
	f         *os.File
	path      string // the data, size of the package once complete
	statePath string // which chunks are held

	hmu    sync.Mutex // guards whole and hashed; taken before mu
	whole  hash.Hash  // SHA-256 of chunks [0, hashed), in order
	hashed int

	syncMu sync.Mutex // one sync at a time: they share the state's temp file

	mu      sync.Mutex
	have    bitmap
	count   int
	changed chan struct{} // closed and replaced whenever a chunk is added
	dirty   bool          // chunks added since the last sync
}

func spoolPaths(dir string, m *Manifest) (data, state string) {
	base := filepath.Join(dir, "spool", m.SumHex())
	return base + ".part", base + ".have"
}

// openSpool opens or creates the spool for m under dir and loads the
// chunks an earlier session left behind.
func openSpool(dir string, m *Manifest) (*spool, error) {
	data, state := spoolPaths(dir, m)
	if err := os.MkdirAll(filepath.Dir(data), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(data, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	s := &spool{m: m, f: f, path: data, statePath: state, whole: sha256.New(), have: newBitmap(len(m.Chunks)), changed: make(chan struct{})}
	// Chunks are only claimed while the data file is whole: a state file
	// beside a missing or resized data file is stale.
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if prev, err := os.ReadFile(state); err == nil && st.Size() == m.Size {
		if have, ok := s.parseState(prev); ok {
			s.have = have
			for i := range m.Chunks {
				if have.has(i) {
					s.count++
				}
			}
		}
	}
	need := m.Size - min(int64(s.count)*int64(m.ChunkSize), m.Size)
	if free, err := freeBytes(filepath.Dir(data)); err == nil && need > free {
		if s.count == 0 {
			s.remove()
		} else {
			f.Close()
		}
		return nil, &noSpaceError{name: m.Name, need: need, free: free, dir: dir}
	}
	if err := f.Truncate(m.Size); err != nil {
		f.Close()
		return nil, fmt.Errorf("size spool %s: %w", data, err)
	}
	return s, nil
}

type noSpaceError struct {
	name       string
	need, free int64
	dir        string
}

func (e *noSpaceError) Error() string {
	return fmt.Sprintf("%s needs %s of spool space in %s, only %s free", e.name, HumanBytes(e.need), e.dir, HumanBytes(e.free))
}

func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// The state file: chunk size (4), chunk count (4), package SHA-256 (32), bitmap.
func (s *spool) stateBytes() []byte {
	var e enc
	e.u32(uint32(s.m.ChunkSize))
	e.u32(uint32(len(s.m.Chunks)))
	e.hash(s.m.SHA256)
	e.raw(s.have)
	return e.b
}

func (s *spool) parseState(p []byte) (bitmap, bool) {
	if len(p) != 40+len(s.have) ||
		binary.BigEndian.Uint32(p) != uint32(s.m.ChunkSize) ||
		binary.BigEndian.Uint32(p[4:]) != uint32(len(s.m.Chunks)) ||
		!bytes.Equal(p[8:40], s.m.SHA256[:]) {
		return nil, false
	}
	return bitmap(bytes.Clone(p[40:])), true
}

func (s *spool) has(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.has(i)
}

// held returns how many chunks are held and a copy of the bitmap.
func (s *spool) held() (int, bitmap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, bytes.Clone(s.have)
}

func (s *spool) complete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count == len(s.m.Chunks)
}

// put stores chunk i, which the caller has verified against the manifest.
func (s *spool) put(i int, data []byte) error {
	if len(data) != s.m.ChunkLen(i) {
		return fmt.Errorf("chunk %d is %d bytes, manifest says %d", i, len(data), s.m.ChunkLen(i))
	}
	if _, err := s.f.WriteAt(data, int64(i)*int64(s.m.ChunkSize)); err != nil {
		return fmt.Errorf("write chunk %d to spool %s: %w", i, s.path, err)
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if i == s.hashed {
		s.whole.Write(data) // in order, as chunks mostly arrive: no re-read
		s.hashed++
	}
	s.mu.Lock()
	if !s.have.has(i) {
		s.have.set(i)
		s.count++
		s.dirty = true
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.mu.Unlock()
	return nil
}

// sum is the SHA-256 of the whole spool once complete. Chunks that came
// out of order, or from an earlier session, are read back to be hashed.
func (s *spool) sum() ([32]byte, error) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	var buf []byte
	for s.hashed < len(s.m.Chunks) {
		if !s.has(s.hashed) {
			return [32]byte{}, fmt.Errorf("spool %s lacks chunk %d", s.path, s.hashed)
		}
		if buf == nil {
			buf = make([]byte, s.m.ChunkSize)
		}
		data, err := s.readChunk(s.hashed, buf)
		if err != nil {
			return [32]byte{}, err
		}
		s.whole.Write(data)
		s.hashed++
	}
	return [32]byte(s.whole.Sum(nil)), nil
}

func (s *spool) wait(ctx context.Context, i int, idle time.Duration) error {
	return waitUntil(ctx, idle, func() (bool, <-chan struct{}) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.have.has(i), s.changed
	})
}

// waitUntil blocks until ready reports true, ctx ends, or idle passes
// (errIdle; 0 waits without limit). ready also returns the channel that
// is closed at the next change worth looking again for.
func waitUntil(ctx context.Context, idle time.Duration, ready func() (bool, <-chan struct{})) error {
	var timeout <-chan time.Time
	if idle > 0 {
		timer := time.NewTimer(idle)
		defer timer.Stop()
		timeout = timer.C
	}
	for {
		ok, changed := ready()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-timeout:
			return errIdle
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *spool) readChunk(i int, buf []byte) ([]byte, error) {
	buf = buf[:s.m.ChunkLen(i)]
	if _, err := s.f.ReadAt(buf, int64(i)*int64(s.m.ChunkSize)); err != nil {
		return nil, fmt.Errorf("read chunk %d from spool %s: %w", i, s.path, err)
	}
	return buf, nil
}

// sync makes the held chunks durable, then records them, so the state
// file never claims a chunk the disk does not have.
func (s *spool) sync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	s.dirty = false
	state := s.stateBytes()
	s.mu.Unlock()
	err := s.f.Sync()
	if err != nil {
		err = fmt.Errorf("sync spool %s: %w", s.path, err)
	} else {
		tmp := s.statePath + ".tmp"
		if err = os.WriteFile(tmp, state, 0o600); err == nil {
			err = os.Rename(tmp, s.statePath)
		}
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true // try again next time
		s.mu.Unlock()
	}
	return err
}

func (s *spool) close() error { return s.f.Close() }

// remove deletes the spool once its session is over.
func (s *spool) remove() {
	s.f.Close()
	os.Remove(s.path)
	os.Remove(s.statePath)
}

// waitComplete blocks until every chunk is held or ctx ends.
func (s *spool) waitComplete(ctx context.Context) error {
	return waitUntil(ctx, 0, func() (bool, <-chan struct{}) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.count == len(s.m.Chunks), s.changed
	})
}

// reset forgets every chunk, for a spool found corrupt on disk.
func (s *spool) reset() {
	s.hmu.Lock()
	s.whole.Reset()
	s.hashed = 0
	s.hmu.Unlock()
	s.mu.Lock()
	s.have = newBitmap(len(s.m.Chunks))
	s.count = 0
	s.dirty = false
	s.mu.Unlock()
	os.Remove(s.statePath)
}

// removeStaleSpools deletes what interrupted sessions left in dir's spool
// once a session succeeded, so aborted sessions cannot pile up on disk.
func removeStaleSpools(dir string, log *slog.Logger) {
	entries, err := os.ReadDir(filepath.Join(dir, "spool"))
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, "spool", e.Name())
		if err := os.Remove(p); err != nil {
			log.Warn("could not remove stale spool", "path", p, "err", err)
		}
	}
}

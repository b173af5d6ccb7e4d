package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// bitmap is a set of block indexes, bit i LSB-first in byte i/8.
type bitmap []byte

func newBitmap(n int) bitmap    { return make(bitmap, (n+7)/8) }
func (b bitmap) has(i int) bool { return i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0 }
func (b bitmap) set(i int)      { b[i/8] |= 1 << (i % 8) }

// errIdle is returned by a wait that timed out with the block still missing.
var errIdle = errors.New("block not yet available")

// source is where a parent's feeders read blocks and block hashes from.
type source interface {
	// ready reports whether block g and its chunk's block hashes can be
	// sent now, and a channel closed at the next change worth looking at.
	ready(g int) (bool, <-chan struct{})
	// hashesReady reports whether chunk i's block hashes can be sent now,
	// and a channel closed at the next change worth looking at.
	hashesReady(i int) (bool, <-chan struct{})
	// readBlock reads block g into buf, which has room for a whole block.
	readBlock(g int, buf []byte) ([]byte, error)
	// leaves returns the verified block hashes of chunk i.
	leaves(i int) ([]byte, error)
}

// readBlockAt reads block g of m from f into buf.
func readBlockAt(f *os.File, m *Manifest, g int, buf []byte) ([]byte, error) {
	buf = buf[:m.BlockLen(g)]
	if _, err := f.ReadAt(buf, int64(g)*int64(m.BlockSize)); err != nil {
		return nil, fmt.Errorf("read block %d of %s: %w", g, f.Name(), err)
	}
	return buf, nil
}

// ErrSourceChanged means the seed's file no longer matches the manifest it
// was hashed into.
var ErrSourceChanged = errors.New("the file changed after it was hashed")

// rehash computes chunk i's block hashes from f and checks them against
// the manifest, which catches a file changed on disk since.
func rehash(f *os.File, m *Manifest, i int) ([]byte, error) {
	first, n := m.chunkBlocks(i)
	buf := make([]byte, m.BlockSize)
	leaves := make([]byte, 0, 32*n)
	for g := first; g < first+n; g++ {
		data, err := readBlockAt(f, m, g, buf)
		if err != nil {
			return nil, err
		}
		leaves = hashBlocks(leaves, data, m.BlockSize)
	}
	if sha256.Sum256(leaves) != m.Chunks[i] {
		return nil, fmt.Errorf("chunk %d of %s: %w", i, f.Name(), ErrSourceChanged)
	}
	return leaves, nil
}

// leafCache keeps the block hashes of recent chunks within a byte budget,
// dropping the oldest first; what it dropped can be hashed again.
type leafCache struct {
	budget, used int
	by           map[int][]byte
	order        []int // oldest first
}

// leafBudget bounds the block hashes a node keeps in memory: 4 MiB holds
// 2,048 chunks' worth at the default sizes, far more than are in flight.
const leafBudget = 4 << 20

func newLeafCache(budget int) *leafCache { return &leafCache{budget: budget, by: map[int][]byte{}} }

func (c *leafCache) get(i int) ([]byte, bool) {
	l, ok := c.by[i]
	return l, ok
}

func (c *leafCache) put(i int, leaves []byte) {
	if _, ok := c.by[i]; ok {
		return
	}
	c.by[i] = leaves
	c.order = append(c.order, i)
	c.used += len(leaves)
	for c.used > c.budget && len(c.order) > 1 {
		old := c.order[0]
		c.order = c.order[1:]
		c.used -= len(c.by[old])
		delete(c.by, old)
	}
}

// fileSource serves a complete, already hashed file: the seed's.
type fileSource struct {
	f     *os.File
	m     *Manifest
	mu    sync.Mutex
	cache *leafCache
	wire  *wireCache // blocks compressed for one child, for the next
	first firstReads
}

// firstReads keeps which blocks were read to be sent, and when the last
// block not yet read was: from then on the seed has sent a whole copy.
type firstReads struct {
	mu   sync.Mutex
	read []uint64  // bitmap by block
	left int64     // bytes of non-empty blocks not read yet
	at   time.Time // when left reached 0
}

func (o *firstReads) mark(g, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.read[g/64]&(1<<(g%64)) != 0 {
		return
	}
	o.read[g/64] |= 1 << (g % 64)
	if o.left -= int64(n); o.left <= 0 && o.at.IsZero() {
		o.at = time.Now()
	}
}

// copyRead reports when every block (but empty ones, never sent) had been
// read to be sent, if they have.
func (s *fileSource) copyRead() (time.Time, bool) {
	s.first.mu.Lock()
	defer s.first.mu.Unlock()
	return s.first.at, !s.first.at.IsZero()
}

func (s *fileSource) wires() *wireCache { return s.wire }

func newFileSource(f *os.File, m *Manifest) *fileSource {
	s := &fileSource{f: f, m: m, cache: newLeafCache(leafBudget), wire: newWireCache()}
	s.first.read = make([]uint64, (m.Blocks()+63)/64)
	if s.first.left = m.Size - m.Empty(); s.first.left <= 0 {
		s.first.at = time.Now()
	}
	return s
}

func (s *fileSource) ready(int) (bool, <-chan struct{}) { return true, nil }

func (s *fileSource) hashesReady(int) (bool, <-chan struct{}) { return true, nil }

func (s *fileSource) readBlock(g int, buf []byte) ([]byte, error) {
	data, err := readBlockAt(s.f, s.m, g, buf)
	if err == nil {
		s.first.mark(g, len(data))
	}
	return data, err
}

func (s *fileSource) leaves(i int) ([]byte, error) {
	if b := s.m.built; b != nil {
		st, err := s.f.Stat()
		if err != nil {
			return nil, err
		}
		if st.Size() != b.size || !st.ModTime().Equal(b.modTime) {
			return nil, fmt.Errorf("%s: %w", s.f.Name(), ErrSourceChanged)
		}
		if b.leaves != nil {
			first, n := s.m.chunkBlocks(i)
			return b.leaves[32*first : 32*(first+n)], nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.cache.get(i); ok {
		return l, nil
	}
	l, err := rehash(s.f, s.m, i)
	if err != nil {
		return nil, err
	}
	s.cache.put(i, l)
	return l, nil
}

// spool holds a session's verified blocks on disk while they arrive.
// Its state file records which blocks are held, so an interrupted
// session resumes instead of starting over. Spools are keyed by the
// package's whole SHA-256, so a new seed run of the same file resumes too.
type spool struct {
	m         *Manifest
	f         *os.File
	path      string // the data, size of the package once complete
	statePath string // which blocks are held

	syncMu sync.Mutex // one sync at a time: they share the state's temp file

	mu        sync.Mutex
	have      bitmap
	count     int      // blocks held
	held      int64    // bytes held
	byParity  [2]int64 // bytes held of even and odd blocks: the two stripes
	byParityN [2]int   // blocks held of each
	zero      int64    // bytes held because they are empty, never received
	chunks    []uint16
	cache     *leafCache    // verified block hashes of recent chunks
	wire      *wireCache    // recent blocks that came compressed, to forward as they came (see oneFrame)
	target    bool          // path is a write target: the package's place, not ours to remove
	zeroFill  zeroer        // zeroes an empty block before it counts as held; nil: it reads zeros already
	changed   chan struct{} // closed and replaced whenever a block or block hashes arrive
	dirty     bool          // blocks added since the last sync
}

// spoolPaths names m's spool files; isSpoolName knows these names.
func spoolPaths(dir string, m *Manifest) (data, state string) {
	base := filepath.Join(dir, spoolDirName, m.SumHex())
	return base + ".part", base + ".have"
}

// openSpool opens or creates the spool for m under dir and loads the
// blocks an earlier session left behind. A spool folder, data file or state
// file that is a symlink is refused.
func openSpool(dir string, m *Manifest) (*spool, error) {
	data, state := spoolPaths(dir, m)
	if err := checkStatePart(dir, spoolDirName); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(data), 0o700); err != nil {
		return nil, err
	}
	f, err := openNoFollow(data, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	s := &spool{m: m, f: f, path: data, statePath: state, have: newBitmap(m.Blocks()), chunks: make([]uint16, len(m.Chunks)),
		cache: newLeafCache(leafBudget), wire: newWireCache(), changed: make(chan struct{})}
	// Blocks are only claimed while the data file is whole: a state file
	// beside a missing or resized data file is stale. Those it claims are
	// read back and checked against the manifest, as a write target's
	// are: a disk that corrupted them, or a hand that changed them, has
	// them fetched again, not applied.
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if prev, err := readNoFollow(state); err == nil && st.Size() == m.Size {
		if have, partial, ok := s.parseState(prev); ok {
			s.verifyHeld(have, partial)
		}
	}
	if err := s.markEmptyChunks(); err != nil {
		f.Close()
		return nil, err
	}
	need := m.Size - s.held
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

// The state file: block size (4), block count (4), package SHA-256 (32), bitmap.
// stateBytes is what the state file holds: block size, block count and
// package hash, the bitmap of held blocks, and the block hashes of each
// chunk held in part, so a resume can check those blocks one by one.
func (s *spool) stateBytes() []byte {
	var e enc
	e.u32(uint32(s.m.BlockSize))
	e.u32(uint32(s.m.Blocks()))
	e.hash(s.m.SHA256)
	e.raw(s.have)
	for i, held := range s.chunks {
		if _, n := s.m.chunkBlocks(i); held == 0 || int(held) == n {
			continue
		}
		if l, ok := s.cache.get(i); ok {
			e.u32(uint32(i))
			e.raw(l)
		}
	}
	return e.b
}

// parseState reads a state file: the held blocks, and the rest (block
// hashes of partly held chunks).
func (s *spool) parseState(p []byte) (bitmap, []byte, bool) {
	if len(p) < 40+len(s.have) ||
		binary.BigEndian.Uint32(p) != uint32(s.m.BlockSize) ||
		binary.BigEndian.Uint32(p[4:]) != uint32(s.m.Blocks()) ||
		!bytes.Equal(p[8:40], s.m.SHA256[:]) {
		return nil, nil, false
	}
	return bitmap(p[40 : 40+len(s.have)]), p[40+len(s.have):], true
}

// mark records block g as held; the caller holds mu or owns s alone.
func (s *spool) mark(g int) bool {
	if s.have.has(g) {
		return false
	}
	s.have.set(g)
	s.count++
	s.held += int64(s.m.BlockLen(g))
	s.byParity[g%2] += int64(s.m.BlockLen(g))
	s.byParityN[g%2]++
	s.chunks[g/s.m.blocksPerChunk()]++
	return true
}

func (s *spool) wires() *wireCache { return s.wire }

func (s *spool) has(g int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.has(g)
}

// heldBytes is how many bytes are verified and held.
func (s *spool) heldBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// stripeHeld is how many bytes of each of stripes stripes are held.
func (s *spool) stripeHeld(stripes int) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch stripes {
	case 1:
		return []uint64{uint64(s.held)}
	case 2:
		return []uint64{uint64(s.byParity[0]), uint64(s.byParity[1])}
	}
	return nil
}

// bitmapCopy returns a copy of the held blocks.
func (s *spool) bitmapCopy() bitmap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.have)
}

func (s *spool) complete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count == s.m.Blocks()
}

func (s *spool) chunkComplete(i int) bool {
	_, n := s.m.chunkBlocks(i)
	return int(s.chunks[i]) == n
}

// put stores block g, which the caller has verified against the manifest.
func (s *spool) put(g int, data []byte) error {
	if len(data) != s.m.BlockLen(g) {
		return fmt.Errorf("block %d is %d bytes, manifest says %d", g, len(data), s.m.BlockLen(g))
	}
	if _, err := s.f.WriteAt(data, int64(g)*int64(s.m.BlockSize)); err != nil {
		return fmt.Errorf("write block %d to spool %s: %w", g, s.path, err)
	}
	s.mu.Lock()
	if s.mark(g) {
		s.dirty = true
		s.broadcast()
	}
	s.mu.Unlock()
	return nil
}

// putLeaves keeps chunk i's block hashes, which the caller has verified
// against the manifest, for the feeders of this node's children.
// The chunk's empty blocks are held from now on.
func (s *spool) putLeaves(i int, leaves []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, known := s.cache.get(i)
	if !known {
		s.cache.put(i, leaves)
	}
	added, err := s.markZeros(i, leaves)
	if added || !known {
		s.broadcast()
	}
	return err
}

// stripeMissing is how many blocks of stripe stripe of stripes are not held.
func (s *spool) stripeMissing(stripes, stripe int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	nb := s.m.Blocks()
	if stripes == 1 {
		return nb - s.count
	}
	in := (nb - stripe + stripes - 1) / stripes
	return in - s.byParityN[stripe]
}

// changes is closed when the spool next holds a block or a chunk's hashes.
func (s *spool) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *spool) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// ready: block g is held, and its chunk's block hashes are known or can be
// hashed again from a complete chunk.
func (s *spool) ready(g int) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.have.has(g) {
		return false, s.changed
	}
	i := g / s.m.blocksPerChunk()
	_, known := s.cache.get(i)
	return known || s.chunkComplete(i), s.changed
}

func (s *spool) hashesReady(i int) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, known := s.cache.get(i)
	return known || s.chunkComplete(i), s.changed
}

func (s *spool) leaves(i int) ([]byte, error) {
	s.mu.Lock()
	l, ok := s.cache.get(i)
	s.mu.Unlock()
	if ok {
		return l, nil
	}
	l, err := rehash(s.f, s.m, i)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", s.path, err)
	}
	s.mu.Lock()
	s.cache.put(i, l)
	s.mu.Unlock()
	return l, nil
}

func (s *spool) readBlock(g int, buf []byte) ([]byte, error) {
	return readBlockAt(s.f, s.m, g, buf)
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

// sync makes the held blocks durable, then records them, so the state
// file never claims a block the disk does not have.
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
		err = writeStateFile(s.statePath, state)
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
	if !s.target {
		os.Remove(s.path)
	}
	os.Remove(s.statePath)
}

// waitComplete blocks until every block is held or ctx ends.
func (s *spool) waitComplete(ctx context.Context) error {
	return waitUntil(ctx, 0, func() (bool, <-chan struct{}) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.count == s.m.Blocks(), s.changed
	})
}

// removeStaleSpools deletes what interrupted sessions left in dir's spool
// once a session succeeded, so aborted sessions cannot pile up on disk: the
// regular files named as treecast names spool files, and nothing else.
func removeStaleSpools(dir string, log *slog.Logger) {
	if err := checkStatePart(dir, spoolDirName); err != nil {
		log.Warn("stale spools not removed", "err", err)
		return
	}
	entries, err := os.ReadDir(filepath.Join(dir, spoolDirName))
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !isSpoolName(e.Name()) {
			continue
		}
		p := filepath.Join(dir, spoolDirName, e.Name())
		if err := os.Remove(p); err != nil {
			log.Warn("could not remove stale spool", "path", p, "err", err)
		}
	}
}

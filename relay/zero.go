package relay

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sync"
)

// Empty blocks cross no link. A block whose hash is that of as many zero
// bytes is never sent: a node that learns its chunk's block hashes marks it
// held at once, and its spool, sparse, reads zeros there. A chunk whose
// signed hash is that of all-zero blocks is known to be empty from the
// manifest alone, so neither its block hashes nor its blocks are sent. Only
// verified bytes are ever written to a spool, so a spool reads zeros where
// the package has them, whatever it held before.

// zeroLeaves caches the block hash of n zero bytes, per n.
var zeroLeaves sync.Map

func zeroLeaf(n int) [32]byte {
	if h, ok := zeroLeaves.Load(n); ok {
		return h.([32]byte)
	}
	h := sha256.Sum256(make([]byte, n))
	zeroLeaves.Store(n, h)
	return h
}

// isZeroLeaf reports whether leaf is the hash of block g read as zeros.
func (m *Manifest) isZeroLeaf(g int, leaf []byte) bool {
	z := zeroLeaf(m.BlockLen(g))
	return bytes.Equal(leaf, z[:])
}

// zeroChunkLeaves returns chunk i's block hashes if the chunk is all
// zeros, as its signed hash says; nil otherwise.
func (m *Manifest) zeroChunkLeaves(i int) []byte {
	first, n := m.chunkBlocks(i)
	leaves := make([]byte, 0, 32*n)
	for g := first; g < first+n; g++ {
		z := zeroLeaf(m.BlockLen(g))
		leaves = append(leaves, z[:]...)
	}
	if sha256.Sum256(leaves) != m.Chunks[i] {
		return nil
	}
	return leaves
}

// zeroBytes counts the bytes of the blocks leaves (of chunk i) mark empty.
func (m *Manifest) zeroBytes(i int, leaves []byte) int64 {
	first, n := m.chunkBlocks(i)
	var sum int64
	for j := range n {
		if m.isZeroLeaf(first+j, leaves[32*j:32*j+32]) {
			sum += int64(m.BlockLen(first + j))
		}
	}
	return sum
}

// markZeros marks held every block of chunk i that leaves, verified, say
// is empty, zeroing it first on a write target that may hold other bytes
// there; the caller holds s.mu or owns s alone. It reports whether any
// was new.
func (s *spool) markZeros(i int, leaves []byte) (bool, error) {
	first, n := s.m.chunkBlocks(i)
	added := false
	for j := range n {
		g := first + j
		if s.have.has(g) || !s.m.isZeroLeaf(g, leaves[32*j:32*j+32]) {
			continue
		}
		if s.zeroFill != nil {
			if err := s.zeroFill(int64(g)*int64(s.m.BlockSize), int64(s.m.BlockLen(g))); err != nil {
				return added, fmt.Errorf("zero block %d of %s: %w", g, s.path, err)
			}
		}
		s.mark(g)
		s.zero += int64(s.m.BlockLen(g))
		added = true
	}
	if added {
		s.dirty = true
	}
	return added, nil
}

// markEmptyChunks marks held every block of the chunks the manifest says
// are empty, zeroing runs of them at once on a write target that needs it.
// A child never lacks them, so their hashes are never asked for.
func (s *spool) markEmptyChunks() error {
	if len(s.m.Chunks) == 0 {
		return nil
	}
	z := zeroLeaf(s.m.BlockSize)
	full := bytes.Repeat(z[:], s.m.blocksPerChunk()) // the same for every whole chunk
	fullHash := sha256.Sum256(full)
	run, runFrom := int64(0), int64(0) // bytes of empty chunks in a row not yet zeroed, from
	flush := func() error {
		if run == 0 || s.zeroFill == nil {
			run = 0
			return nil
		}
		err := s.zeroFill(runFrom, run)
		run = 0
		if err != nil {
			return fmt.Errorf("zero %s: %w", s.path, err)
		}
		return nil
	}
	for i := range s.m.Chunks {
		first, n := s.m.chunkBlocks(i)
		var leaves []byte
		switch {
		case n == s.m.blocksPerChunk() && s.m.Chunks[i] == fullHash:
			leaves = full
		case n != s.m.blocksPerChunk():
			leaves = s.m.zeroChunkLeaves(i)
		}
		if leaves == nil || int(s.chunks[i]) == n {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		if run == 0 {
			runFrom = int64(first) * int64(s.m.BlockSize)
		}
		run += int64(s.m.ChunkLen(i))
		for g := first; g < first+n; g++ {
			if s.mark(g) {
				s.zero += int64(s.m.BlockLen(g))
			}
		}
		s.dirty = true
	}
	return flush()
}

// zeroHeld is how many bytes were marked held as empty, not received.
func (s *spool) zeroHeld() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.zero
}

package relay

import (
	"bytes"
	"crypto/sha256"
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
// is empty; the caller holds s.mu or owns s alone. It reports whether any
// was new.
func (s *spool) markZeros(i int, leaves []byte) bool {
	first, n := s.m.chunkBlocks(i)
	added := false
	for j := range n {
		g := first + j
		if !s.have.has(g) && s.m.isZeroLeaf(g, leaves[32*j:32*j+32]) && s.mark(g) {
			s.zero += int64(s.m.BlockLen(g))
			added = true
		}
	}
	if added {
		s.dirty = true
	}
	return added
}

// markEmptyChunks marks held every block of the chunks the manifest says
// are empty. A child never lacks them, so their hashes are never asked for.
func (s *spool) markEmptyChunks() {
	if len(s.m.Chunks) == 0 {
		return
	}
	z := zeroLeaf(s.m.BlockSize)
	full := bytes.Repeat(z[:], s.m.blocksPerChunk()) // the same for every whole chunk
	fullHash := sha256.Sum256(full)
	for i := range s.m.Chunks {
		_, n := s.m.chunkBlocks(i)
		switch {
		case n == s.m.blocksPerChunk() && s.m.Chunks[i] == fullHash:
			s.markZeros(i, full)
		case n != s.m.blocksPerChunk():
			if leaves := s.m.zeroChunkLeaves(i); leaves != nil {
				s.markZeros(i, leaves)
			}
		}
	}
}

// zeroHeld is how many bytes were marked held as empty, not received.
func (s *spool) zeroHeld() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.zero
}

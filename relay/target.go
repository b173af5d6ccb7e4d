package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// A receiver with a write target (a disk, or an image file) keeps no
// spool: each verified block is written at its offset in the target as it
// arrives, in any order, and children are fed from the target. The state
// folder holds only the bitmap of verified blocks, so a session that stops
// resumes from what the target holds: on resume, every whole chunk the
// bitmap claims is read back and checked against the manifest, and blocks
// of chunks that fail or are partial are fetched again. Empty blocks are
// not sent: a fresh image file is sized afresh and reads zeros; on a
// device they are zeroed with BLKZEROOUT (the device discards or writes
// zeros, fast), or written as zeros where that is refused.

// ErrTargetTooSmall means a write target cannot hold the package.
var ErrTargetTooSmall = errors.New("the write target is smaller than the package")

// openTarget opens target as the spool of m, with its state in dir.
func openTarget(dir, target string, m *Manifest) (*spool, error) {
	_, state := spoolPaths(dir, m)
	if err := checkStatePart(dir, spoolDirName); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(state), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(target, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open write target: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	device := st.Mode()&os.ModeDevice != 0
	size := st.Size()
	if device {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("size of %s: %w", target, err)
		}
	}
	if device && size < m.Size {
		f.Close()
		return nil, fmt.Errorf("%s holds %s, %s needs %s: %w", target, HumanBytes(size), m.Name, HumanBytes(m.Size), ErrTargetTooSmall)
	}
	s := &spool{m: m, f: f, path: target, statePath: state, target: true, have: newBitmap(m.Blocks()), chunks: make([]uint16, len(m.Chunks)),
		cache: newLeafCache(leafBudget), wire: newWireCache(), changed: make(chan struct{})}
	resumed := false
	if prev, err := readNoFollow(state); err == nil {
		if have, partial, ok := s.parseState(prev); ok {
			resumed = s.verifyHeld(have, partial)
		}
	}
	switch {
	case device:
		s.zeroFill = deviceZeroer(f)
	case !resumed:
		// A fresh image file: sized afresh, it reads zeros, so its empty
		// blocks need no writing.
		if err := f.Truncate(0); err == nil {
			err = f.Truncate(m.Size)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("size %s: %w", target, err)
		}
	default:
		s.zeroFill = writeZeros(f)
		if size != m.Size {
			if err := f.Truncate(m.Size); err != nil {
				f.Close()
				return nil, fmt.Errorf("size %s: %w", target, err)
			}
		}
	}
	if err := s.markEmptyChunks(); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// verifyHeld takes from have the blocks of every whole chunk that reads
// back as the manifest says, and of chunks held in part, those that read
// back as the block hashes partial holds for them (checked against the
// manifest first). It reports whether any were taken.
func (s *spool) verifyHeld(have bitmap, partial []byte) bool {
	known := map[int][]byte{}
	bpc := s.m.blocksPerChunk()
	for len(partial) >= 4 {
		i := int(binary.BigEndian.Uint32(partial))
		if i >= len(s.m.Chunks) {
			break
		}
		_, n := s.m.chunkBlocks(i)
		if len(partial) < 4+32*n {
			break
		}
		if l := partial[4 : 4+32*n]; sha256.Sum256(l) == s.m.Chunks[i] {
			known[i] = bytes.Clone(l)
		}
		partial = partial[4+32*n:]
	}
	buf := make([]byte, s.m.BlockSize)
	taken := false
	for i := range s.m.Chunks {
		first, n := s.m.chunkBlocks(i)
		count := 0
		for g := first; g < first+n; g++ {
			if have.has(g) {
				count++
			}
		}
		var leaves []byte
		switch {
		case count == 0:
			continue
		case count == n:
			l, err := rehash(s.f, s.m, i)
			if err != nil || sha256.Sum256(l) != s.m.Chunks[i] {
				continue
			}
			leaves = l
		default:
			if leaves = known[i]; leaves == nil {
				continue
			}
		}
		for g := first; g < first+n; g++ {
			if !have.has(g) {
				continue
			}
			if count < n {
				b, err := readBlockAt(s.f, s.m, g, buf)
				if err != nil || sha256.Sum256(b) != [32]byte(leaves[32*(g%bpc):32*(g%bpc)+32]) {
					continue
				}
			}
			s.mark(g)
			taken = true
		}
		s.cache.put(i, leaves)
	}
	return taken
}

// zeroer writes zeros over n bytes at off of a write target.
type zeroer func(off, n int64) error

func writeZeros(f *os.File) zeroer {
	zeros := make([]byte, MaxBlockSize)
	return func(off, n int64) error {
		for n > 0 {
			k := min(n, int64(len(zeros)))
			if _, err := f.WriteAt(zeros[:k], off); err != nil {
				return err
			}
			off, n = off+k, n-k
		}
		return nil
	}
}

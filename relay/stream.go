package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// A receiver with a Stream apply feeds the package, in order, to one
// command while the transfer runs: a reader of its own takes each block
// from the spool (or write target) once it is verified and held, so a slow
// command never slows the relaying to children, and the bytes it has not
// consumed yet wait on disk, not in memory.

// errIncomplete ends a stream whose session ended before the package was
// whole: the command is stopped, not given a truncated package.
var errIncomplete = errors.New("the session ended before the package was complete; the command was stopped")

// stream runs opt.Stream on the package, feeding it each block as it is
// held, and returns the command's outcome.
func (s *session) stream() error {
	ctx, cancel := context.WithCancel(s.applyCtx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	pkg := Package{Path: s.spool.path, Name: s.m.Name, Size: s.m.Size, SHA256: s.m.SumHex(), Output: &s.output}
	go func() {
		err := s.opt.Stream(ctx, pkg, pr)
		pr.CloseWithError(io.ErrClosedPipe) // a command that stopped reading
		done <- err
	}()
	err := s.inOrder(func(b []byte) error {
		if _, err := pw.Write(b); err != nil {
			return errCommandDone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errCommandDone) {
		cancel()
		pw.CloseWithError(err)
		<-done
		if errors.Is(err, errIncomplete) {
			return err
		}
		return fmt.Errorf("feed the command: %w", err)
	}
	pw.Close() // the command exited or closed its input: its exit says how it went
	return <-done
}

// errCommandDone stops a stream whose command no longer reads.
var errCommandDone = errors.New("the command stopped reading")

// inOrder gives use each block of the package in order, read back from
// the spool as soon as it is held, until use fails; errIncomplete if the
// session ends first.
func (s *session) inOrder(use func([]byte) error) error {
	buf := make([]byte, s.m.BlockSize)
	for g := range s.m.Blocks() {
		held := func() (bool, <-chan struct{}) { return s.spool.readyToRead(g) }
		if waitUntil(s.ctx, 0, held) != nil {
			return errIncomplete
		}
		data, err := s.spool.readBlock(g, buf)
		if err != nil {
			return fmt.Errorf("read block %d: %w", g, err)
		}
		if err := use(data); err != nil {
			return err
		}
	}
	return nil
}

// readyToRead reports whether block g is held, and a channel closed at
// the next change.
func (s *spool) readyToRead(g int) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.has(g), s.changed
}

// readBack hashes the package in order as its blocks are held, reading
// each back from the spool, and reports whether the whole file matched
// the manifest's sha256 (false too if the session ended first). It runs
// beside the transfer, so the apply's check costs nothing at the end.
func (s *session) readBack() bool {
	h := sha256.New()
	err := s.inOrder(func(b []byte) error {
		h.Write(b)
		return nil
	})
	if err != nil {
		if !errors.Is(err, errIncomplete) {
			s.opt.Log.Warn("read back", "err", err)
		}
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == s.m.SumHex()
}

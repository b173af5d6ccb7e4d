package install

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
)

// archiveFormat is what a package's first bytes say it is.
type archiveFormat int

const (
	formatUnknown archiveFormat = iota
	formatTar
	formatTarGz
	formatZip
)

const tarBlock = 512

// sniffBytes recognises an archive by its first bytes (at least 512 are
// needed for tar). Names lie; magic numbers rarely do.
func sniffBytes(b []byte) archiveFormat {
	switch {
	case len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b:
		return formatTarGz
	case bytes.HasPrefix(b, []byte("PK\x03\x04")), bytes.HasPrefix(b, []byte("PK\x05\x06")):
		return formatZip
	case len(b) >= 262 && string(b[257:262]) == "ustar":
		return formatTar
	case len(b) >= tarBlock && bytes.Count(b[:tarBlock], []byte{0}) == tarBlock:
		return formatTar // an empty tar archive is only its end-of-archive blocks
	}
	return formatUnknown
}

// extract unpacks the archive pkg into cfg.Extract in three steps:
//
//  1. Validate: every entry header is read and checked, against the safety
//     rules and the caps of cfg; nothing is written if any entry is refused.
//  2. Stage: entries are written into a fresh directory inside the
//     destination, through an os.Root so no path can leave it, checked again
//     one by one, their bytes counted against the size cap.
//  3. Move in: each top-level entry of the staging directory is renamed into
//     the destination, replacing a same-named entry as a whole.
//
// On failure the staging directory is removed and entries already moved in are
// put back, so the destination holds the old contents or the new ones. What an
// extraction killed part-way left is removed first.
func extract(ctx context.Context, cfg Config, pkg Package) (err error) {
	dir := cfg.Extract
	f, err := os.Open(pkg.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, tarBlock)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	format := sniffBytes(head[:n])
	if format == formatUnknown {
		return fmt.Errorf("package %s: %w", pkg.Name, ErrUnknownFormat)
	}
	walk := func(fn func(*entry) error) error {
		if format == formatZip {
			return walkZip(ctx, f, pkg.Size, fn)
		}
		r := bufio.NewReaderSize(io.NewSectionReader(f, 0, pkg.Size), 64<<10)
		return walkTar(ctx, r, format == formatTarGz, fn)
	}

	// Leftovers go before the free space is measured: they may hold most of it.
	var dest *destination
	if _, err := os.Stat(dir); err == nil {
		if dest, err = openDestination(dir); err != nil {
			return err
		}
		defer dest.close()
	}
	caps, err := cfg.caps(dir)
	if err != nil {
		return err
	}
	if format == formatZip {
		if n, ok := zipCount(f, pkg.Size); ok && n > uint64(caps.entries) {
			return &LimitError{Setting: "max_extract_entries", Max: int64(caps.entries)}
		}
	}
	if err := validate(walk, caps); err != nil {
		return err
	}
	if dest == nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create destination directory: %w", err)
		}
		if dest, err = openDestination(dir); err != nil {
			return err
		}
		defer dest.close()
	}
	staging, err := dest.mkWorkDir(stagingPrefix)
	if err != nil {
		return fmt.Errorf("create staging directory in %s: %w", dir, err)
	}
	defer func() {
		if rmErr := dest.root.RemoveAll(staging); rmErr != nil && err == nil {
			err = fmt.Errorf("remove staging directory %s: %w", filepath.Join(dir, staging), rmErr)
		}
	}()

	if err := stage(ctx, dest.root, staging, walk, caps); err != nil {
		return err
	}
	if err := moveIn(dest, staging); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// validate reads every entry header and checks it, and that the archive
// keeps within caps by what its headers say. The bytes are counted again
// while they are written.
func validate(walk func(func(*entry) error) error, caps extractCaps) error {
	check := newChecker(caps.entries)
	var total int64
	return walk(func(e *entry) error {
		if _, _, err := check.check(e); err != nil {
			return err
		}
		if e.kind == kindFile {
			if e.size > caps.bytes-total {
				return fmt.Errorf("entry %q: %w", e.name, caps.sizeErr())
			}
			total += e.size
		}
		return nil
	})
}

// stage writes the archive's entries into the staging directory, at most
// caps.bytes of file content.
func stage(ctx context.Context, root *os.Root, staging string, walk func(func(*entry) error) error, caps extractCaps) error {
	sroot, err := root.OpenRoot(staging)
	if err != nil {
		return err
	}
	defer sroot.Close()
	s := &stager{root: sroot, made: make(map[string]bool), buf: make([]byte, copyBufSize), caps: caps, left: caps.bytes}
	check := newChecker(caps.entries)
	if err := walk(func(e *entry) error {
		name, skip, err := check.check(e)
		if err != nil || skip {
			return err
		}
		if err := s.write(ctx, name, e); err != nil {
			return fmt.Errorf("entry %q: %w", e.name, err)
		}
		return nil
	}); err != nil {
		return err
	}
	return s.syncDirs()
}

// stager creates checked entries beneath its root.
type stager struct {
	root *os.Root
	made map[string]bool // directories created so far
	buf  []byte
	caps extractCaps
	left int64 // bytes of file content the size cap still allows
}

func (s *stager) write(ctx context.Context, name string, e *entry) error {
	if err := s.mkdirs(path.Dir(name)); err != nil {
		return err
	}
	switch e.kind {
	case kindDir:
		if err := s.mkdirs(name); err != nil {
			return err
		}
		return s.root.Chmod(name, e.mode|0o700) // the owner must be able to add and remove entries
	case kindSymlink:
		return symlinkErr(s.root.Symlink(e.link, name))
	case kindHardlink:
		return s.root.Link(linkTarget(e), name)
	case kindFile:
		return s.writeFile(ctx, name, e)
	}
	return fmt.Errorf("entry kind %d cannot be written", e.kind)
}

func (s *stager) writeFile(ctx context.Context, name string, e *entry) error {
	f, err := s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	limit := s.left
	if limit < math.MaxInt64 {
		limit++ // one byte past the cap tells a file that passes it from one that meets it
	}
	n, err := io.CopyBuffer(writerOnly{f}, io.LimitReader(ctxReader{ctx, e.data}, limit), s.buf)
	if s.left -= n; err == nil && s.left < 0 {
		err = s.caps.sizeErr()
	}
	if err == nil {
		err = f.Chmod(e.mode) // permission bits only: never setuid, setgid or sticky
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// mkdirs creates dir and its missing parents as 0755, whatever the umask.
func (s *stager) mkdirs(dir string) error {
	if dir == "." || s.made[dir] {
		return nil
	}
	if err := s.mkdirs(path.Dir(dir)); err != nil {
		return err
	}
	if err := s.root.Mkdir(dir, 0o755); err != nil {
		return err
	}
	s.made[dir] = true
	return s.root.Chmod(dir, 0o755)
}

// syncDirs makes every directory entry written so far durable.
func (s *stager) syncDirs() error {
	dirs := append([]string{"."}, mapKeys(s.made)...)
	for _, dir := range dirs {
		d, err := s.root.Open(dir)
		if err != nil {
			return err
		}
		err = syncDirFile(d)
		d.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func mapKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// moveIn renames each top-level entry of staging into the root directory. A
// same-named entry already there is moved into a trash directory first (for a
// file or symlink replaced by one, a hard link keeps it while the new one is
// renamed over it atomically). If any move fails, the moves done are undone
// and the trash is put back. The trash is removed once everything is in place.
func moveIn(dest *destination, staging string) (err error) {
	root, dir := dest.root, dest.dir
	names, err := readDirNames(root, staging)
	if err != nil {
		return err
	}
	slices.Sort(names)

	var done []movedEntry
	trash := ""
	defer func() {
		if err != nil {
			err = undoMoves(root, dir, staging, trash, done, err)
			return
		}
		if trash != "" {
			if rmErr := root.RemoveAll(trash); rmErr != nil {
				err = fmt.Errorf("new contents are in place, but removing the previous ones from %s failed: %w", filepath.Join(dir, trash), rmErr)
			}
		}
	}()

	for _, name := range names {
		from := staging + "/" + name
		old, lerr := root.Lstat(name)
		if errors.Is(lerr, fs.ErrNotExist) {
			if err := root.Rename(from, name); err != nil {
				return fmt.Errorf("move %s into place: %w", filepath.Join(dir, name), err)
			}
			done = append(done, movedEntry{name: name})
			continue
		}
		if lerr != nil {
			return lerr
		}
		if trash == "" {
			if trash, err = dest.mkWorkDir(trashPrefix); err != nil {
				return fmt.Errorf("create directory for the previous contents in %s: %w", dir, err)
			}
		}
		saved := trash + "/" + name
		cur, err := root.Lstat(from)
		if err != nil {
			return err
		}
		if !old.IsDir() && !cur.IsDir() && root.Link(name, saved) == nil {
			if err := root.Rename(from, name); err != nil {
				root.Remove(saved)
				return fmt.Errorf("move %s into place: %w", filepath.Join(dir, name), err)
			}
		} else {
			if err := root.Rename(name, saved); err != nil {
				return fmt.Errorf("move the previous %s aside: %w", filepath.Join(dir, name), err)
			}
			if err := root.Rename(from, name); err != nil {
				if rbErr := root.Rename(saved, name); rbErr != nil {
					return fmt.Errorf("move %s into place: %w; the previous one is kept in %s", filepath.Join(dir, name), err, filepath.Join(dir, saved))
				}
				return fmt.Errorf("move %s into place: %w", filepath.Join(dir, name), err)
			}
		}
		done = append(done, movedEntry{name: name, saved: true})
	}
	return nil
}

// movedEntry is a top-level entry moveIn put in place.
type movedEntry struct {
	name  string
	saved bool // the entry it replaced is in the trash directory
}

// undoMoves puts back what moveIn did after it failed with cause: new entries
// go back to staging (removed with it), replaced ones come back from trash.
func undoMoves(root *os.Root, dir, staging, trash string, done []movedEntry, cause error) error {
	var failed []error
	for i := len(done) - 1; i >= 0; i-- {
		m := done[i]
		if err := root.Rename(m.name, staging+"/"+m.name); err != nil {
			failed = append(failed, err)
			continue
		}
		if m.saved {
			if err := root.Rename(trash+"/"+m.name, m.name); err != nil {
				failed = append(failed, err)
			}
		}
	}
	if trash != "" {
		if err := root.Remove(trash); err != nil { // empty unless something could not be restored
			return fmt.Errorf("%w; the previous contents could not all be restored (%w) and are kept in %s", cause, errors.Join(append(failed, err)...), filepath.Join(dir, trash))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w; undoing the entries already moved in failed: %w", cause, errors.Join(failed...))
	}
	return cause
}

package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// place puts pkg at dir/<name> and returns that path: by a hard link to the
// verified file where dir allows it (see placeLink), else by a copy. The
// copied bytes go to a temporary file in dir (same filesystem), are checked
// against pkg's size and
// hash, synced, made 0644 and renamed over the destination, so a reader of
// dir/<name> sees the old file or the new one, never a part. On failure the
// temporary file is removed.
func place(ctx context.Context, dir string, pkg Package) (dest string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create destination directory: %w", err)
	}
	dest = filepath.Join(dir, pkg.Name)
	src, err := os.Open(pkg.Path)
	if err != nil {
		return "", err
	}
	defer src.Close()
	if fi, err := os.Lstat(dest); err == nil {
		if fi.IsDir() {
			return "", fmt.Errorf("%s is a directory; remove it or choose another --to", dest)
		}
		if sfi, err := src.Stat(); err == nil && os.SameFile(fi, sfi) {
			return dest, nil // To is the spool directory: the file is already there, and stays untouched
		}
	}

	if err := ctx.Err(); err != nil {
		return "", err
	}
	if ok, err := placeLink(ctx, dir, dest, src, pkg); ok || err != nil {
		return dest, err
	}
	tmp, err := os.CreateTemp(dir, tempPattern(pkg.Name))
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	if err := copyChecked(ctx, writerOnly{tmp}, src, pkg); err != nil {
		return "", err // a write error names the file: "write /opt/pkg/.app.tmp-1: no space left on device"
	}
	if err := tmp.Chmod(0o644); err != nil {
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return "", err
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return dest, nil
}

// copyChecked copies src to w and checks that what it read is pkg: its
// size, and its sha256 unless the caller checked that already.
func copyChecked(ctx context.Context, w io.Writer, src *os.File, pkg Package) error {
	h := sha256.New()
	r := io.Reader(ctxReader{ctx, src})
	if !pkg.Checked {
		r = io.TeeReader(r, h)
	}
	n, err := io.CopyBuffer(w, r, make([]byte, copyBufSize))
	if err != nil {
		return err
	}
	if n != pkg.Size {
		return fmt.Errorf("%s changed after it was verified: read %d bytes, expected %d", pkg.Path, n, pkg.Size)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); !pkg.Checked && sum != pkg.SHA256 {
		return fmt.Errorf("%s changed after it was verified: read %d bytes with sha256 %s, expected sha256 %s", pkg.Path, n, sum, pkg.SHA256)
	}
	return nil
}

// placeLink places pkg by a hard link to its file when dir is on the same
// filesystem: nothing is written again, which on a large package is most of
// the apply. The file is still read once, to check it is what was
// verified (unless the caller read it back already); the link is made under a temporary name, synced and renamed
// into place like a copy. false with a nil error means it could not be
// linked, and the caller copies instead.
func placeLink(ctx context.Context, dir, dest string, src *os.File, pkg Package) (bool, error) {
	if !linkPlaces {
		return false, nil
	}
	tmp := ""
	for try := 0; try < 3 && tmp == ""; try++ {
		name := filepath.Join(dir, fmt.Sprintf("%s%d", strings.TrimSuffix(tempPattern(pkg.Name), "*"), rand.Uint64()))
		switch err := os.Link(pkg.Path, name); {
		case err == nil:
			tmp = name
		case !errors.Is(err, fs.ErrExist):
			return false, nil
		}
	}
	if tmp == "" {
		return false, nil
	}
	err := func() error {
		if !pkg.Checked {
			if err := copyChecked(ctx, io.Discard, src, pkg); err != nil {
				return err
			}
		}
		f, err := os.Open(tmp)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Chmod(0o644); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := os.Rename(tmp, dest); err != nil {
			return err
		}
		return syncDir(dir)
	}()
	if err != nil {
		os.Remove(tmp)
	}
	return true, err
}

// tempPattern names the temporary file after the package, hidden, and short
// enough that the random suffix never pushes it past the 255-byte name limit.
func tempPattern(name string) string {
	const maxKeep = 200
	if len(name) > maxKeep {
		i := maxKeep
		for i > 0 && !utf8.RuneStart(name[i]) {
			i--
		}
		name = name[:i]
	}
	return "." + name + ".tmp-*"
}

// ctxReader ends a long read loop when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// writerOnly hides an *os.File's ReadFrom so io.CopyBuffer uses our buffer and
// every byte passes through the reader chain (hashing, cancellation).
type writerOnly struct{ io.Writer }

// copyBufSize is the buffer for streaming package bytes: large enough to keep
// disks busy, small enough to never matter next to the package itself.
const copyBufSize = 1 << 20

// syncDir makes a rename or creation inside dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return syncDirFile(d)
}

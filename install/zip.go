package install

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
)

// walkZip calls fn for each member of the zip archive in ra, in central
// directory order. A symlink's target is its content, read up to a bound.
func walkZip(ctx context.Context, ra io.ReaderAt, size int64, fn func(*entry) error) error {
	zr, err := zip.NewReader(ra, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) { // the checker names insecure paths itself
		return fmt.Errorf("read zip: %w", err)
	}
	for _, f := range zr.File {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := zipEntry(f, fn); err != nil {
			return err
		}
	}
	return nil
}

func zipEntry(f *zip.File, fn func(*entry) error) error {
	mode := f.Mode()
	e := &entry{name: f.Name, mode: mode.Perm()}
	switch {
	case mode.IsDir():
		e.kind = kindDir
	case mode&fs.ModeSymlink != 0:
		e.kind = kindSymlink
		target, err := readZipMember(f, maxNameLen+1)
		if err != nil {
			return err
		}
		e.link = string(target)
	case mode.IsRegular():
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("read zip entry %q: %w", f.Name, err)
		}
		defer rc.Close()
		e.kind, e.size, e.data = kindFile, int64(min(f.UncompressedSize64, math.MaxInt64)), rc
	case mode&fs.ModeCharDevice != 0:
		e.kind, e.special = kindSpecial, "character device"
	case mode&fs.ModeDevice != 0:
		e.kind, e.special = kindSpecial, "block device"
	case mode&fs.ModeNamedPipe != 0:
		e.kind, e.special = kindSpecial, "named pipe (fifo)"
	case mode&fs.ModeSocket != 0:
		e.kind, e.special = kindSpecial, "socket"
	default:
		e.kind, e.special = kindSpecial, fmt.Sprintf("file type %v", mode.Type())
	}
	return fn(e)
}

// readZipMember reads at most limit bytes of f's content.
func readZipMember(f *zip.File, limit int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("read zip entry %q: %w", f.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit))
	if err != nil {
		return nil, fmt.Errorf("read zip entry %q: %w", f.Name, err)
	}
	return b, nil
}

package install

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
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

// zipCount reads how many entries the zip archive in ra says its central
// directory holds (the zip64 count where the plain one is full), so a cap
// can refuse a huge one before zip.NewReader makes a record of every entry
// (400,000 empty entries: 82 MiB for a 35 MB archive). ok is false where
// the end record is not found; zip.NewReader then says why.
func zipCount(ra io.ReaderAt, size int64) (n uint64, ok bool) {
	const endLen, locLen, end64Len = 22, 20, 56
	tail := min(size, endLen+0xffff) // the end record, and a comment of up to 64 KiB
	b := make([]byte, tail)
	if _, err := ra.ReadAt(b, size-tail); err != nil && err != io.EOF {
		return 0, false
	}
	// The end record is the last one whose comment ends the file: a
	// comment may hold the record's signature too.
	at := len(b)
	for {
		if at = bytes.LastIndex(b[:at], []byte("PK\x05\x06")); at < 0 {
			return 0, false
		}
		if len(b)-at >= endLen && at+endLen+int(binary.LittleEndian.Uint16(b[at+20:])) == len(b) {
			break
		}
	}
	n = uint64(binary.LittleEndian.Uint16(b[at+10:]))
	if n != 0xffff || at < locLen || !bytes.Equal(b[at-locLen:at-locLen+4], []byte("PK\x06\x07")) {
		return n, true
	}
	off := int64(binary.LittleEndian.Uint64(b[at-locLen+8:]))
	if off < 0 || off > size-end64Len {
		return 0, false
	}
	e := make([]byte, end64Len)
	if _, err := ra.ReadAt(e, off); err != nil || !bytes.Equal(e[:4], []byte("PK\x06\x06")) {
		return 0, false
	}
	return binary.LittleEndian.Uint64(e[32:]), true
}

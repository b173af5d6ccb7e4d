package install

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// walkTar calls fn for each member of the tar stream r. When gzipped is set, r
// is gzip-compressed and must hold a tar archive.
func walkTar(ctx context.Context, r io.Reader, gzipped bool, fn func(*entry) error) error {
	if gzipped {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("read gzip: %w", err)
		}
		defer zr.Close()
		br := bufio.NewReaderSize(zr, 4096)
		head, err := br.Peek(tarBlock)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read gzip: %w", err)
		}
		if sniffBytes(head) != formatTar {
			return fmt.Errorf("gzip-compressed data is not a tar archive: %w", ErrUnknownFormat)
		}
		r = br
	}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) { // the checker names insecure paths itself
			return fmt.Errorf("read tar: %w", err)
		}
		e := &entry{name: hdr.Name, mode: fs.FileMode(hdr.Mode) & fs.ModePerm, link: hdr.Linkname}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			e.kind, e.size, e.data = kindFile, hdr.Size, tr // a sparse file's Size is its whole, unpacked size
		case tar.TypeDir:
			e.kind = kindDir
		case tar.TypeSymlink:
			e.kind = kindSymlink
		case tar.TypeLink:
			e.kind = kindHardlink
		case tar.TypeChar:
			e.kind, e.special = kindSpecial, "character device"
		case tar.TypeBlock:
			e.kind, e.special = kindSpecial, "block device"
		case tar.TypeFifo:
			e.kind, e.special = kindSpecial, "named pipe (fifo)"
		case tar.TypeXGlobalHeader:
			continue // pax metadata for the whole archive; creates nothing
		default:
			e.kind, e.special = kindSpecial, fmt.Sprintf("entry type %q", hdr.Typeflag)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

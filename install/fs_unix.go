//go:build linux || darwin

package install

import (
	"errors"
	"math"
	"os"
	"syscall"
)

// diskFree returns the bytes an unprivileged writer may still use on the
// filesystem of the existing path p.
func diskFree(p string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		return 0, err
	}
	return int64(min(st.Bavail*uint64(st.Bsize), math.MaxInt64)), nil
}

// isDiskFull reports a write that failed on a full disk or quota.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// syncDirFile makes the entries of the open directory d durable.
func syncDirFile(d *os.File) error { return d.Sync() }

// linkPlaces: a hard link to the spool file can be renamed into place while
// the receiver still holds the spool open.
const linkPlaces = true

// symlinkErr is the error of creating a symlink entry, as it is.
func symlinkErr(err error) error { return err }

//go:build windows

package install

import (
	"errors"
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/windows"
)

// diskFree returns the bytes the caller may still use (quotas counted) on
// the volume of the existing path p.
func diskFree(p string) (int64, error) {
	name, err := windows.UTF16PtrFromString(p)
	if err != nil {
		return 0, err
	}
	var avail uint64
	if err := windows.GetDiskFreeSpaceEx(name, &avail, nil, nil); err != nil {
		return 0, &os.PathError{Op: "GetDiskFreeSpaceEx", Path: p, Err: err}
	}
	return int64(min(avail, math.MaxInt64)), nil
}

// isDiskFull reports a write that failed on a full disk or quota.
func isDiskFull(err error) bool {
	return errors.Is(err, windows.ERROR_DISK_FULL) || errors.Is(err, windows.ERROR_HANDLE_DISK_FULL) ||
		errors.Is(err, windows.ERROR_DISK_QUOTA_EXCEEDED)
}

// syncDirFile does nothing: Windows flushes only handles open for writing,
// which a directory's is not, and NTFS journals directory entries itself.
func syncDirFile(*os.File) error { return nil }

// linkPlaces is false: Windows renames a file only when every handle open
// on it allows it, and the receiver's handle on the spool (one file with
// its hard links) does not, so --to always copies.
const linkPlaces = false

// symlinkErr says what a symlink entry needs when Windows refused to create
// it for want of the privilege.
func symlinkErr(err error) error {
	if errors.Is(err, windows.ERROR_PRIVILEGE_NOT_HELD) {
		return fmt.Errorf("%w: creating a symbolic link on Windows needs Developer Mode or an administrator", err)
	}
	return err
}

//go:build windows

package relay

import (
	"errors"
	"io/fs"
	"math"
	"os"

	"golang.org/x/sys/windows"
)

// freeBytes returns the bytes the caller may still use (quotas counted) on
// the volume of dir.
func freeBytes(dir string) (int64, error) {
	name, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return 0, err
	}
	var avail uint64
	if err := windows.GetDiskFreeSpaceEx(name, &avail, nil, nil); err != nil {
		return 0, err
	}
	return int64(min(avail, math.MaxInt64)), nil
}

// errLink is openNoFollow's refusal of a symlink or junction.
var errLink = errors.New("is a symbolic link or junction, which treecast does not follow in its state folder")

// openNoFollow opens name as os.OpenFile does, but fails when name is a
// symlink or junction. Windows has no O_NOFOLLOW for os.OpenFile, so this
// checks with Lstat first: a link made between the check and the open is
// followed. Making links on Windows needs an administrator or Developer
// Mode, and the state folder is the receiver's own.
func openNoFollow(name string, flag int, perm fs.FileMode) (*os.File, error) {
	fi, err := os.Lstat(name)
	switch {
	case err == nil && fi.Mode()&(fs.ModeSymlink|fs.ModeIrregular) != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: errLink}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	return os.OpenFile(name, flag, perm)
}

// ownerOnly is always true on Windows, where access is set by ACLs that
// permission bits do not show (Go reports 0666 for every writable file):
// treecast does not inspect them. A key or secret kept in the user's
// profile (keygen's default, %AppData%\treecast) inherits an ACL that
// admits only the user, administrators and SYSTEM.
func ownerOnly(fs.FileMode) bool { return true }

// statID: a file's change time is not at hand here, so nothing is kept.
func statID(fs.FileInfo) (fileID, bool) { return fileID{}, false }

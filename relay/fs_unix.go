//go:build linux || darwin

package relay

import (
	"io/fs"
	"os"
	"syscall"
)

// freeBytes returns the bytes an unprivileged writer may still use on the
// filesystem of dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// openNoFollow opens name as os.OpenFile does, but fails (ELOOP) when name
// is a symlink.
func openNoFollow(name string, flag int, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag|syscall.O_NOFOLLOW, perm)
}

// ownerOnly reports whether permission bits let no one but the file's owner
// read or write it.
func ownerOnly(perm fs.FileMode) bool { return perm&0o077 == 0 }

// statID is the device, inode and change time of the file st describes.
func statID(st fs.FileInfo) (fileID, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{Dev: uint64(sys.Dev), Ino: uint64(sys.Ino), Ctime: ctimeOf(sys)}, true
}

//go:build unix

package install

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// canWrite says why this process cannot create files in the existing
// directory dir, or nil.
func canWrite(dir string) error {
	const wOK, xOK = 0x2, 0x1 // access(2): may write, may enter
	switch err := syscall.Access(dir, wOK|xOK); {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%s is on a read-only filesystem: give a directory on a writable one", dir)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%s is not writable by this user (uid %d): give one that is, or run as its owner", dir, os.Geteuid())
	default:
		return fmt.Errorf("%s: %w", dir, err)
	}
}

// kernelFS names the kernel filesystem dir is in (proc, sysfs, cgroup), or
// "" for a filesystem that holds files. Root may write in /proc's
// directories as far as access(2) says; nothing placed there would land.
func kernelFS(dir string) string {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return ""
	}
	return kernelFSMagic[int64(st.Type)]
}

// kernelFSMagic names the statfs(2) magic numbers of the kernel's own
// filesystems (linux/magic.h).
var kernelFSMagic = map[int64]string{
	0x9fa0:     "proc",       // PROC_SUPER_MAGIC
	0x62656572: "sysfs",      // SYSFS_MAGIC
	0x27e0eb:   "cgroup",     // CGROUP_SUPER_MAGIC
	0x63677270: "cgroup2",    // CGROUP2_SUPER_MAGIC
	0x64626720: "debugfs",    // DEBUGFS_MAGIC
	0x73636673: "securityfs", // SECURITYFS_MAGIC
}

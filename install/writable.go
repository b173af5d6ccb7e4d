package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// WritableDir says why dir cannot be used as a directory to write into:
// it is a file, in a kernel filesystem, or neither it nor (when missing)
// the nearest folder above it that exists is writable.
func WritableDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for _, k := range []string{"/proc", "/sys"} {
		if abs == k || strings.HasPrefix(abs, k+"/") {
			return fmt.Errorf("%s is the kernel's own filesystem, not a place for files: give a directory on a disk, such as /opt/app", k)
		}
	}
	p := abs
	for {
		st, err := os.Stat(p)
		if err == nil {
			if !st.IsDir() {
				if p == abs {
					return fmt.Errorf("%s is a file, not a directory: give the directory to write into (it is created if missing)", p)
				}
				return fmt.Errorf("%s is a file, so no directory can be made under it: give another directory", p)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return err
		}
		if parent := filepath.Dir(p); parent != p {
			p = parent
			continue
		}
		return err
	}
	if fsName := kernelFS(p); fsName != "" {
		return fmt.Errorf("%s is in the kernel's %s filesystem, not a place for files: give a directory on a disk, such as /opt/app", p, fsName)
	}
	if err := canWrite(p); err != nil {
		if p != abs {
			return fmt.Errorf("it does not exist, and cannot be created: %w", err)
		}
		return err
	}
	return nil
}

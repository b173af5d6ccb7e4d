package install

import (
	"fmt"
	"os"
	"path/filepath"
)

// canWrite says why this process cannot create files in the existing
// directory dir, or nil: Windows has no access(2), so it tries.
func canWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".treecast-check-*")
	if err != nil {
		return fmt.Errorf("%s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	os.Remove(filepath.Clean(name))
	return nil
}

// kernelFS: Windows has no kernel filesystems mounted as folders.
func kernelFS(string) string { return "" }

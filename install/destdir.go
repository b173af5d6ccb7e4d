package install

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Names of the working directories extract makes inside the destination: a
// prefix and decimal digits.
const (
	stagingPrefix = ".treecast-extract-"
	trashPrefix   = ".treecast-old-"
)

// destination is a directory being extracted into. One extraction at a time
// holds it (lockDestination: a flock on the directory itself on Unix), so
// working directories found in it are leftovers of an extraction that was
// killed.
type destination struct {
	dir    string
	root   *os.Root
	unlock func()
}

// errDestinationBusy is lockDestination's answer when another extraction
// holds the directory.
var errDestinationBusy = errors.New("destination locked by another extraction")

// openDestination opens the existing directory dir, locks it, and removes
// what an extraction killed part-way left in it.
func openDestination(dir string) (*destination, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	unlock, err := lockDestination(root, dir)
	if err != nil {
		root.Close()
		if errors.Is(err, errDestinationBusy) {
			return nil, fmt.Errorf("another treecast is extracting into %s: wait for it to finish, or give each receiver its own extract directory", dir)
		}
		return nil, err
	}
	d := &destination{dir: dir, root: root, unlock: unlock}
	if err := d.removeLeftovers(); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *destination) close() {
	d.unlock()
	d.root.Close()
}

// mkWorkDir creates a new, empty working directory named prefix and digits.
func (d *destination) mkWorkDir(prefix string) (string, error) {
	for try := 0; ; try++ {
		name := prefix + strconv.FormatUint(uint64(rand.Uint32()), 10)
		err := d.root.Mkdir(name, 0o700)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrExist) || try == 100 {
			return "", err
		}
	}
}

// workDirPrefix returns the prefix of name if mkWorkDir could have made it,
// else "".
func workDirPrefix(name string) string {
	for _, prefix := range []string{stagingPrefix, trashPrefix} {
		digits, ok := strings.CutPrefix(name, prefix)
		if ok && digits != "" && strings.Trim(digits, "0123456789") == "" {
			return prefix
		}
	}
	return ""
}

// isWorkName reports whether an archive's top-level name could be taken for
// a working directory; such names are refused.
func isWorkName(name string) bool {
	return strings.HasPrefix(name, stagingPrefix) || strings.HasPrefix(name, trashPrefix)
}

// removeLeftovers removes the working directories a killed extraction left.
// A staging directory only ever held the new entries, and goes. A trash
// directory holds entries that were being replaced: each one the destination
// lacks goes back (the killed move had set it aside, and not yet put its
// replacement in place), and the rest go.
func (d *destination) removeLeftovers() error {
	names, err := readDirNames(d.root, ".")
	if err != nil {
		return fmt.Errorf("list %s: %w", d.dir, err)
	}
	for _, name := range names {
		prefix := workDirPrefix(name)
		if prefix == "" {
			continue
		}
		if fi, err := d.root.Lstat(name); err != nil || !fi.IsDir() {
			continue // not a directory extract made
		}
		if prefix == trashPrefix {
			if err := d.restore(name); err != nil {
				return err
			}
		}
		if err := d.root.RemoveAll(name); err != nil {
			return fmt.Errorf("remove %s, left by an extraction that was stopped: %w", filepath.Join(d.dir, name), err)
		}
	}
	return nil
}

// restore moves back each entry of the trash directory that the destination
// lacks.
func (d *destination) restore(trash string) error {
	names, err := readDirNames(d.root, trash)
	if err != nil {
		return fmt.Errorf("list %s: %w", filepath.Join(d.dir, trash), err)
	}
	for _, name := range names {
		_, err := d.root.Lstat(name)
		if err == nil {
			continue // replaced by the killed extraction
		}
		if errors.Is(err, fs.ErrNotExist) {
			err = d.root.Rename(trash+"/"+name, name)
		}
		if err != nil {
			return fmt.Errorf("put back %s, set aside by an extraction that was stopped: %w", filepath.Join(d.dir, name), err)
		}
	}
	return nil
}

// readDirNames lists the directory name beneath root.
func readDirNames(root *os.Root, name string) ([]string, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

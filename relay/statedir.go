package relay

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A receiver's state folder (ReceiverOptions.Dir) is treecast's alone. It
// holds the receiver's lock and node id, the record of applied sessions, and
// the spool; treecast removes files there, but only those it made, by the
// exact names it gives them. None of these parts may be a symlink: a
// symlinked spool would have spool files written, and removed, wherever it
// points. The folder itself may be one.

// Parts of a state folder, by name.
const (
	spoolDirName = "spool"
	lockName     = "lock"
	nodeIDName   = "node-id"
	appliedName  = "applied.json"
)

// CheckStateDir refuses a state folder dir in which treecast would write
// through a symlink. Parts that do not exist yet are fine.
func CheckStateDir(dir string) error {
	for _, part := range []string{lockName, nodeIDName, appliedName, appliedName + ".tmp", spoolDirName} {
		if err := checkStatePart(dir, part); err != nil {
			return err
		}
	}
	return nil
}

// checkStatePart refuses dir/part when it is a symlink.
func checkStatePart(dir, part string) error {
	p := filepath.Join(dir, part)
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("state folder: %w", err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symlink, and the parts of a state folder must be treecast's own (it writes and removes files there): remove the link, or give this receiver a state folder of its own, such as /var/lib/treecast", p)
	}
	return nil
}

// isSpoolName reports whether name is one treecast gives a spool file: a
// package's SHA-256 in lowercase hex, then .part, .have or .have.tmp.
func isSpoolName(name string) bool {
	sum, ext, _ := strings.Cut(name, ".")
	if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
		return false
	}
	return ext == "part" || ext == "have" || ext == "have.tmp"
}

// writeStateFile replaces path with b by a rename, never writing through a
// symlink at its temporary name.
func writeStateFile(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := openNoFollow(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		// On disk before it replaces the old one: a power cut leaves one
		// or the other whole, never an empty file in its place.
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		syncDir(filepath.Dir(path))
	}
	return err
}

// syncDir makes a rename in dir durable, where the platform can.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// readNoFollow reads the file at path, unless it is a symlink.
func readNoFollow(path string) ([]byte, error) {
	f, err := openNoFollow(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// InStateDir reports whether path is the state folder dir or lies inside
// it, with symlinks resolved as far as both exist.
func InStateDir(dir, path string) (bool, error) {
	d, err := resolvePath(dir)
	if err != nil {
		return false, err
	}
	p, err := resolvePath(path)
	if err != nil {
		return false, err
	}
	rel, err := filepath.Rel(d, p)
	if err != nil {
		return false, err
	}
	return rel == "." || (rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))), nil
}

// resolvePath makes p absolute and resolves the symlinks of its longest
// existing prefix; the rest, yet to be created, is kept as it is.
func resolvePath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	var rest []string
	for cur := abs; ; cur = filepath.Dir(cur) {
		real, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(append([]string{real}, rest...)...), nil
		}
		if !errors.Is(err, fs.ErrNotExist) || cur == filepath.Dir(cur) {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
	}
}

// ErrStateDirInUse means another receiver holds the state folder.
var ErrStateDirInUse = errors.New("in use by another treecast receiver")

// LockStateDir makes the state folder dir this process's own, creating
// it, until unlock; a second receiver on it gets ErrStateDirInUse.
func LockStateDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", dir, ErrStateDirInUse)
	}
	return func() { f.Close() }, nil
}

// LoadNodeID reads this receiver's id from the state folder dir, creating
// it on first use, so a restarted receiver is recognised and resumes.
func LoadNodeID(dir string) (NodeID, error) {
	path := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		if id, err := ParseNodeID(strings.TrimSpace(string(b))); err == nil {
			return id, nil
		}
	}
	var id NodeID
	if _, err := rand.Read(id[:]); err != nil {
		return id, err
	}
	if err := os.WriteFile(path, []byte(id.String()+"\n"), 0o600); err != nil {
		return id, fmt.Errorf("state dir: %w", err)
	}
	return id, nil
}

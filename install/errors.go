package install

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrUnknownFormat is returned (wrapped, naming the package) when Extract is
// set and the package content is not an archive this package can unpack.
var ErrUnknownFormat = errors.New("not a supported archive: want .tar, .tar.gz (.tgz) or .zip, recognised by content, not by name")

// UnsafeEntryError reports an archive entry that was refused: it would land
// outside the extraction directory, write through a link, create a device, or
// is otherwise not something a package may install. Nothing is written when an
// archive holds such an entry.
type UnsafeEntryError struct {
	Entry  string // the entry's name exactly as stored in the archive
	Reason string // why it was refused, e.g. "path escapes the destination"
}

func (e *UnsafeEntryError) Error() string {
	return fmt.Sprintf("unsafe archive entry %q: %s", e.Entry, e.Reason)
}

// ExecError reports a command that ran and did not succeed.
type ExecError struct {
	ExitCode   int    // the exit status; -1 when the command was killed by a signal
	Signal     string // the signal that killed the command ("terminated"), empty when it exited
	StderrTail string // the last lines of its standard error (at most 20 lines, 2 KiB)
}

func (e *ExecError) Error() string {
	msg := fmt.Sprintf("command exited with status %d", e.ExitCode)
	if e.Signal != "" {
		msg = "command was killed by a signal (" + e.Signal + ")"
	}
	if e.StderrTail == "" {
		return msg + " (no stderr output)"
	}
	return msg + ": " + e.StderrTail
}

// IsNoSpace reports whether err was caused by a full disk or an exhausted
// quota on the destination. Freeing space and applying again may succeed.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

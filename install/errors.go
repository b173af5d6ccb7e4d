package install

import (
	"errors"
	"fmt"
	"time"
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

// LimitError reports an archive refused because unpacking it would pass one
// of the extraction caps of a Config. The destination is left as it was.
type LimitError struct {
	Setting string // the Config key of the cap: "max_extract_size" or "max_extract_entries"
	Max     int64  // the cap: bytes, or entries
	// FreeOf is set when no max_extract_size was given and the size cap is the
	// free space of this directory's filesystem less a margin.
	FreeOf string
}

func (e *LimitError) Error() string {
	switch {
	case e.Setting == "max_extract_entries":
		return fmt.Sprintf("archive has more than %d entries, the cap max_extract_entries; raise it if the package is meant to hold that many", e.Max)
	case e.FreeOf != "":
		return fmt.Sprintf("archive unpacks to more than %s, the free space of %s less 1/20 (the size cap when max_extract_size is not set); free space there, or set max_extract_size if the package fits after all", sizeText(e.Max), e.FreeOf)
	}
	return fmt.Sprintf("archive unpacks to more than %s, the cap max_extract_size; raise it if the package is meant to be that large", sizeText(e.Max))
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

// ExecTimeoutError reports a command still running when its time was up
// (Config.ExecTimeout): it and every process it started were killed.
type ExecTimeoutError struct {
	Timeout time.Duration
}

func (e *ExecTimeoutError) Error() string {
	return fmt.Sprintf("command still running %s after it had the whole package: killed (the limit is exec_timeout; raise it if the command is meant to run longer)", e.Timeout)
}

// IsNoSpace reports whether err was caused by a full disk or an exhausted
// quota on the destination, or by an archive larger than the free space left
// it. Freeing space and applying again may succeed.
func IsNoSpace(err error) bool {
	var le *LimitError
	if errors.As(err, &le) && le.FreeOf != "" {
		return true
	}
	return isDiskFull(err)
}

package install

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Config says what Apply does with a verified package. Any combination of the
// three actions may be set; they run in the order To, Extract, Exec.
type Config struct {
	// To places a copy of the package atomically at To/<package name>,
	// replacing an existing file of that name. To is created if missing.
	To string `toml:"to"`

	// Extract unpacks a .tar, .tar.gz (.tgz) or .zip package into this
	// directory, created if missing. Each top-level entry of the archive
	// replaces the same-named entry of the directory as a whole: directories
	// are not merged, and entries the archive does not name are kept. Point it
	// at a directory the package owns.
	Extract string `toml:"extract"`

	// MaxExtractSize caps the bytes an extraction writes: file content as
	// unpacked, sparse files at their full size, e.g. "2GiB". "" caps it at
	// the free space of Extract's filesystem less 1/20. An archive over the
	// cap fails the apply, and Extract is left as it was.
	MaxExtractSize string `toml:"max_extract_size"`

	// MaxExtractEntries caps the members (files, directories, links) an
	// archive may hold, at most 1,048,576; 0 means the default, 100,000. An
	// archive with more fails the apply, and Extract is left as it was.
	MaxExtractEntries int `toml:"max_extract_entries"`

	// Exec is run with `sh -c` (on Windows `cmd.exe /d /s /c`) in treecast's
	// working directory once the other actions succeeded. Its environment is treecast's plus TREECAST_FILE (the
	// placed copy when To is set, else the spool file), TREECAST_NAME and
	// TREECAST_SHA256.
	Exec string `toml:"exec"`
	// Stdin runs Exec once from the start of the transfer and feeds it the
	// verified package on its stdin, in order (Stream), instead of running
	// it on the whole file at the end.
	Stdin bool `toml:"stdin"`
	// ExecTimeout bounds how long Exec may run once it has the whole
	// package (with Stdin, once its stdin has ended): past it, the command
	// and every process it started are killed and the apply fails. 0: no
	// bound.
	ExecTimeout time.Duration `toml:"exec_timeout"`
}

// DefaultConfig returns a Config that applies nothing; Validate rejects it
// until the operator names at least one action.
func DefaultConfig() Config {
	return Config{
		To:      "", // no copy: where a package belongs is the operator's call
		Extract: "", // no unpacking: only archives can be extracted, and only the operator knows which are
		Exec:    "", // no command: running code on every receiver must be asked for explicitly

		MaxExtractSize:    "",                // the free space of the destination, less a margin: a bomb fails before the disk is full
		MaxExtractEntries: defaultMaxEntries, // more files than a Linux source tree; each costs an inode and checker memory
		ExecTimeout:       time.Hour,         // a restart hook or installer still running after an hour hangs, and holds an agent from every session after
	}
}

// ErrNothingToApply is a Config with none of To, Extract and Exec set.
var ErrNothingToApply = errors.New("nothing to apply: set To, Extract or Exec")

// A ConfigError is a Config field set to a value Apply cannot use.
type ConfigError struct {
	Field string // the field as Config names it, e.g. "Extract"
	Value string // the value it holds
	Want  string // what it accepts
}

func (e *ConfigError) Error() string { return fmt.Sprintf("%s %q: want %s", e.Field, e.Value, e.Want) }

// Validate reports a Config that cannot be applied: ErrNothingToApply, or
// the first field Apply cannot use as a *ConfigError.
func (c Config) Validate() error {
	if c.To == "" && c.Extract == "" && c.Exec == "" {
		return ErrNothingToApply
	}
	if err := checkDir("To", c.To); err != nil {
		return err
	}
	if err := checkDir("Extract", c.Extract); err != nil {
		return err
	}
	if c.Extract != "" && isFSRoot(c.Extract) {
		return &ConfigError{"Extract", c.Extract, "the directory the package owns, not the root directory, where top-level archive entries would replace /usr, /etc and the like"}
	}
	if c.MaxExtractSize != "" {
		if _, err := ParseSize(c.MaxExtractSize); err != nil {
			return &ConfigError{"MaxExtractSize", c.MaxExtractSize, "a positive size such as 2GiB or 500MB, or empty for the free space of the destination less a margin"}
		}
	}
	if c.MaxExtractEntries < 0 || c.MaxExtractEntries > maxEntries {
		return &ConfigError{"MaxExtractEntries", fmt.Sprint(c.MaxExtractEntries), fmt.Sprintf("1 to %d (0 for the default, %d): the checker keeps every name in memory", maxEntries, defaultMaxEntries)}
	}
	if c.ExecTimeout < 0 {
		return &ConfigError{"ExecTimeout", c.ExecTimeout.String(), "a duration such as 30m, or 0 for no bound"}
	}
	if c.Stdin && c.Exec == "" {
		return &ConfigError{"Stdin", "true", "Exec set too: it is the command the package is fed to"}
	}
	if c.Exec != "" {
		if strings.TrimSpace(c.Exec) == "" {
			return &ConfigError{"Exec", c.Exec, "a shell command such as 'systemctl restart app', not a blank one"}
		}
		if strings.ContainsRune(c.Exec, 0) {
			return &ConfigError{"Exec", c.Exec, "a shell command without a NUL byte"}
		}
	}
	return nil
}

// isFSRoot reports whether dir is the root of a filesystem: "/" (or `C:\`
// on Windows).
func isFSRoot(dir string) bool {
	c := filepath.Clean(dir)
	return c != "." && filepath.Dir(c) == c
}

// checkDir validates an optional directory field.
func checkDir(field, dir string) error {
	switch {
	case dir == "":
		return nil
	case strings.TrimSpace(dir) == "":
		return &ConfigError{field, dir, "a directory such as /opt/app, not a blank one"}
	case strings.TrimSpace(dir) != dir:
		return &ConfigError{field, dir, "a directory without leading or trailing spaces"}
	case strings.ContainsRune(dir, 0):
		return &ConfigError{field, dir, "a directory without a NUL byte"}
	}
	return nil
}

// Describe returns a short human text of the configured actions, in the order
// they run, e.g. "copy to /opt/pkg, run `systemctl restart app`".
func (c Config) Describe() string {
	var parts []string
	if c.To != "" {
		parts = append(parts, "copy to "+c.To)
	}
	if c.Extract != "" {
		parts = append(parts, "extract into "+c.Extract)
	}
	if c.Exec != "" {
		parts = append(parts, "run `"+c.Exec+"`")
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

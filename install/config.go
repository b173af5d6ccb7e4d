package install

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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

	// Exec is run with `sh -c` in treecast's working directory once the other
	// actions succeeded. Its environment is treecast's plus TREECAST_FILE (the
	// placed copy when To is set, else the spool file), TREECAST_NAME and
	// TREECAST_SHA256.
	Exec string `toml:"exec"`
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
	}
}

// Validate reports a Config that cannot be applied.
func (c Config) Validate() error {
	if c.To == "" && c.Extract == "" && c.Exec == "" {
		return errors.New("nothing to apply: give --to DIR, --extract DIR or --exec CMD")
	}
	if err := checkDir("to", c.To); err != nil {
		return err
	}
	if err := checkDir("extract", c.Extract); err != nil {
		return err
	}
	if c.Extract != "" && filepath.Clean(c.Extract) == "/" {
		return errors.New("--extract /: refusing to extract into the root directory, where top-level archive entries would replace /usr, /etc and the like; give the directory the package owns")
	}
	if c.MaxExtractSize != "" {
		if _, err := parseSize(c.MaxExtractSize); err != nil {
			return fmt.Errorf("--max-extract-size: %w", err)
		}
	}
	if c.MaxExtractEntries < 0 || c.MaxExtractEntries > maxEntries {
		return fmt.Errorf("--max-extract-entries %d: want 1 to %d (0 for the default, %d): the checker keeps every name in memory", c.MaxExtractEntries, maxEntries, defaultMaxEntries)
	}
	if c.Exec != "" {
		if strings.TrimSpace(c.Exec) == "" {
			return errors.New("--exec: command is blank; give a shell command such as 'systemctl restart app'")
		}
		if strings.ContainsRune(c.Exec, 0) {
			return errors.New("--exec: command contains a NUL byte")
		}
	}
	return nil
}

// checkDir validates an optional directory setting; flag is its name.
func checkDir(flag, dir string) error {
	switch {
	case dir == "":
		return nil
	case strings.TrimSpace(dir) == "":
		return fmt.Errorf("--%s %q: directory is blank; give a path such as /opt/app", flag, dir)
	case strings.TrimSpace(dir) != dir:
		return fmt.Errorf("--%s %q: directory has leading or trailing spaces; remove them", flag, dir)
	case strings.ContainsRune(dir, 0):
		return fmt.Errorf("--%s %q: directory contains a NUL byte", flag, dir)
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

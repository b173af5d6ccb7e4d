package install

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// entryKind is what an archive entry creates.
type entryKind int

const (
	kindFile     entryKind = iota + 1
	kindDir                // explicit, or implied by a deeper entry
	kindSymlink            // target in entry.link
	kindHardlink           // target (an earlier file of the archive) in entry.link
	kindSpecial            // device, fifo, socket or unknown type: always refused
)

// entry is one archive member, the same for tar and zip.
type entry struct {
	name    string      // as stored in the archive
	kind    entryKind   //
	mode    fs.FileMode // permission bits as stored
	link    string      // symlink or hard link target
	special string      // for kindSpecial, what it is ("character device")
	size    int64       // for kindFile, the content's length as the archive states it
	data    io.Reader   // for kindFile, the content; valid until the next entry
}

// Limits on an archive's index. They bound the memory the checker needs, not
// the bytes extracted (Config caps those, and the entries below maxEntries): a
// filesystem refuses longer names anyway, and no sane package holds a million
// entries.
const (
	maxEntries  = 1 << 20
	maxNameLen  = 4096
	maxNameData = 256 << 20 // total bytes of names remembered
)

// checker applies the safety rules to a stream of entries. It remembers what
// each earlier entry created, so it can refuse writing through a link, a hard
// link to something that is not an earlier file, and duplicates. The same
// checker logic runs in the validation pass and again, entry by entry, while
// extracting.
type checker struct {
	seen       map[string]entryKind
	entries    int
	maxEntries int
	nameBytes  int
}

// newChecker returns a checker that refuses the entry after the first
// maxEntries with a *LimitError.
func newChecker(maxEntries int) *checker {
	return &checker{seen: make(map[string]entryKind), maxEntries: maxEntries}
}

// check returns the cleaned, slash-separated name e is written under, or
// skip=true for a directory entry naming the destination itself ("./"), which
// tar writes for `tar -C dir .` and which changes nothing.
func (c *checker) check(e *entry) (name string, skip bool, err error) {
	unsafe := func(format string, args ...any) error {
		return &UnsafeEntryError{Entry: e.name, Reason: fmt.Sprintf(format, args...)}
	}
	c.entries++
	if c.entries > c.maxEntries {
		return "", false, &LimitError{Setting: "max_extract_entries", Max: int64(c.maxEntries)}
	}
	c.nameBytes += len(e.name) + len(e.link)
	if c.nameBytes > maxNameData {
		return "", false, fmt.Errorf("archive names take more than %d MiB", maxNameData>>20)
	}

	switch {
	case e.name == "":
		return "", false, unsafe("empty name")
	case strings.ContainsRune(e.name, 0):
		return "", false, unsafe("name contains a NUL byte")
	case len(e.name) > maxNameLen:
		return "", false, unsafe("name is longer than %d bytes", maxNameLen)
	case strings.HasPrefix(e.name, "/"):
		return "", false, unsafe("absolute path")
	}
	name = path.Clean(e.name)
	if name == ".." || strings.HasPrefix(name, "../") {
		return "", false, unsafe("path escapes the destination")
	}
	if name == "." {
		if e.kind == kindDir {
			return "", true, nil
		}
		return "", false, unsafe("entry would replace the destination directory")
	}
	if e.kind == kindSpecial {
		return "", false, unsafe("%s not allowed", e.special)
	}
	if top, _, _ := strings.Cut(name, "/"); isWorkName(top) {
		return "", false, unsafe("name is reserved for treecast's working directories")
	}

	// Every parent must be a directory: a file cannot hold children, and a
	// symlink or hard link must not be written through.
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		parent := name[:i]
		switch c.seen[parent] {
		case 0:
			c.seen[parent] = kindDir
		case kindDir:
		case kindSymlink:
			return "", false, unsafe("path goes through symlink %q", parent)
		default:
			return "", false, unsafe("parent %q is not a directory", parent)
		}
	}
	if prev := c.seen[name]; prev != 0 {
		if prev == kindDir && e.kind == kindDir {
			return name, false, nil
		}
		return "", false, unsafe("appears more than once in the archive")
	}

	switch e.kind {
	case kindSymlink:
		if reason := checkSymlink(name, e.link); reason != "" {
			return "", false, unsafe("%s", reason)
		}
	case kindHardlink:
		if reason := c.checkHardlink(e.link); reason != "" {
			return "", false, unsafe("%s", reason)
		}
	}
	c.seen[name] = e.kind
	return name, false, nil
}

// checkSymlink returns why a symlink at name pointing to target could reach
// outside the destination, or "". The target must be relative, and any ".."
// must come first: leading ".." climb through real directories (parents are
// never links), so counting them against the link's depth is exact; a ".."
// after a name could climb out of wherever a symlink among those names led.
func checkSymlink(name, target string) string {
	switch {
	case target == "":
		return "symlink has an empty target"
	case strings.ContainsRune(target, 0):
		return "symlink target contains a NUL byte"
	case len(target) > maxNameLen:
		return fmt.Sprintf("symlink target is longer than %d bytes", maxNameLen)
	case strings.HasPrefix(target, "/"):
		return fmt.Sprintf("symlink target %q is absolute", target)
	}
	up, named := 0, false
	for _, part := range strings.Split(target, "/") {
		switch part {
		case "", ".":
		case "..":
			if named {
				return fmt.Sprintf("symlink target %q has \"..\" after a name and could escape the destination", target)
			}
			up++
		default:
			named = true
		}
	}
	if up > strings.Count(name, "/") {
		return fmt.Sprintf("symlink target %q escapes the destination", target)
	}
	return ""
}

// checkHardlink returns why a hard link to target is refused, or "": the
// target must be a regular file extracted earlier from the same archive.
func (c *checker) checkHardlink(target string) string {
	if target == "" || strings.ContainsRune(target, 0) || len(target) > maxNameLen {
		return "hard link has an empty or malformed target"
	}
	t := path.Clean(target)
	if strings.HasPrefix(target, "/") || t == ".." || strings.HasPrefix(t, "../") {
		return fmt.Sprintf("hard link target %q escapes the destination", target)
	}
	if k := c.seen[t]; k != kindFile && k != kindHardlink {
		return fmt.Sprintf("hard link target %q is not an earlier file in the archive", target)
	}
	return ""
}

// linkTarget returns the cleaned name a checked hard link points to.
func linkTarget(e *entry) string {
	return path.Clean(e.link)
}

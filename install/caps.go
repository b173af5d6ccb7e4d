package install

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"strconv"
	"strings"
)

// Defaults and bounds of the extraction caps.
const (
	// defaultMaxEntries is the entry cap when Config.MaxExtractEntries is 0:
	// more files than a Linux source tree holds (about 90,000).
	defaultMaxEntries = 100_000
	// freeMarginDiv: a size cap taken from free space leaves 1/20 of it to the
	// rest of the machine and to the filesystem's own blocks.
	freeMarginDiv = 20
)

// extractCaps are the limits of one extraction, resolved from a Config.
type extractCaps struct {
	bytes   int64  // file content, as unpacked
	entries int    // archive members of any kind
	freeOf  string // set when bytes is the free space of this directory less the margin
}

// caps resolves the limits for extracting into dir. With no size set, the
// size cap is the free space of dir's filesystem (of its nearest existing
// parent when dir is yet to be created) less a margin.
func (c Config) caps(dir string) (extractCaps, error) {
	caps := extractCaps{entries: c.MaxExtractEntries}
	if caps.entries == 0 {
		caps.entries = defaultMaxEntries
	}
	if c.MaxExtractSize != "" {
		n, err := ParseSize(c.MaxExtractSize)
		if err != nil {
			return caps, fmt.Errorf("max_extract_size: %w", err)
		}
		caps.bytes = n
		return caps, nil
	}
	free, at, err := freeSpace(dir)
	if err != nil {
		return caps, err
	}
	caps.bytes, caps.freeOf = free-free/freeMarginDiv, at
	return caps, nil
}

// sizeErr is the error for an archive whose content passes the size cap.
func (c extractCaps) sizeErr() error {
	return &LimitError{Setting: "max_extract_size", Max: c.bytes, FreeOf: c.freeOf}
}

// freeSpace returns the bytes an unprivileged writer may still use on the
// filesystem of dir, or of its nearest existing parent, and that directory.
func freeSpace(dir string) (int64, string, error) {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		free, err := diskFree(p)
		if err == nil {
			return free, p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) || p == filepath.Dir(p) {
			return 0, p, fmt.Errorf("free space of %s: %w", p, err)
		}
	}
}

// sizeUnits are the units ParseSize takes, longest first.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
}

// SizeForms says which sizes ParseSize takes.
const SizeForms = "a whole number of bytes with an optional unit: KiB, MiB, GiB (binary: 1MiB = 1048576) or KB, MB, GB (decimal: 1MB = 1000000)"

// ParseSize reads a positive size such as 1048576, 512KiB, 1MiB, 4M or 2GB;
// its error lists the forms it takes.
func ParseSize(s string) (int64, error) {
	t, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: want %s", s, SizeForms)
	}
	return n * mult, nil
}

// sizeText writes n bytes for a person: "1.5 GiB", "512 B".
func sizeText(n int64) string {
	if n < 1<<10 {
		return fmt.Sprintf("%d B", n)
	}
	f, unit := float64(n)/(1<<10), "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB", "PiB", "EiB"} {
		if f < 1<<10 {
			break
		}
		f, unit = f/(1<<10), u
	}
	return fmt.Sprintf("%.1f %s", f, unit)
}

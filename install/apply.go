package install

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Package is a verified file on local disk, ready to apply.
type Package struct {
	Path   string // the verified file (the spool); only ever read
	Name   string // the package name, a plain file name
	Size   int64  // its size in bytes
	SHA256 string // its SHA-256, 64 lowercase hex digits
	// Checked: the caller read Path back whole and it matched SHA256;
	// To then copies or links it without hashing it again.
	Checked bool
	// Output, if not nil, takes what Exec writes to its stdout and stderr,
	// as it comes (nil: stdout is discarded).
	Output io.Writer
}

// Apply runs the actions of cfg on pkg in the order To, Extract, Exec. The first
// failure stops it and is returned, wrapped with the action that failed.
// TREECAST_FILE is the placed copy when To is set, else pkg.Path.
func Apply(ctx context.Context, cfg Config, pkg Package) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := pkg.check(); err != nil {
		return err
	}
	file := pkg.Path
	if cfg.To != "" {
		placed, err := place(ctx, cfg.To, pkg)
		if err != nil {
			return fmt.Errorf("copy %s to %s: %w", pkg.Name, cfg.To, err)
		}
		file = placed
	}
	if cfg.Extract != "" {
		if err := extract(ctx, cfg, pkg); err != nil {
			return fmt.Errorf("extract %s into %s: %w", pkg.Name, cfg.Extract, err)
		}
	}
	if cfg.Exec != "" {
		abs, err := filepath.Abs(file)
		if err != nil {
			return fmt.Errorf("run `%s`: %w", cfg.Exec, err)
		}
		env := []string{
			"TREECAST_FILE=" + abs,
			"TREECAST_NAME=" + pkg.Name,
			"TREECAST_SHA256=" + pkg.SHA256,
		}
		if err := run(ctx, cfg.Exec, env, pkg.Output, cfg.ExecTimeout); err != nil {
			return fmt.Errorf("run `%s`: %w", cfg.Exec, err)
		}
	}
	return nil
}

// Stream runs cfg.Exec once with the package fed to its stdin from in, in
// order, as the caller gets it verified; TREECAST_NAME and TREECAST_SHA256
// are set, TREECAST_FILE is not (the file is not whole yet). Its stdout and
// stderr go to out, if it is not nil. A non-zero exit fails it. Stream runs
// only Exec: To and Extract need a whole file.
func Stream(ctx context.Context, cfg Config, name, sha256 string, in io.Reader, out io.Writer) error {
	if cfg.Exec == "" {
		return ErrNothingToApply
	}
	env := []string{"TREECAST_NAME=" + name, "TREECAST_SHA256=" + sha256}
	if err := runFed(ctx, cfg.Exec, env, in, out, cfg.ExecTimeout); err != nil {
		return fmt.Errorf("run `%s` on the package streamed: %w", cfg.Exec, err)
	}
	return nil
}

// check re-validates what the caller promised about pkg: a plain name, a
// well-formed hash, and a regular file of the stated size at Path.
func (p Package) check() error {
	if !validName(p.Name) {
		return fmt.Errorf("package name %q is not a plain file name", p.Name)
	}
	if !validSHA256(p.SHA256) {
		return fmt.Errorf("package %s: sha256 %q is not 64 lowercase hex digits", p.Name, p.SHA256)
	}
	if p.Path == "" {
		return fmt.Errorf("package %s: no file path", p.Name)
	}
	fi, err := os.Stat(p.Path)
	if err != nil {
		return fmt.Errorf("package %s: %w", p.Name, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("package %s: %s is not a regular file", p.Name, p.Path)
	}
	if fi.Size() != p.Size {
		return fmt.Errorf("package %s: %s is %d bytes, expected %d; it changed after it was verified", p.Name, p.Path, fi.Size(), p.Size)
	}
	return nil
}

func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

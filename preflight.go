package main

import (
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/treecast/treecast/install"
	"github.com/treecast/treecast/relay"
)

// Checks of the places a command will write, made before anything is sent:
// a mistake found after the whole transfer costs the whole transfer. Each
// is a usage error (exit 2) naming the flag or key that set the place.

// checkTargets refuses a --to or --extract directory that cannot be
// created or written, is a file, or is in a kernel filesystem (/proc, /sys).
func (s *settings) checkTargets(cmd string) error {
	for _, t := range []struct{ key, path string }{{"install.to", s.Install.To}, {"install.extract", s.Install.Extract}} {
		if t.path == "" {
			continue
		}
		if err := install.WritableDir(t.path); err != nil {
			return usage("%s: %s %s: %v", cmd, s.name(t.key), t.path, err)
		}
	}
	return nil
}

// checkReport refuses a --report path whose folder is missing or not
// writable, or that is a directory: the report is written at the end, in
// every outcome, and must not fail then.
func (s *settings) checkReport(cmd string) error {
	path := s.Seed.Report
	if path == "" {
		return nil
	}
	name := s.name("seed.report")
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return usage("%s: %s %s is a directory: give the path of the JSON file to write, such as %s", cmd, name, path, filepath.Join(path, "report.json"))
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return usage("%s: %s %s: the folder %s does not exist: create it (mkdir -p %s) or give another path", cmd, name, path, dir, dir)
	case err != nil:
		return usage("%s: %s %s: %v", cmd, name, path, err)
	case !st.IsDir():
		return usage("%s: %s %s: %s is a file, not a folder: give another path", cmd, name, path, dir)
	}
	if err := install.WritableDir(dir); err != nil {
		return usage("%s: %s %s: %v", cmd, name, path, err)
	}
	return nil
}

// seedKey loads the seed key. An explicit one (--key, TREECAST_KEY,
// [seed] key) must exist: a new key there would be one no receiver
// trusts. Only the default key is created on first use.
func (s *settings) seedKey(cmd string) (key ed25519.PrivateKey, path string, created bool, err error) {
	if s.Seed.Key == "" {
		path = defaultKeyPath()
		key, created, err = relay.LoadOrCreateKey(path)
		if err != nil {
			return nil, path, false, failed("%s: key: %v", cmd, err)
		}
		return key, path, created, nil
	}
	path = s.Seed.Key
	key, err = relay.LoadKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, false, usage("%s: %s %s: no such key file, and a new key there would be one no receiver trusts: give the path of your seed key, make one with `treecast keygen --out %s` (then receivers --trust it), or leave %s out to sign with the default key %s",
			cmd, s.name("seed.key"), path, path, s.name("seed.key"), defaultKeyPath())
	}
	if err != nil {
		return nil, path, false, failed("%s: key: %v", cmd, err)
	}
	return key, path, false, nil
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/treecast/treecast/install"
)

// A setting out of range in the --config file exits 2 and names the key, its
// value and what it accepts, before anything starts (a zero heartbeat once
// panicked the receiver and the seed).
func TestBadSettingInFileNamesTheKey(t *testing.T) {
	dir := t.TempDir()
	pkg := writeFile(t, "pkg.bin", "payload")
	join := []string{"join", "--trust-any", "--to", dir, "--dir", dir, "--timeout", "1s"}
	seed := []string{"seed", pkg}
	for _, tc := range []struct {
		name, body string
		cmd        []string
		want       []string
	}{
		{"zero heartbeat, join", "[relay]\nheartbeat = \"0s\"\n", join,
			[]string{`[relay] heartbeat = "0s": want from 10ms to half of [relay] dead_after (4s)`}},
		{"zero heartbeat, serve", "[relay]\nheartbeat = \"0s\"\n", []string{"serve", "--trust-any", "--to", dir, "--dir", dir},
			[]string{`[relay] heartbeat = "0s"`}},
		{"zero heartbeat, seed", "[relay]\nheartbeat = \"0s\"\n", seed,
			[]string{`[relay] heartbeat = "0s"`}},
		{"heartbeat over half of dead_after", "[relay]\nheartbeat = \"3s\"\n", join,
			[]string{`[relay] heartbeat = "3s": want`, "half of [relay] dead_after (4s)"}},
		{"dead_after under two default heartbeats", "[relay]\ndead_after = \"600ms\"\n", join,
			[]string{`[relay] heartbeat = "500ms" (the default)`, "half of [relay] dead_after (600ms)"}},
		{"dead_after too long", "[relay]\ndead_after = \"1h\"\nseed_timeout = \"2h\"\n", join,
			[]string{`[relay] dead_after = "1h0m0s": want from 20ms to 10m0s`}},
		{"seed_timeout under dead_after", "[relay]\nseed_timeout = \"1s\"\n", join,
			[]string{`[relay] seed_timeout = "1s": want from [relay] dead_after (4s)`}},
		{"three trees", "[relay]\ntrees = 3\n", seed,
			[]string{`[relay] trees = 3: want 1 (one binary tree) or 2`}},
		{"no trees", "[relay]\ntrees = 0\n", seed, []string{`[relay] trees = 0`}},
		{"slow_after under two heartbeats", "[relay]\nslow_after = \"500ms\"\n", seed,
			[]string{`[relay] slow_after = "500ms": want from twice [relay] heartbeat (1s)`}},
		{"zero dial_timeout", "[relay]\ndial_timeout = \"0s\"\n", seed, []string{`[relay] dial_timeout = "0s"`}},
		{"zero session_ttl", "[relay]\nsession_ttl = \"0s\"\n", seed, []string{`[relay] session_ttl = "0s": want from 1m0s`}},
		{"bad listen", "[relay]\nlisten = \"7070\"\n", join, []string{`[relay] listen = "7070": want a TCP address host:port`}},
		{"zero round", "[discover]\nround = \"0s\"\n", []string{"peers"}, []string{`[discover] round = "0s": want from 50ms to 1m0s`}},
		{"extract into /", "[install]\nextract = \"/\"\n", []string{"join", "--trust-any", "--dir", dir},
			[]string{`[install] extract = "/": want the directory the package owns`}},
		{"odd chunk size", "[seed]\nchunk_size = \"5000\"\n", seed,
			[]string{`[seed] chunk_size = "5000": want a size from 4KiB to 16MiB, a multiple of 4KiB`}},
		{"negative expect", "[seed]\nexpect = -1\n", seed, []string{`[seed] expect = -1: want 0`}},
		{"negative wait", "[seed]\nwait = \"-1s\"\n", seed, []string{`[seed] wait = "-1s": want 0s`}},
		{"negative timeout", "[receiver]\ntimeout = \"-1s\"\n", []string{"join", "--trust-any", "--to", dir, "--dir", dir},
			[]string{`[receiver] timeout = "-1s": want 0s (wait forever) or longer`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "c.toml", tc.body)
			args := append([]string{tc.cmd[0], "--config", path}, tc.cmd[1:]...)
			code, err := runApp(t, args...)
			if code != exitUsage || err == nil {
				t.Fatalf("exit %d, err %v; want exit %d", code, err, exitUsage)
			}
			for _, w := range append([]string{tc.cmd[0] + ": config " + path + ": "}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// A flag or TREECAST_* variable gets the same check as the file, named by its flag.
func TestBadSettingByFlagNamesTheFlag(t *testing.T) {
	dir := t.TempDir()
	pkg := writeFile(t, "pkg.bin", "payload")
	file := writeFile(t, "c.toml", "[relay]\nlisten = \"bad\"\n[seed]\nchunk_size = \"lots\"\n")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"listen", nil, []string{"join", "--listen", "nope", "--trust-any", "--to", dir, "--dir", dir}, `join: --listen "nope": want a TCP address host:port`},
		{"listen by variable", map[string]string{"TREECAST_LISTEN": "nope"}, []string{"join", "--trust-any", "--to", dir, "--dir", dir}, `join: --listen "nope": want a TCP address host:port`},
		{"chunk size", nil, []string{"seed", "--chunk-size", "5000", pkg}, `seed: --chunk-size "5000": want a size from 4KiB to 16MiB, a multiple of 4KiB`},
		{"chunk size too small", nil, []string{"seed", "--chunk-size", "1KiB", pkg}, `seed: --chunk-size "1KiB": want`},
		{"chunk size by variable", map[string]string{"TREECAST_CHUNK_SIZE": "32MiB"}, []string{"seed", pkg}, `seed: --chunk-size "32MiB": want`},
		{"expect", nil, []string{"seed", "--expect", "-2", pkg}, `seed: --expect -2: want 0`},
		{"wait", nil, []string{"seed", "--wait", "-1s", pkg}, `seed: --wait -1s: want 0s`},
		{"timeout", nil, []string{"join", "--timeout", "-1s", "--trust-any", "--to", dir, "--dir", dir}, `join: --timeout -1s: want 0s (wait forever) or longer`},
		{"extract", nil, []string{"serve", "--extract", "//", "--trust-any", "--dir", dir}, `serve: --extract "//": want the directory the package owns`},
		{"exec", nil, []string{"join", "--exec", " ", "--trust-any", "--dir", dir}, `join: --exec " ": want a shell command`},
		// The flag wins over a bad file value, and is checked in its place.
		{"flag over a bad file", nil, []string{"join", "--config", file, "--listen", "x:y:z", "--trust-any", "--to", dir, "--dir", dir}, `join: --listen "x:y:z"`},
		{"chunk size over a bad file", nil, []string{"seed", "--config", file, "--chunk-size", "0", pkg}, `seed: --chunk-size "0"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, err := runApp(t, tc.args...)
			if code != exitUsage || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("exit %d, err %v; want exit %d saying %q", code, err, exitUsage, tc.want)
			}
		})
	}
}

// Every default passes the checks, and a file that sets every key to a
// bound is taken.
func TestSettingsAtTheirBoundsAreTaken(t *testing.T) {
	body := `[seed]
expect = 0
wait = "0s"
chunk_size = "16MiB"
[receiver]
timeout = "0s"
[discover]
round = "50ms"
[relay]
listen = "127.0.0.1:65535"
heartbeat = "10ms"
dead_after = "20ms"
seed_timeout = "20ms"
trees = 1
slow_after = "20ms"
dial_timeout = "1m"
session_ttl = "8784h"
`
	for _, file := range []string{"config.example.toml", writeFile(t, "bounds.toml", body)} {
		got, err := loadWith(t, "--config", file)
		if err != nil {
			t.Fatal(err)
		}
		got.Install.To = t.TempDir() // a receiver must be told what to apply
		s := &settings{fileConfig: got, flags: map[string]string{}}
		for name, err := range map[string]error{"seed": s.checkSeed("t"), "receiver": s.checkReceiver("t"), "install": s.checkInstall("t"), "discover": s.checkDiscover("t"), "relay": s.checkRelay("t")} {
			if err != nil {
				t.Errorf("%s: [%s] refused: %v", filepath.Base(file), name, err)
			}
		}
	}
}

// What can be checked before the first byte is sent is checked at start,
// exit 2: where receivers write, where the seed's report goes, its key.
func TestPlacesAreCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(t.TempDir(), "state")
	file := writeFile(t, "a-file", "x")
	pkg := writeFile(t, "pkg.bin", "payload")
	join := func(args ...string) []string {
		return append([]string{"join", "--trust-any", "--timeout", "1s", "--dir", state}, args...)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"--to a file", nil, join("--to", file), "join: --to " + file + ": " + file + " is a file, not a directory"},
		{"--to under a file", nil, join("--to", filepath.Join(file, "sub")), file + " is a file, so no directory can be made under it"},
		{"--to under /proc", nil, join("--to", "/proc/treecast"), "join: --to /proc/treecast: /proc is the kernel's own filesystem"},
		{"--extract under /sys", nil, join("--extract", "/sys/kernel/x"), "join: --extract /sys/kernel/x: /sys is the kernel's own filesystem"},
		{"--to a symlink into /proc", nil, join("--to", symlink(t, "/proc/self")), "in the kernel's proc filesystem"},
		{"[install] to a file", map[string]string{"TREECAST_CONFIG": writeFile(t, "c.toml", "[install]\nto = \""+file+"\"\n")}, join(), "join: [install] to " + file + ": "},
		{"serve --to a file", nil, []string{"serve", "--trust-any", "--dir", state, "--to", file}, "serve: --to " + file},
		{"--report in a missing folder", nil, []string{"seed", "--report", filepath.Join(dir, "missing", "r.json"), pkg}, "the folder " + filepath.Join(dir, "missing") + " does not exist"},
		{"--report a folder", nil, []string{"seed", pkg, "--report", dir}, "seed: --report " + dir + " is a directory"},
		{"--report under a file", nil, []string{"seed", pkg, "--report", filepath.Join(file, "r.json")}, file + " is a file, not a folder"},
		{"TREECAST_REPORT in a missing folder", map[string]string{"TREECAST_REPORT": "/nonexistent/r.json"}, []string{"seed", pkg}, "seed: --report /nonexistent/r.json: the folder /nonexistent does not exist"},
		{"--key that does not exist", nil, []string{"seed", "--key", filepath.Join(dir, "typo.key"), pkg}, "seed: --key " + filepath.Join(dir, "typo.key") + ": no such key file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, err := runApp(t, tc.args...)
			if code != exitUsage || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("exit %d, err %v; want exit %d saying %q", code, err, exitUsage, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "typo.key")); err == nil {
		t.Error("a seed with a --key that does not exist created one")
	}
	if _, err := os.Stat(state); err == nil {
		t.Errorf("refused receivers created their state folder %s", state)
	}
	// A target that does not exist yet, under a writable folder, is taken.
	if err := install.WritableDir(filepath.Join(dir, "new", "deeper")); err != nil {
		t.Errorf("a creatable directory refused: %v", err)
	}
	if err := install.WritableDir(dir); err != nil {
		t.Errorf("a writable directory refused: %v", err)
	}
}

// An unwritable folder is refused, for a user other than root (root may
// write anywhere access(2) allows).
func TestUnwritableTargetIsRefused(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes in a folder without write permission")
	}
	ro := t.TempDir()
	if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(ro, 0o755) })
	for _, d := range []string{ro, filepath.Join(ro, "new")} {
		if err := install.WritableDir(d); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Errorf("install.WritableDir(%s) = %v, want not writable", d, err)
		}
	}
}

func symlink(t *testing.T, target string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	return p
}

package main

import (
	"path/filepath"
	"strings"
	"testing"
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

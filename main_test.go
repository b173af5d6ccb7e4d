package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/treecast/treecast/discover"
	"github.com/treecast/treecast/install"
	"github.com/treecast/treecast/relay"
)

// runApp runs the CLI as a user would and returns the exit code and error.
func runApp(t *testing.T, args ...string) (int, error) {
	t.Helper()
	err := run(context.Background(), newApp(), append([]string{"treecast"}, args...))
	if err == nil {
		return 0, nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, err
	}
	return exitUsage, err
}

// loadWith runs loadConfig for a command with args, returning the result.
func loadWith(t *testing.T, args ...string) (fileConfig, error) {
	t.Helper()
	var got fileConfig
	var lerr error
	app := &cli.App{
		ExitErrHandler: func(*cli.Context, error) {},
		Flags:          []cli.Flag{configFlag, &cli.DurationFlag{Name: "wait", EnvVars: []string{"TREECAST_WAIT"}}},
		Action: func(c *cli.Context) error {
			var s *settings
			s, lerr = loadConfig(c)
			if lerr == nil {
				fromFlag(s, c, "wait", "seed.wait", &s.Seed.Wait, c.Duration)
				got = s.fileConfig
			}
			return nil
		},
	}
	if err := app.Run(append([]string{"t"}, args...)); err != nil {
		t.Fatal(err)
	}
	return got, lerr
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExampleConfigIsTheDefaults(t *testing.T) {
	got, err := loadWith(t, "--config", "config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if want := defaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("config.example.toml differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestConfigErrorsNameTheProblem(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "[seed]\nexpect = 3\nexpct = 4\n", []string{"unknown key", "seed.expct"}},
		{"unknown section", "[sede]\nexpect = 3\n", []string{"unknown key", "sede"}},
		{"syntax error", "[seed]\nexpect = 3\nwait = \n", []string{"line 3"}},
		{"wrong type", "[seed]\nexpect = \"many\"\n", []string{"expect"}},
		{"bad duration", "[relay]\nheartbeat = \"often\"\n", []string{"heartbeat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, "--config", writeFile(t, "c.toml", tc.body))
			if err == nil {
				t.Fatal("bad config accepted")
			}
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != exitUsage {
				t.Errorf("exit code: %v, want %d", err, exitUsage)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	file := writeFile(t, "c.toml", "[seed]\nwait = \"7s\"\n")
	cfg, _ := loadWith(t)
	if cfg.Seed.Wait != 10*time.Second {
		t.Errorf("default wait %s, want 10s", cfg.Seed.Wait)
	}
	cfg, _ = loadWith(t, "--config", file)
	if cfg.Seed.Wait != 7*time.Second {
		t.Errorf("file wait %s, want 7s", cfg.Seed.Wait)
	}
	t.Setenv("TREECAST_WAIT", "5s")
	cfg, _ = loadWith(t, "--config", file)
	if cfg.Seed.Wait != 5*time.Second {
		t.Errorf("env wait %s, want 5s over the file", cfg.Seed.Wait)
	}
	cfg, _ = loadWith(t, "--config", file, "--wait", "3s")
	if cfg.Seed.Wait != 3*time.Second {
		t.Errorf("flag wait %s, want 3s over env and file", cfg.Seed.Wait)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	empty := writeFile(t, "empty.bin", "")
	// A large file: an interface that is not there is said at once, not
	// after the hashing.
	large := filepath.Join(t.TempDir(), "large.img")
	if f, err := os.Create(large); err != nil || f.Truncate(1<<30) != nil || f.Close() != nil {
		t.Fatal("make a sparse file")
	}
	dir := t.TempDir()
	state := filepath.Join(t.TempDir(), "state")
	linked := t.TempDir()
	if err := os.Symlink(t.TempDir(), filepath.Join(linked, "spool")); err != nil {
		t.Fatal(err)
	}
	join := func(args ...string) []string {
		return append([]string{"join", "--trust-any", "--timeout", "1s"}, args...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"seed without file", []string{"seed"}, "FILE"},
		{"seed missing file", []string{"seed", filepath.Join(dir, "nope")}, "no such file"},
		{"seed directory", []string{"seed", dir}, "not a regular file"},
		{"seed flag after file, read", []string{"seed", empty, "--expect", "-3"}, "--expect -3: want 0"},
		{"seed second file", []string{"seed", empty, empty}, `unexpected argument "` + empty + `"; see treecast seed --help`},
		{"seed flag after --", []string{"seed", empty, "--", "--expect", "3"}, `unexpected argument "--expect"`},
		{"seed bad chunk size", []string{"seed", "--chunk-size", "1KiB", empty}, "chunk-size"},
		{"seed junk chunk size", []string{"seed", "--chunk-size", "lots", empty}, "chunk-size"},
		{"seed no such interface", []string{"seed", "--iface", "nosuch0", "--wait", "1s", large}, `no interface named "nosuch0"`},
		{"join without action", []string{"join", "--trust-any", "--dir", dir}, "--to"},
		{"join without trust", []string{"join", "--to", dir, "--dir", dir}, "--trust"},
		{"join bad trust", []string{"join", "--to", dir, "--dir", dir, "--trust", "nonsense"}, "fingerprint"},
		{"join stray argument", []string{"join", "--to", dir, "now"}, "unexpected argument"},
		{"unknown flag", []string{"seed", "--expct", "3", empty}, "expct"},
		{"join --to the spool", join("--dir", state, "--to", filepath.Join(state, "spool")), "--to " + state + "/spool is inside the state folder " + state + " (--dir)"},
		{"join --to the state folder", join("--dir", state, "--to", state), "give --to a directory outside it"},
		{"join --extract inside the state folder", join("--dir", state, "--extract", filepath.Join(state, "app")), "--extract " + state + "/app is inside the state folder"},
		{"join symlinked spool", join("--dir", linked, "--to", dir), linked + "/spool is a symlink"},
		{"join bad max-extract-size", join("--dir", state, "--extract", dir, "--max-extract-size", "lots"), "--max-extract-size"},
		{"join bad max-extract-entries", join("--dir", state, "--extract", dir, "--max-extract-entries", "-1"), `--max-extract-entries "-1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, err := runApp(t, tc.args...)
			if code != exitUsage || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("exit %d, err %v; want exit %d mentioning %q", code, err, exitUsage, tc.want)
			}
		})
	}
	if _, err := os.Stat(state); err == nil {
		t.Errorf("refused receivers created their state folder %s", state)
	}
}

// An archive over a cap fails the apply with the setting and the flag that
// raise it, and writes nothing.
func TestApplyNamesTheCapFlag(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{"a", "b", "c"} {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
		tw.Write([]byte("x"))
	}
	tw.Close()
	pkg := writeFile(t, "three.tar", buf.String())
	sum := sha256.Sum256(buf.Bytes())
	dest := t.TempDir()
	apply := applyPackage(install.Config{Extract: dest, MaxExtractEntries: 2})
	err := apply(context.Background(), relay.Package{Path: pkg, Name: "three.tar", Size: int64(buf.Len()), SHA256: hex.EncodeToString(sum[:])})
	if err == nil || !strings.Contains(err.Error(), "max_extract_entries") || !strings.Contains(err.Error(), "--max-extract-entries") {
		t.Errorf("apply: %v, want it to name max_extract_entries and --max-extract-entries", err)
	}
	if ents, _ := os.ReadDir(dest); len(ents) != 0 {
		t.Errorf("the destination holds %d entries, want none", len(ents))
	}
}

func TestDirLockRefusesSecondReceiver(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDir(dir); err == nil || !strings.Contains(err.Error(), "--dir") {
		t.Errorf("second lock: %v, want an error pointing at --dir", err)
	}
	unlock()
	unlock2, err := lockDir(dir)
	if err != nil {
		t.Errorf("lock after unlock: %v", err)
	} else {
		unlock2()
	}
}

func TestNodeIDIsStable(t *testing.T) {
	dir := t.TempDir()
	a, err := relay.LoadNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := relay.LoadNodeID(dir)
	if a != b {
		t.Errorf("node id changed across runs: %s then %s", a, b)
	}
}

// Binary and decimal units are both taken, each at its own value: 1MB is
// 10^6 bytes, not 1MiB.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1MiB": 1 << 20, "256KiB": 256 << 10, "4096": 4096, "2M": 2 << 20, " 64 KiB ": 64 << 10, "1GiB": 1 << 30, "2TiB": 2 << 40, "7B": 7,
		"1KB": 1000, "1MB": 1_000_000, "1GB": 1_000_000_000, "3TB": 3_000_000_000_000, "1G": 1 << 30,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1MiB", "lots", "0", "1.5GB", "1gb", "1 PB", "9999999TiB"} {
		_, err := parseSize(in)
		if err == nil {
			t.Errorf("parseSize(%q) accepted", in)
			continue
		}
		for _, w := range []string{"KiB, MiB, GiB", "KB, MB, GB", "1MB = 1000000"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("parseSize(%q): %v; want it to list the accepted forms (%q)", in, err, w)
			}
		}
	}
}

func TestHelpTeachesExitCodes(t *testing.T) {
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	if err := app.Run([]string{"treecast", "seed", "--help"}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"--expect", "--report", "EXIT CODES", "3  nothing found"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("seed --help lacks %q", w)
		}
	}
}

// Runtime failures exit 1: the command was right, but could not be done
// here. 2 is for usage and settings only.
func TestRuntimeFailuresExit1(t *testing.T) {
	dir := t.TempDir()
	pkg := writeFile(t, "pkg.bin", "payload")

	key := filepath.Join(dir, "seed.key")
	if code, err := runApp(t, "keygen", "--out", key); code != 0 {
		t.Fatalf("keygen: exit %d, %v", code, err)
	}
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	held := t.TempDir()
	unlock, err := lockDir(held)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"group-readable seed key", []string{"seed", "--key", key, pkg},
			[]string{"UNPROTECTED PRIVATE KEY FILE", "permissions 0640", "chmod 600 " + key}},
		{"seed key that is a directory", []string{"seed", "--key", dir, pkg}, []string{"seed: key:", dir}},
		{"--dir held by another receiver", []string{"join", "--trust-any", "--to", dir, "--dir", held},
			[]string{"join: " + held + " is in use by another treecast receiver", "--dir"}},
		{"serve on a held --dir", []string{"serve", "--trust-any", "--to", dir, "--dir", held}, []string{"in use"}},
		{"--listen on a port in use", []string{"join", "--trust-any", "--to", dir, "--dir", t.TempDir(), "--listen", ln.Addr().String()},
			[]string{"join: listen on " + ln.Addr().String()}},
		{"keygen over an existing key", []string{"keygen", "--out", key}, []string{"already exists"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, err := runApp(t, tc.args...)
			if code != exitFailed || err == nil {
				t.Fatalf("exit %d, err %v; want exit %d", code, err, exitFailed)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// Receivers as a browse returns them: beta's node id answered from two
// addresses.
var (
	alphaFound = discover.Peer{Instance: "alpha-01234567", ID: "0123456789abcdef0123456789abcdef", Name: "alpha", Group: "red",
		State: discover.StateIdle, Version: relay.Version, Addr: netip.MustParseAddrPort("10.1.0.7:7000")}
	betaFound = discover.Peer{Instance: "beta-fedcba98", ID: "fedcba9876543210fedcba9876543210", Name: "beta", Group: "red",
		State: discover.StateIdle, Version: relay.Version, Addr: netip.MustParseAddrPort("10.1.0.8:7000"),
		Conflict: netip.MustParseAddrPort("10.1.0.66:7000")}
)

func TestPeersMarksConflicts(t *testing.T) {
	var out bytes.Buffer
	printPeers(&out, []discover.Peer{alphaFound, betaFound})
	want := "" +
		"NAME   ID        ADDRESS                       GROUP  STATE\n" +
		"alpha  01234567  10.1.0.7:7000                 red    idle\n" +
		"beta   fedcba98  10.1.0.8:7000,10.1.0.66:7000  red    CONFLICT\n"
	if out.String() != want {
		t.Fatalf("peers printed\n%s\nwant\n%s", out.String(), want)
	}
}

func TestSeedSkipsConflicts(t *testing.T) {
	var logs bytes.Buffer
	admit := newAdmission("red", slog.New(slog.NewTextHandler(&logs, nil)))
	old := alphaFound
	old.ID, old.Name, old.Version = "00000000000000000000000000000001", "old", relay.Version+1
	found := []discover.Peer{alphaFound, betaFound, old}

	got := admit.peers(found)
	want := []relay.Peer{{ID: mustNodeID(t, alphaFound.ID), Name: "alpha", Addr: alphaFound.Addr}}
	if !slices.Equal(got, want) {
		t.Fatalf("the seed would send to %+v, want only %+v", got, want)
	}
	for _, s := range []string{"beta", "10.1.0.8:7000", "10.1.0.66:7000", "two machines share the node id", "delete node-id", "spoofs",
		"old", "another protocol version"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("the warnings do not say %q:\n%s", s, logs.String())
		}
	}

	// The watcher finds them again and again; beta turns busy.
	logs.Reset()
	busy := betaFound
	busy.State = discover.StateBusy
	for range 3 {
		if got := admit.peers([]discover.Peer{alphaFound, betaFound, busy, old}); !slices.Equal(got, want) {
			t.Fatalf("the seed would send to %+v, want only %+v", got, want)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("warned again about receivers already skipped:\n%s", logs.String())
	}
}

// The watch browses one round at a time: a node id that answers from two
// addresses in rounds under conflictWindow apart is skipped as a conflict,
// as within one browse; from another port of its address (its receiver
// restarted) or from a new address once the old one is quiet, it is taken.
func TestSeedSkipsConflictsAcrossRounds(t *testing.T) {
	var logs bytes.Buffer
	admit := newAdmission("red", slog.New(slog.NewTextHandler(&logs, nil)))
	now := time.Unix(1e9, 0)
	admit.now = func() time.Time { return now }
	at := func(addr string) discover.Peer {
		p := alphaFound
		p.Addr = netip.MustParseAddrPort(addr)
		return p
	}
	for i, step := range []struct {
		after time.Duration
		addr  string
		taken bool
	}{
		{0, "10.1.0.7:7000", true},
		{500 * time.Millisecond, "10.1.0.7:7000", true},
		{500 * time.Millisecond, "10.1.0.66:7000", false}, // a twin, or a spoofer
		{500 * time.Millisecond, "10.1.0.7:7000", false},  // and its sibling, answering again
		{500 * time.Millisecond, "10.1.0.7:7001", true},   // the same machine, its receiver restarted
		{conflictWindow, "10.1.0.9:7000", true},           // moved, the old address quiet since
	} {
		now = now.Add(step.after)
		got := admit.peers([]discover.Peer{at(step.addr)})
		if taken := len(got) == 1; taken != step.taken {
			t.Fatalf("step %d: %s taken = %v, want %v (%+v)", i, step.addr, taken, step.taken, got)
		}
	}
	if !strings.Contains(logs.String(), "two machines share the node id") || !strings.Contains(logs.String(), "10.1.0.66:7000") {
		t.Errorf("the conflict is not in the warnings:\n%s", logs.String())
	}
}

func mustNodeID(t *testing.T, s string) relay.NodeID {
	t.Helper()
	id, err := relay.ParseNodeID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Flags are read before and after arguments, keep their values, and stop at
// `--`; the app's own flags move before the command.
func TestReorderArgs(t *testing.T) {
	app := newApp()
	prepare(app)
	for _, tc := range []struct{ in, want string }{
		{"seed FILE --expect 3", "seed --expect 3 FILE"},
		{"seed --expect 3 FILE", "seed --expect 3 FILE"},
		{"seed FILE --expect=3 --wait 5s", "seed --expect=3 --wait 5s FILE"},
		{"seed --report r.json FILE --verbose", "--verbose seed --report r.json FILE"},
		{"--verbose seed FILE --verbose=false", "--verbose --verbose=false seed FILE"},
		// A flag's value is never taken for an argument, even one that
		// looks like a flag, or is the command's own name.
		{"join --exec --verbose --to seed", "join --exec --verbose --to seed"},
		{"seed FILE --key -odd.key", "seed --key -odd.key FILE"},
		{"join --trust-any --to d --timeout 3s", "join --trust-any --to d --timeout 3s"},
		// After --, every word is an argument.
		{"seed FILE -- --expect 3", "seed -- FILE --expect 3"},
		{"seed --expect 3 -- -file-with-dash", "seed --expect 3 -- -file-with-dash"},
		{"seed -- FILE", "seed -- FILE"},
		// A flag that wants a value and ends the line stays last, so the
		// parser says it wants a value rather than eating FILE.
		{"seed FILE --expect", "seed --expect"},
		// Unknown flags stay with the command, to be refused by name.
		{"seed FILE --expct 3", "seed --expct FILE 3"},
		{"seed FILE -h", "seed -h FILE"},
		{"seed - --wait 1s", "seed --wait 1s -"},
		// Not a command: left as typed.
		{"bogus --expect 3 x", "bogus --expect 3 x"},
		{"--version", "--version"},
		{"", ""},
	} {
		in := append([]string{"treecast"}, strings.Fields(tc.in)...)
		got := strings.Join(reorderArgs(app, in)[1:], " ")
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A flag after the arguments is read as one before them would be.
func TestFlagsAfterArguments(t *testing.T) {
	pkg := writeFile(t, "pkg.bin", "payload")
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"seed", pkg, "--expect", "-3"}, "seed: --expect -3: want 0"},
		{[]string{"seed", pkg, "--verbose", "--chunk-size", "5000"}, `seed: --chunk-size "5000": want`},
		{[]string{"join", "--trust-any", "--dir", dir, "--to", dir, "--timeout=-1s"}, "join: --timeout -1s: want 0s"},
		{[]string{"peers", "--verbose", "--wait", "-1s"}, "peers: --wait -1s: want 0s"},
	} {
		code, err := runApp(t, tc.args...)
		if code != exitUsage || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: exit %d, err %v; want exit %d saying %q", tc.args, code, err, exitUsage, tc.want)
		}
	}
}

// A usage error is one line: what was wrong, what is wanted, where the help
// is; no help text is printed.
func TestUsageErrorsAreOneLine(t *testing.T) {
	pkg := writeFile(t, "pkg.bin", "payload")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"seed", "--wait", "10", pkg}, `seed: --wait "10": want a duration with a unit, such as 30s, 2m or 1h30m; see treecast seed --help`},
		{[]string{"seed", pkg, "--wait", "soon"}, `seed: --wait "soon": want a duration`},
		{[]string{"seed", "--expect", "many", pkg}, `seed: --expect "many": want a whole number, such as 3; see treecast seed --help`},
		{[]string{"seed", pkg, "--expect"}, "seed: --expect needs a value: a whole number"},
		{[]string{"seed", pkg, "--report"}, "seed: --report needs a value: PATH (write the outcome as JSON to PATH); see treecast seed --help"},
		{[]string{"seed", "--expct", "3", pkg}, "seed: unknown flag --expct (did you mean --expect?); see treecast seed --help"},
		{[]string{"join", "--trust-any=maybe"}, `join: --trust-any "maybe": want true or false`},
		{[]string{"--bogus"}, "unknown flag --bogus (a command's flags go after the command's name); see treecast --help"},
		{[]string{"secret"}, "secret: say where to write it: treecast secret --out PATH; see treecast secret --help"},
		{[]string{"seed"}, "see treecast seed --help"},
	} {
		var out bytes.Buffer
		app := newApp()
		app.Writer, app.ErrWriter = &out, &out
		err := run(context.Background(), app, append([]string{"treecast"}, tc.args...))
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != exitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want exit %d saying %q", tc.args, err, exitUsage, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") || out.Len() > 0 {
			t.Errorf("%q: more than one line: %q, and printed %q", tc.args, err, out.String())
		}
	}
	t.Setenv("TREECAST_WAIT", "10")
	if code, err := runApp(t, "seed", pkg); code != exitUsage || err == nil || !strings.Contains(err.Error(), `TREECAST_WAIT="10" (--wait): want a duration`) {
		t.Errorf("TREECAST_WAIT=10: exit %d, %v", code, err)
	}
}

func TestUnknownCommandIsNamed(t *testing.T) {
	for args, want := range map[string]string{
		"bogus":       `unknown command "bogus"; see treecast --help`,
		"sed x.bin":   `unknown command "sed" (did you mean seed?); see treecast --help`,
		"--verbose x": `unknown command "x"; see treecast --help`,
	} {
		code, err := runApp(t, strings.Fields(args)...)
		if code != exitUsage || err == nil || err.Error() != want {
			t.Errorf("treecast %s: exit %d, %v; want exit %d, %q", args, code, err, exitUsage, want)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		var out bytes.Buffer
		app := newApp()
		app.Writer = &out
		if err := run(context.Background(), app, []string{"treecast", flag}); err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		if want := fmt.Sprintf("treecast (devel), protocol %d\n", relay.Version); out.String() != want {
			t.Errorf("%s printed %q, want %q", flag, out.String(), want)
		}
	}
}

// The report is written however the run ends, and says how; a report that
// cannot be written exits 4, unless a signal stopped the run.
func TestSeedReportInEveryOutcome(t *testing.T) {
	pkg := relay.ReportPackage{Name: "app.tar.gz", Size: 2 << 20, SHA256: strings.Repeat("ab", 32)}
	node := func(name, status string, bytes int64) relay.ReportNode {
		return relay.ReportNode{ID: name + "0123456789abcdef", Name: name, Addr: "10.0.0.1:7000", Status: status, Bytes: bytes, Parents: []string{"seed"}, Parent: "seed"}
	}
	sigint, cancel := context.WithCancelCause(context.Background())
	cancel(stopSignal{syscall.SIGINT})
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		nodes     []relay.ReportNode
		runErr    error
		expect    int
		code      int
		outcome   string
		table     bool
		nodeError string
	}{
		{"every node ok", context.Background(), []relay.ReportNode{node("a", "ok", 2<<20)}, nil, 1, 0, "ok", true, ""},
		{"a node failed", context.Background(), []relay.ReportNode{node("a", "ok", 2<<20), node("b", "failed", 0)}, nil, 0, exitFailed, "failed", true, ""},
		{"fewer than expected", context.Background(), []relay.ReportNode{node("a", "ok", 2<<20)}, nil, 3, exitFailed, "failed", true, ""},
		{"no receivers", context.Background(), nil, &exitError{exitNotFound, errors.New("no receivers found")}, 2, exitNotFound, "no receivers", false, ""},
		{"Ctrl-C while looking", sigint, nil, context.Canceled, 2, 130, "interrupted", false, ""},
		{"Ctrl-C while sending", sigint, []relay.ReportNode{node("a", "ok", 2<<20), node("b", "failed", 1<<20)}, context.Canceled, 2, 130, "interrupted", true,
			"interrupted: the seed was stopped by SIGINT when this node held 1.0 MiB of 2.0 MiB; run the seed again to resume"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "r.json")
			var out, log bytes.Buffer
			end := &seedEnd{ctx: tc.ctx, con: &console{out: &log}, out: &out, report: path, reportName: "--report", expect: tc.expect, start: time.Now()}
			rep := end.emptyReport(pkg)
			rep.Nodes = tc.nodes
			err := end.finish(rep, tc.runErr)
			if code := exitCodeOf(err); code != tc.code {
				t.Errorf("exit %d (%v), want %d", code, err, tc.code)
			}
			if tc.code == 130 && (err == nil || !strings.Contains(err.Error(), "interrupted: run the same command again to resume")) {
				t.Errorf("error %v does not say to run it again", err)
			}
			if got := strings.Contains(out.String(), "NODE "); got != tc.table {
				t.Errorf("table printed: %v, want %v:\n%s", got, tc.table, out.String())
			}
			var r struct {
				Outcome  string
				Error    string
				Expected int
				Package  relay.ReportPackage
				Nodes    []relay.ReportNode
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("no report: %v", err)
			}
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if r.Outcome != tc.outcome || r.Expected != tc.expect || r.Package != pkg || len(r.Nodes) != len(tc.nodes) || r.Nodes == nil {
				t.Errorf("report %s", b)
			}
			if (r.Error == "") != (tc.code == 0) {
				t.Errorf("report error %q for exit %d", r.Error, tc.code)
			}
			if tc.nodeError != "" && r.Nodes[1].Error != tc.nodeError {
				t.Errorf("node error %q, want %q", r.Nodes[1].Error, tc.nodeError)
			}
			if tc.nodeError != "" && r.Nodes[0].Error != "" {
				t.Errorf("a node that applied it got an error: %q", r.Nodes[0].Error)
			}
		})
	}

	// A report that cannot be written: exit 4, saying so, after the
	// run's own verdict; a signal's exit code wins over it.
	gone := filepath.Join(t.TempDir(), "gone")
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		nodes   []relay.ReportNode
		runErr  error
		code    int
		verdict string
	}{
		{"all ok", context.Background(), []relay.ReportNode{node("a", "ok", 2<<20)}, nil, exitReport, ""},
		{"a node failed", context.Background(), []relay.ReportNode{node("a", "failed", 0)}, nil, exitReport, "treecast: 1 of 1 nodes failed\n"},
		{"interrupted", sigint, []relay.ReportNode{node("a", "failed", 0)}, context.Canceled, 130, "treecast: seed: --report " + gone + "/r.json: "},
		// A signal after every node was done does not undo it.
		{"done, then Ctrl-C", sigint, []relay.ReportNode{node("a", "ok", 2<<20)}, nil, exitReport, ""},
	} {
		t.Run("unwritable, "+tc.name, func(t *testing.T) {
			var out, log bytes.Buffer
			end := &seedEnd{ctx: tc.ctx, con: &console{out: &log}, out: &out, report: filepath.Join(gone, "r.json"), reportName: "--report", start: time.Now()}
			rep := end.emptyReport(pkg)
			rep.Nodes = tc.nodes
			err := end.finish(rep, tc.runErr)
			if code := exitCodeOf(err); code != tc.code {
				t.Errorf("exit %d (%v), want %d", code, err, tc.code)
			}
			if tc.code == exitReport && !strings.Contains(err.Error(), "the outcome was not saved (the table above has it): make that path writable, or give another one") {
				t.Errorf("error %v", err)
			}
			stderr := regexp.MustCompile(`(?m)^treecast: errors are cut .*\n`).ReplaceAllString(log.String(), "")
			if !strings.HasPrefix(stderr, tc.verdict) {
				t.Errorf("stderr %q, want it to start %q", log.String(), tc.verdict)
			}
			if !strings.Contains(out.String(), "NODE ") {
				t.Error("no table")
			}
		})
	}
}

func exitCodeOf(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return -1
}

// The table is one line per node whatever its error holds: lines, tabs,
// escapes, a command's whole stderr. The error is flattened and cut; the
// report keeps it whole.
func TestTableIsOneLinePerNode(t *testing.T) {
	stderr := "unpacking app\n" + strings.Repeat("more output\n", 30) + "\tE: /opt/app: No space left on device\x1b[0m\n"
	rep := &relay.Report{
		Package: relay.ReportPackage{Name: "app.tar.gz", Size: 1 << 20},
		Nodes: []relay.ReportNode{
			{ID: "aaaaaaaa11111111", Name: "h1", Addr: "10.0.0.2:7000", Parents: []string{"seed", "bbbbbbbb22222222"}, Status: "ok", Bytes: 1 << 20},
			{ID: "bbbbbbbb22222222", Name: "h2\nfake row", Addr: "10.0.0.3:7000", Parents: []string{"seed", "aaaaaaaa11111111"}, Status: "failed",
				Error: "run `./install.sh 2>&1 >/dev/null`: command exited with status 2: " + stderr, Output: stderr},
			{ID: "cccccccc33333333", Name: "h3", Addr: "10.0.0.4:7000", Parents: []string{"aaaaaaaa11111111", "seed"}, Status: "failed",
				Error: "lost: read tcp\r\n10.0.0.4:7000: connection reset"},
		},
	}
	var out bytes.Buffer
	cut := printReport(&out, rep)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1+len(rep.Nodes)+1 {
		t.Fatalf("%d lines for %d nodes, want a header, a line per node and the summary:\n%s", len(lines), len(rep.Nodes), out.String())
	}
	if !cut {
		t.Error("a long error was not said to be cut")
	}
	if strings.ContainsAny(out.String(), "\t\r\x1b") {
		t.Errorf("control characters in the table: %q", out.String())
	}
	for _, want := range []string{
		"h1             aaaaaaaa  10.0.0.2:7000  seed,h2 | fake row  ok",
		// What was run, and how it ended: the start and the end of the error.
		"h2 | fake row  bbbbbbbb  10.0.0.3:7000  seed,h1             failed  0        0.0      run `./install.sh 2>&1 >/d…ore output | E: /opt/app: No space left on device [0m\n",
		"lost: read tcp | 10.0.0.4:7000: connection reset",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table does not say %q:\n%s", want, out.String())
		}
	}
	if n := utf8.RuneCountInString(lines[2][strings.Index(lines[2], "run `"):]); n != tableErrorWidth {
		t.Errorf("the error takes %d characters, want %d", n, tableErrorWidth)
	}

	// The report keeps the error and the output whole.
	path := filepath.Join(t.TempDir(), "r.json")
	var tbl, log bytes.Buffer
	end := &seedEnd{ctx: context.Background(), con: &console{out: &log}, out: &tbl, report: path, reportName: "--report", start: time.Now()}
	end.finish(rep, nil)
	var r seedReport
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Nodes[1].Error != rep.Nodes[1].Error || r.Nodes[1].Output != stderr {
		t.Errorf("the report's error %q, output %q", r.Nodes[1].Error, r.Nodes[1].Output)
	}
	if !bytes.Contains(b, []byte("run `./install.sh 2>&1 >/dev/null`")) {
		t.Errorf("the report does not quote the command as it is:\n%s", b)
	}
	if !strings.Contains(log.String(), "treecast: errors are cut to 80 characters in the table, a line per node; the report (--report PATH, or --json) has them whole\n") {
		t.Errorf("stderr does not say the errors are cut: %q", log.String())
	}
}

// The summary and the final line name every reason for exit 1.
func TestSummaryNamesWhyItFailed(t *testing.T) {
	node := func(name, status string) relay.ReportNode {
		return relay.ReportNode{ID: name + "0123456789abcdef", Name: name, Status: status, Parents: []string{"seed"}}
	}
	for _, tc := range []struct {
		name    string
		nodes   []relay.ReportNode
		expect  int
		summary string // the summary line, from its counts on
		final   string // the error main prints last
	}{
		{"all ok", []relay.ReportNode{node("a", "ok"), node("b", "ok")}, 2, "2 of 2 nodes ok, 0 failed; ", ""},
		{"failed", []relay.ReportNode{node("a", "ok"), node("b", "failed")}, 0, "1 of 2 nodes ok, 1 failed; ", "1 of 2 nodes failed"},
		{"fewer than expected", []relay.ReportNode{node("a", "ok"), node("b", "ok")}, 5, "2 of 2 nodes ok, 0 failed, 3 of 5 expected not found; ",
			"3 of 5 expected were not found (found 2)"},
		{"both", []relay.ReportNode{node("a", "ok"), node("b", "failed"), node("c", "failed")}, 40, "1 of 3 nodes ok, 2 failed, 37 of 40 expected not found; ",
			"2 of 3 nodes failed; 37 of 40 expected were not found (found 3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, log bytes.Buffer
			end := &seedEnd{ctx: context.Background(), con: &console{out: &log}, out: &out, expect: tc.expect, start: time.Now()}
			rep := end.emptyReport(relay.ReportPackage{Name: "app.bin", Size: 100})
			rep.Nodes = tc.nodes
			err := end.finish(rep, nil)
			if want := "app.bin: " + tc.summary; !strings.Contains(out.String(), "\n"+want) {
				t.Errorf("summary:\n%s\nwant a line starting %q", out.String(), want)
			}
			switch {
			case tc.final == "" && err != nil:
				t.Errorf("exit %v, want 0", err)
			case tc.final != "" && (exitCodeOf(err) != exitFailed || err.Error() != tc.final):
				t.Errorf("exit %d, %v; want %d, %q", exitCodeOf(err), err, exitFailed, tc.final)
			}
		})
	}
}

// With --json, stdout is one JSON document, the one --report writes, in
// every outcome; the table and the people's text are on stderr.
func TestSeedJSONIsTheReport(t *testing.T) {
	sigint, cancel := context.WithCancelCause(context.Background())
	cancel(stopSignal{syscall.SIGINT})
	ok := relay.ReportNode{ID: "a0123456789abcdef", Name: "a", Status: "ok", Parents: []string{"seed"}, Output: "restarted app"}
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		nodes   []relay.ReportNode
		runErr  error
		outcome string
	}{
		{"ok", context.Background(), []relay.ReportNode{ok}, nil, "ok"},
		{"no receivers", context.Background(), nil, &exitError{exitNotFound, errors.New("no receivers found")}, "no receivers"},
		{"interrupted", sigint, []relay.ReportNode{ok}, context.Canceled, "interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "r.json")
			var stdout, stderr bytes.Buffer
			con := &console{out: &stderr}
			end := &seedEnd{ctx: tc.ctx, con: con, out: con, json: &stdout, report: path, reportName: "--report", expect: 1, start: time.Now()}
			rep := end.emptyReport(relay.ReportPackage{Name: "app.bin", Size: 100})
			rep.Nodes = tc.nodes
			end.finish(rep, tc.runErr)
			dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
			var doc struct {
				Outcome string
				Nodes   []relay.ReportNode
			}
			if err := dec.Decode(&doc); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, stdout.String())
			}
			if dec.More() {
				t.Errorf("more than one document on stdout:\n%s", stdout.String())
			}
			if doc.Outcome != tc.outcome || len(doc.Nodes) != len(tc.nodes) || (len(doc.Nodes) > 0 && doc.Nodes[0].Output != "restarted app") {
				t.Errorf("document %s", stdout.String())
			}
			if file, _ := os.ReadFile(path); !bytes.Equal(file, stdout.Bytes()) {
				t.Errorf("stdout differs from the --report file:\n%s\n%s", stdout.String(), file)
			}
			if len(tc.nodes) > 0 && !strings.Contains(stderr.String(), "NODE ") {
				t.Errorf("no table on stderr: %q", stderr.String())
			}
		})
	}
}

func TestPeersJSON(t *testing.T) {
	for _, found := range [][]discover.Peer{{alphaFound, betaFound}, nil} {
		var out bytes.Buffer
		if err := printPeersJSON(&out, found); err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Peers []map[string]any `json:"peers"`
		}
		if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Peers == nil || len(doc.Peers) != len(found) {
			t.Fatalf("peers --json printed %s (%v)", out.String(), err)
		}
		if len(found) == 0 {
			continue
		}
		want := []map[string]any{
			{"name": "alpha", "id": alphaFound.ID, "addr": "10.1.0.7:7000", "group": "red", "state": "idle", "version": float64(relay.Version)},
			{"name": "beta", "id": betaFound.ID, "addr": "10.1.0.8:7000", "group": "red", "state": "idle", "version": float64(relay.Version), "conflict": "10.1.0.66:7000"},
		}
		if !reflect.DeepEqual(doc.Peers, want) {
			t.Errorf("peers --json\n%v\nwant\n%v", doc.Peers, want)
		}
	}
}

// The actions fingerprint changes with what a receiver does with a
// package, and only with that: a relative place is its absolute one, and
// the extraction caps decide whether an apply fails, not what it does.
func TestActionsFingerprint(t *testing.T) {
	t.Chdir(t.TempDir())
	wd, _ := os.Getwd()
	base := install.Config{To: "/opt/pkg", Extract: "/opt/app", Exec: "systemctl restart app"}
	fp := actionsFingerprint(base, "")
	for _, tc := range []struct {
		name  string
		ic    install.Config
		write string
		same  bool
	}{
		{"the same settings", base, "", true},
		{"other caps", install.Config{To: base.To, Extract: base.Extract, Exec: base.Exec, MaxExtractSize: "1GiB", MaxExtractEntries: 7}, "", true},
		{"another --to", install.Config{To: "/opt/other", Extract: base.Extract, Exec: base.Exec}, "", false},
		{"no --extract", install.Config{To: base.To, Exec: base.Exec}, "", false},
		{"another --exec", install.Config{To: base.To, Extract: base.Extract, Exec: "systemctl reload app"}, "", false},
		{"--stdin", install.Config{To: base.To, Extract: base.Extract, Exec: base.Exec, Stdin: true}, "", false},
		{"--write", base, "/dev/sdb", false},
		{"--to as --extract", install.Config{To: base.Extract, Extract: base.To, Exec: base.Exec}, "", false},
	} {
		if got := actionsFingerprint(tc.ic, tc.write); (got == fp) != tc.same {
			t.Errorf("%s: fingerprint %s, base %s: same %v, want %v", tc.name, got, fp, got == fp, tc.same)
		}
	}
	if a, b := actionsFingerprint(install.Config{To: "out"}, ""), actionsFingerprint(install.Config{To: filepath.Join(wd, "out")}, ""); a != b {
		t.Errorf("--to out and --to %s/out differ: %s, %s", wd, a, b)
	}
	// A disk is the machine's own and may have changed since: never up to date.
	if fp := actionsFingerprint(install.Config{}, "/dev/sdb"); fp != "" {
		t.Errorf("--write /dev/sdb has the fingerprint %q: a second session would skip a disk that may have changed", fp)
	}
}

// What the seed prints and exits with when nodes had the package already
// or were busy with another session: counted apart from failures, no rate
// when nothing was applied, and busy nodes fail the run saying what to do.
func TestSeedSaysUpToDateAndBusy(t *testing.T) {
	pkg := relay.ReportPackage{Name: "app.tar.gz", Size: 294 << 20, SHA256: strings.Repeat("ab", 32)}
	node := func(name, status, detail, err string, received int64) relay.ReportNode {
		return relay.ReportNode{ID: name + "0123456789abcdef", Name: name, Addr: "10.0.0.1:7000", Status: status, Detail: detail, Error: err,
			Bytes: pkg.Size, Received: received, Parents: []string{"", ""}}
	}
	upToDate := func(name string) relay.ReportNode { return node(name, "ok", "up to date", "", 0) }
	busy := func(name string) relay.ReportNode { return node(name, "busy", "", "busy with another session", 0) }
	for _, tc := range []struct {
		name    string
		nodes   []relay.ReportNode
		code    int
		summary string
		table   string // in the table
		err     string // in the error
	}{
		{"every node up to date", []relay.ReportNode{upToDate("a"), upToDate("b"), upToDate("c"), upToDate("d")}, 0,
			"app.tar.gz: 4 of 4 nodes ok (4 up to date), 0 failed; in 1.0s\n", "ok (up to date)", ""},
		{"every node busy", []relay.ReportNode{busy("a"), busy("b"), busy("c"), busy("d")}, exitFailed,
			"app.tar.gz: 0 of 4 nodes ok, 4 busy with another session, 0 failed; in 1.0s\n", "busy with another session",
			"4 of 4 nodes busy with another session (run the seed again once it is over, or with a --wait long enough for it)"},
		{"one applied, one up to date, one busy, one failed", []relay.ReportNode{node("a", "ok", "", "", pkg.Size), upToDate("b"), busy("c"), node("d", "failed", "", "lost: EOF", 0)}, exitFailed,
			"app.tar.gz: 2 of 4 nodes ok (1 up to date), 1 busy with another session, 1 failed; 294.0 MiB in 1.0s (294.0 MiB/s per node)\n", "lost: EOF",
			"1 of 4 nodes failed; 1 of 4 nodes busy with another session"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "r.json")
			var out, log bytes.Buffer
			end := &seedEnd{ctx: context.Background(), con: &console{out: &log}, out: &out, report: path, reportName: "--report", start: time.Now()}
			rep := end.emptyReport(pkg)
			rep.Nodes, rep.Seconds = tc.nodes, 1
			err := end.finish(rep, nil)
			if code := exitCodeOf(err); code != tc.code || tc.err != "" && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("exit %d (%v), want %d saying %q", code, err, tc.code, tc.err)
			}
			if lines := strings.SplitAfter(out.String(), "\n"); lines[len(lines)-2] != tc.summary {
				t.Errorf("summary %q, want %q", lines[len(lines)-2], tc.summary)
			}
			if !strings.Contains(out.String(), tc.table) {
				t.Errorf("table does not say %q:\n%s", tc.table, out.String())
			}
			b, _ := os.ReadFile(path)
			var r struct{ Nodes []relay.ReportNode }
			if err := json.Unmarshal(b, &r); err != nil || !reflect.DeepEqual(r.Nodes, tc.nodes) {
				t.Errorf("report nodes %s, want %+v (%v)", b, tc.nodes, err)
			}
		})
	}
}

// A receiver runs on one core, but not where GOMAXPROCS says how many,
// nor where it unpacks archives itself, beside its relaying.
func TestReceiverCores(t *testing.T) {
	for _, tc := range []struct {
		env  string
		ic   install.Config
		want bool
	}{
		{"", install.Config{To: "/opt/pkg"}, true},
		{"", install.Config{Exec: "./install.sh"}, true},
		{"", install.Config{}, true}, // --write alone
		{"4", install.Config{To: "/opt/pkg"}, false},
		{"", install.Config{Extract: "/opt/app"}, false},
		{"", install.Config{To: "/opt/pkg", Extract: "/opt/app"}, false},
	} {
		if got := oneCoreFor(tc.env, tc.ic); got != tc.want {
			t.Errorf("GOMAXPROCS=%q, %+v: one core %v, want %v", tc.env, tc.ic, got, tc.want)
		}
	}
}

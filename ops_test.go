package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// runOut runs the CLI with args and returns what it printed on stdout.
func runOut(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	err := app.RunContext(context.Background(), append([]string{"treecast"}, args...))
	return out.String(), err
}

// Every shell gets a script naming every visible command and flag, and
// none of the hidden ones; each parses in its shell where that is installed.
func TestCompletionPrintsAScriptForEachShell(t *testing.T) {
	check := map[string][]string{"bash": {"bash", "-n"}, "zsh": {"zsh", "-n"}, "fish": {"fish", "--no-execute"}}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			script, err := runOut(t, "completion", shell)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"seed", "join", "serve", "peers", "keygen", "secret", "version", "expect", "trust-any", "max-extract-size", "verbose"} {
				if !strings.Contains(script, want) {
					t.Errorf("script lacks %q", want)
				}
			}
			for _, hidden := range []string{"fault-", "'completion", "'man'", "generate-bash-completion"} {
				if strings.Contains(script, hidden) {
					t.Errorf("script offers the hidden %q", hidden)
				}
			}
			path, err := exec.LookPath(check[shell][0])
			if err != nil {
				t.Logf("%s is not installed: the script's syntax is not checked", shell)
				return
			}
			f := filepath.Join(t.TempDir(), "treecast."+shell)
			if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(path, append(check[shell][1:], f)...).CombinedOutput(); err != nil {
				t.Errorf("%s rejects the script: %v\n%s", shell, err, out)
			}
		})
	}
}

// In bash, the script completes commands, a command's flags, and a DIR
// flag's value with directories only.
func TestBashCompletionCompletes(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script, err := runOut(t, "completion", "bash")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "opt"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pkg.tar.gz"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ words, want string }{
		{"treecast se", "secret seed serve"},
		{"treecast seed --ex", "--expect"},
		{"treecast --verbose serve --trust-", "--trust-any"},
		{"treecast join --to ", "opt"},
		{"treecast seed --wait 3s ", "opt pkg.tar.gz"},
		{"treecast join --timeout ", ""},
	}
	for _, c := range cases {
		words := strings.Split(c.words, " ")
		prog := script + "\nCOMP_WORDS=(" + strings.Join(quoteAll(words), " ") + ")\nCOMP_CWORD=" + strconv.Itoa(len(words)-1) +
			"\n_treecast\nprintf '%s\\n' \"${COMPREPLY[@]}\" | sort | tr '\\n' ' '\n"
		cmd := exec.Command(bash, "--norc", "-c", prog)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", c.words, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != c.want {
			t.Errorf("%q completes to %q, want %q", c.words, got, c.want)
		}
	}
}

func quoteAll(words []string) []string {
	var out []string
	for _, w := range words {
		out = append(out, zshQuote(w))
	}
	return out
}

func TestCompletionNeedsAShell(t *testing.T) {
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		code, err := runApp(t, args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d (%v), want %d", args, code, err, exitUsage)
		}
	}
}

func TestManPage(t *testing.T) {
	page, err := runOut(t, "man")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page, ".TH treecast 1") {
		t.Errorf("no man page header:\n%.200s", page)
	}
	for _, want := range []string{"seed", "join", "serve", "peers", "keygen", "secret", "EXIT CODES", "--expect", "_treecast._tcp", "TREECAST_*", "DIR\\fR/<package name>"} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if strings.Contains(page, "fault-") {
		t.Error("man page shows the hidden fault-injection flags")
	}
}

func TestBuildInfo(t *testing.T) {
	vcs := &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261125101500-1a2b3c4d5e6f+dirty"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d"},
		{Key: "vcs.time", Value: "2026-11-25T10:15:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	tests := []struct {
		name   string
		linker buildInfo
		bi     *debug.BuildInfo
		want   string
	}{
		{"nothing known", buildInfo{}, &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "treecast (devel)"},
		{"go build in a repository", buildInfo{}, vcs, "treecast v0.0.0-20261125101500-1a2b3c4d5e6f+dirty (commit 1a2b3c4d5e6f+modified, 2026-11-25T10:15:00Z)"},
		{"release.sh", buildInfo{Version: "v1.2.0", Commit: "ffeeddccbbaa99887766", Date: "2026-12-01T08:00:00Z"}, vcs, "treecast v1.2.0 (commit ffeeddccbbaa, 2026-12-01T08:00:00Z)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.linker.completedFrom(tt.bi)
			if b.Version == "" {
				b.Version = "(devel)"
			}
			if got := b.String(); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// What the linker embeds is what `treecast version` prints.
func TestVersionPrintsTheEmbeddedVersion(t *testing.T) {
	saved := [3]string{version, commit, date}
	t.Cleanup(func() { version, commit, date = saved[0], saved[1], saved[2] })
	version, commit, date = "v1.2.0", "0123456789abcdef0123456789abcdef01234567", "2026-12-01T08:00:00Z"
	out, err := runOut(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if want := "treecast v1.2.0 (commit 0123456789ab, 2026-12-01T08:00:00Z), protocol "; !strings.HasPrefix(out, want) {
		t.Errorf("version printed %q, want it to start %q", out, want)
	}
}

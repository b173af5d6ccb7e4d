package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spool writes data as a verified package called name, in a directory of its
// own, and returns the Package describing it.
func spool(t *testing.T, name string, data []byte) Package {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spool")
	if err := os.WriteFile(p, data, 0o444); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return Package{Path: p, Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}

// names lists dir, sorted; a missing dir lists as nil.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestValidate(t *testing.T) {
	tests := []struct {
		cfg   Config
		field string // the field the error names; "" for valid
		want  string // substring of the error
	}{
		{Config{}, "", "nothing to apply"},
		{DefaultConfig(), "", "nothing to apply"},
		{Config{To: "/opt/pkg"}, "", ""},
		{Config{Extract: "rel/dir"}, "", ""},
		{Config{Exec: "true"}, "", ""},
		{Config{To: "/a", Extract: "/b", Exec: "c"}, "", ""},
		{Config{To: "   "}, "To", `To "   ": want a directory such as /opt/app, not a blank one`},
		{Config{Extract: "\t"}, "Extract", `Extract "\t": want a directory such as /opt/app, not a blank one`},
		{Config{To: "/opt/pkg "}, "To", "leading or trailing spaces"},
		{Config{To: "/opt/\x00pkg"}, "To", "NUL"},
		{Config{Extract: "/"}, "Extract", "not the root directory"},
		{Config{Extract: "//"}, "Extract", "not the root directory"},
		{Config{Exec: "  \n"}, "Exec", "not a blank one"},
		{Config{Exec: "echo \x00"}, "Exec", "NUL"},
		{Config{Extract: "/a", MaxExtractSize: "2GiB", MaxExtractEntries: 1 << 20}, "", ""},
		{Config{Extract: "/a", MaxExtractSize: "lots"}, "MaxExtractSize", "a positive size"},
		{Config{Extract: "/a", MaxExtractSize: "-1"}, "MaxExtractSize", "a positive size"},
		{Config{Extract: "/a", MaxExtractSize: "9000000TiB"}, "MaxExtractSize", "a positive size"},
		{Config{Extract: "/a", MaxExtractEntries: -1}, "MaxExtractEntries", "1 to 1048576"},
		{Config{Extract: "/a", MaxExtractEntries: 1<<20 + 1}, "MaxExtractEntries", "1 to 1048576"},
		{Config{Exec: "true", ExecTimeout: -time.Second}, "ExecTimeout", "or 0 for no bound"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		var ce *ConfigError
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tt.cfg, err)
		case tt.want == "":
		case err == nil || !strings.Contains(err.Error(), tt.want):
			t.Errorf("%+v: error %v, want it to contain %q", tt.cfg, err, tt.want)
		case tt.field == "" && !errors.Is(err, ErrNothingToApply):
			t.Errorf("%+v: error %v, want ErrNothingToApply", tt.cfg, err)
		case tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field):
			t.Errorf("%+v: error %v, want a *ConfigError for %s", tt.cfg, err, tt.field)
		}
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "nothing"},
		{Config{To: "/opt/pkg", Exec: "systemctl restart app"}, "copy to /opt/pkg, run `systemctl restart app`"},
		{Config{To: "/a", Extract: "/b", Exec: "c"}, "copy to /a, extract into /b, run `c`"},
		{Config{Extract: "/srv/app"}, "extract into /srv/app"},
	}
	for _, tt := range tests {
		if got := tt.cfg.Describe(); got != tt.want {
			t.Errorf("%+v: Describe() = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}

func TestApplyRefusesBadPackage(t *testing.T) {
	good := spool(t, "app.bin", []byte("payload"))
	tests := []struct {
		name string
		pkg  func(p Package) Package
		want string
	}{
		{"slash in name", func(p Package) Package { p.Name = "../app.bin"; return p }, "not a plain file name"},
		{"dot name", func(p Package) Package { p.Name = "."; return p }, "not a plain file name"},
		{"dotdot name", func(p Package) Package { p.Name = ".."; return p }, "not a plain file name"},
		{"empty name", func(p Package) Package { p.Name = ""; return p }, "not a plain file name"},
		{"NUL in name", func(p Package) Package { p.Name = "a\x00b"; return p }, "not a plain file name"},
		{"uppercase hash", func(p Package) Package { p.SHA256 = strings.ToUpper(p.SHA256); return p }, "not 64 lowercase hex"},
		{"short hash", func(p Package) Package { p.SHA256 = "abc"; return p }, "not 64 lowercase hex"},
		{"size mismatch", func(p Package) Package { p.Size++; return p }, "changed after it was verified"},
		{"missing file", func(p Package) Package { p.Path += ".gone"; return p }, "no such file"},
		{"directory", func(p Package) Package { p.Path = filepath.Dir(p.Path); return p }, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := filepath.Join(t.TempDir(), "to")
			err := Apply(context.Background(), Config{To: to}, tt.pkg(good))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply: %v, want error containing %q", err, tt.want)
			}
			if got := names(t, to); got != nil {
				t.Errorf("destination holds %v after a refused package", got)
			}
		})
	}
	if readFile(t, good.Path) != "payload" {
		t.Error("the spool file was modified")
	}
}

func TestApplyOrderAndEnv(t *testing.T) {
	pkg := spool(t, "site.tar", buildTar(t, []tarEntry{{name: "index.html", body: "<h1>hi</h1>"}}))
	base := t.TempDir()
	to, ext, out := filepath.Join(base, "to"), filepath.Join(base, "www"), filepath.Join(base, "out")
	// The command sees the copy and the extracted tree, so both ran before it.
	cmd := `cat "$TREECAST_FILE" | wc -c > ` + out + `; cat ` + filepath.Join(ext, "index.html") + ` >> ` + out
	if err := Apply(context.Background(), Config{To: to, Extract: ext, Exec: cmd}, pkg); err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(readFile(t, out))
	if len(got) != 2 || got[0] != strconv.FormatInt(pkg.Size, 10) || got[1] != "<h1>hi</h1>" {
		t.Errorf("command saw %q, want size %d and the extracted page", got, pkg.Size)
	}
}

func TestApplyStopsAtFirstFailure(t *testing.T) {
	pkg := spool(t, "notes.txt", []byte("not an archive"))
	base := t.TempDir()
	to, ext, marker := filepath.Join(base, "to"), filepath.Join(base, "x"), filepath.Join(base, "ran")
	err := Apply(context.Background(), Config{To: to, Extract: ext, Exec: "touch " + marker}, pkg)
	if err == nil || !strings.Contains(err.Error(), "extract notes.txt into "+ext) {
		t.Fatalf("Apply: %v, want an extract error", err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Error("exec ran after extract failed")
	}
	if readFile(t, filepath.Join(to, "notes.txt")) != "not an archive" {
		t.Error("copy, which ran first, did not place the file")
	}
}

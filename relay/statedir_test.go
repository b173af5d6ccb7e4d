package relay

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A successful session removes spool files of interrupted sessions, and
// only those: what else is in the spool folder stays.
func TestSessionCleanupRemovesOnlySpoolFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 200<<10)
	dir := t.TempDir()
	stale := strings.Repeat("5a", 32)
	writeFiles(t, dir, map[string]string{
		"spool/" + stale + ".part":     "stale data",
		"spool/" + stale + ".have":     "stale state",
		"spool/" + stale + ".have.tmp": "stale state, half written",
	})
	strays := map[string]string{
		"spool/notes.txt":                           "an operator's notes",
		"spool/app.bin":                             "a package placed here by hand",
		"spool/" + stale + ".part.bak":              "a backup",
		"spool/" + strings.ToUpper(stale) + ".part": "not a name treecast gives",
		"spool/cron/job":                            "a system's spool",
	}
	writeFiles(t, dir, strays)
	outside := filepath.Join(t.TempDir(), "target")
	writeFiles(t, filepath.Dir(outside), map[string]string{"target": "linked to"})
	if err := os.Symlink(outside, filepath.Join(dir, "spool", strings.Repeat("6b", 32)+".part")); err != nil {
		t.Fatal(err)
	}

	nodes := startNodes(t, ctx, cfg, 1, func(_ int, o *ReceiverOptions, _ *context.Context) { o.Dir = dir })
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	res := <-nodes[0].applied
	if res.Err != nil || rep.Failed() != 0 {
		t.Fatalf("session failed: %v %+v", res.Err, rep.Nodes)
	}
	if got, _ := os.ReadFile(nodes[0].dest); !bytes.Equal(got, data) {
		t.Fatal("applied bytes differ")
	}
	for name, body := range strays {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != body {
			t.Errorf("%s: %q, %v; want it kept as it was", name, got, err)
		}
	}
	if got, err := os.ReadFile(outside); err != nil || string(got) != "linked to" {
		t.Errorf("a symlink's target: %q, %v", got, err)
	}
	var left []string
	ents, _ := os.ReadDir(filepath.Join(dir, "spool"))
	for _, e := range ents {
		left = append(left, e.Name())
	}
	for _, gone := range []string{stale + ".part", stale + ".have", stale + ".have.tmp", res.Package.SHA256 + ".part", res.Package.SHA256 + ".have"} {
		if slices.Contains(left, gone) {
			t.Errorf("spool file %s was not removed", gone)
		}
	}
}

func TestSymlinkedStatePartsRefused(t *testing.T) {
	for _, part := range []string{"spool", "lock", "node-id", "applied.json", "applied.json.tmp"} {
		t.Run(part, func(t *testing.T) {
			dir, elsewhere := t.TempDir(), t.TempDir()
			writeFiles(t, elsewhere, map[string]string{"cron/job": "someone else's"})
			if err := os.Symlink(elsewhere, filepath.Join(dir, part)); err != nil {
				t.Fatal(err)
			}
			err := CheckStateDir(dir)
			if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, part)+" is a symlink") {
				t.Fatalf("CheckStateDir: %v, want it to name the symlink", err)
			}
			_, err = NewReceiver(testConfig(), ReceiverOptions{Dir: dir, Apply: copyApply(filepath.Join(t.TempDir(), "out"))})
			if err == nil || !strings.Contains(err.Error(), "is a symlink") {
				t.Errorf("NewReceiver: %v, want the symlink refused", err)
			}
			if got, _ := os.ReadFile(filepath.Join(elsewhere, "cron/job")); string(got) != "someone else's" {
				t.Errorf("the link's target changed: %q", got)
			}
		})
	}
	t.Run("the folder itself may be a link", func(t *testing.T) {
		real := t.TempDir()
		link := filepath.Join(t.TempDir(), "state")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		if err := CheckStateDir(link); err != nil {
			t.Errorf("CheckStateDir: %v", err)
		}
	})
}

// A spool folder made a symlink while the receiver runs fails that node's
// next session, with the reason in the seed's report; nothing is written
// where it points.
func TestSymlinkedSpoolFailsTheSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, _ := writePackage(t, 100<<10)
	dir, elsewhere := t.TempDir(), t.TempDir()
	writeFiles(t, elsewhere, map[string]string{"mail/root": "someone else's"})
	nodes := startNodes(t, ctx, cfg, 1, func(_ int, o *ReceiverOptions, _ *context.Context) { o.Dir = dir })
	if err := os.Symlink(elsewhere, filepath.Join(dir, "spool")); err != nil {
		t.Fatal(err)
	}
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	if rep.Nodes[0].Status != StatusFailed || !strings.Contains(rep.Nodes[0].Error, filepath.Join(dir, "spool")+" is a symlink") {
		t.Errorf("node: %s %q, want failed naming the symlinked spool", rep.Nodes[0].Status, rep.Nodes[0].Error)
	}
	cancel()
	<-nodes[0].applied
	ents, _ := os.ReadDir(elsewhere)
	if len(ents) != 1 || ents[0].Name() != "mail" {
		t.Errorf("the link's target holds %v, want only mail", ents)
	}
	if _, err := os.Stat(nodes[0].dest); err == nil {
		t.Error("the node applied a package")
	}
}

func TestSpoolFileSymlinkRefused(t *testing.T) {
	_, m := spoolFixture()
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "passwd")
	writeFiles(t, filepath.Dir(outside), map[string]string{"passwd": "root:x:0:0"})
	part, _ := spoolPaths(dir, m)
	if err := os.MkdirAll(filepath.Dir(part), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, part); err != nil {
		t.Fatal(err)
	}
	s, err := openSpool(dir, m)
	if err == nil {
		s.close()
		t.Fatal("opened a spool through a symlink")
	}
	if !strings.Contains(err.Error(), part) {
		t.Errorf("error %q does not name %s", err, part)
	}
	if got, _ := os.ReadFile(outside); string(got) != "root:x:0:0" {
		t.Errorf("the link's target changed: %q", got)
	}
}

func TestInStateDir(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "state")
	writeFiles(t, dir, map[string]string{"spool/x": ""})
	if err := os.Symlink(filepath.Join(dir, "spool"), filepath.Join(base, "into")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{dir, true},
		{dir + "/", true},
		{filepath.Join(dir, "spool"), true},
		{filepath.Join(dir, "new", "deeper"), true},
		{filepath.Join(base, "into"), true},
		{filepath.Join(base, "into", "sub"), true},
		{filepath.Join(dir, "..", "state", "spool"), true},
		{base, false},
		{filepath.Join(base, "state2"), false},
		{filepath.Join(base, "other", "spool"), false},
		{"/", false},
	} {
		got, err := InStateDir(dir, tc.path)
		if err != nil || got != tc.want {
			t.Errorf("InStateDir(%s): %v, %v; want %v", tc.path, got, err, tc.want)
		}
	}
}

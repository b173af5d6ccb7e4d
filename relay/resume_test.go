package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"testing"
	"time"
)

// A spool left by an earlier session, whose data file was damaged (bit
// rot, a crash on a filesystem that reorders writes, a hand in the state
// folder) while its state file says every block is held, is checked as it
// is resumed: the damaged chunk is fetched again, and what is applied is
// the package (--extract and --exec read the spool as it is; only --to
// reads it back).
func TestResumedSpoolIsCheckedBeforeItIsApplied(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 1<<20+77)
	m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	var applied []byte
	nodes := startNodes(t, ctx, cfg, 1, func(i int, o *ReceiverOptions, _ *context.Context) {
		// An earlier, interrupted session of the same package held it all.
		s, err := openSpool(o.Dir, m)
		if err != nil {
			t.Fatal(err)
		}
		for g := range m.Blocks() {
			if err := s.put(g, blockOf(data, m, g)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.sync(); err != nil {
			t.Fatal(err)
		}
		s.close()
		// Then the data file is damaged, the state file untouched.
		f, _ := os.OpenFile(s.path, os.O_RDWR, 0)
		f.WriteAt([]byte("EVIL"), 4096)
		f.Close()
		o.Apply = func(_ context.Context, p Package) error { // as --extract / --exec read it
			applied, _ = os.ReadFile(p.Path)
			return nil
		}
	})
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peersOf(nodes)})
	if err != nil {
		t.Fatal(err)
	}
	res := <-nodes[0].applied
	if res.Err != nil || rep.Nodes[0].Status != StatusOK || !bytes.Equal(applied, data) {
		t.Errorf("%s, %v: applied %d bytes with sha256 %x, the signed package is %x",
			rep.Nodes[0].Status, res.Err, len(applied), sha256.Sum256(applied), sha256.Sum256(data))
	}
	if res.Received == 0 {
		t.Errorf("nothing fetched: the damaged chunk was taken as held")
	}
}

package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"strings"
	"testing"
	"time"
)

// offerOnce runs one session of signed to a single fresh receiver and
// returns the report and whether the receiver applied anything.
func offerTo(t *testing.T, ctx context.Context, n *testNode, signed *Signed, path string) *Report {
	t.Helper()
	rep, err := RunSeed(ctx, testConfig(), SeedOptions{Signed: signed, Path: path, Peers: peersOf([]*testNode{n})})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	return rep
}

func TestRefusalsApplyNothingAndSayWhy(t *testing.T) {
	path, _ := writePackage(t, 200<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, seedKey, _ := ed25519.GenerateKey(rand.Reader)
	trusted := seedKey.Public().(ed25519.PublicKey)
	_, strangerKey, _ := ed25519.GenerateKey(rand.Reader)
	fresh := func() *Manifest {
		m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		signed func() *Signed
		want   string
	}{
		{"untrusted key", func() *Signed { return Sign(fresh(), strangerKey) }, "not trusted"},
		{"tampered manifest", func() *Signed {
			s := Sign(fresh(), seedKey)
			s.raw = bytes.Clone(s.raw)
			s.raw[len(s.raw)-1] ^= 1 // a chunk hash
			return s
		}, "signature"},
		{"unsigned", func() *Signed {
			s := Sign(fresh(), seedKey)
			s.sig = make([]byte, ed25519.SignatureSize)
			return s
		}, "signature"},
		{"expired", func() *Signed {
			m := fresh()
			m.Created, m.Expires = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
			return Sign(m, seedKey)
		}, "expired"},
		{"larger than the disk", func() *Signed {
			m := fresh()
			m.Size = 1 << 40
			m.ChunkSize = MaxChunkSize
			m.Chunks = make([][32]byte, chunkCount(m.Size, m.ChunkSize))
			return Sign(m, seedKey)
		}, "free"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := startNodes(t, ctx, testConfig(), 1, func(_ int, o *ReceiverOptions, _ *context.Context) {
				o.Trust = func(k ed25519.PublicKey) error {
					if !k.Equal(trusted) {
						return &RefusedError{Reason: "seed key " + Fingerprint(k) + " is not trusted here"}
					}
					return nil
				}
			})
			rep := offerTo(t, ctx, nodes[0], tc.signed(), path)
			if rep.Nodes[0].Status != StatusFailed || !strings.Contains(rep.Nodes[0].Error, tc.want) {
				t.Errorf("report: %q %q, want failed mentioning %q", rep.Nodes[0].Status, rep.Nodes[0].Error, tc.want)
			}
			if _, err := os.Stat(nodes[0].dest); err == nil {
				t.Errorf("the package was applied")
			}
			spool, _ := os.ReadDir(nodes[0].r.opt.Dir + "/spool")
			for _, e := range spool {
				if info, _ := e.Info(); info != nil && info.Size() > 0 {
					t.Errorf("spool holds %s (%d bytes) after a refusal", e.Name(), info.Size())
				}
			}
		})
	}
}

// A serve agent refuses a replayed session and an older release of the
// same package, unless downgrades are allowed.
func TestRollbackProtection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	path, data := writePackage(t, 100<<10)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	old, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	old.Created = old.Created.Add(-time.Minute)
	oldSigned := Sign(old, key)
	cur, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	curSigned := Sign(cur, key)

	cfg := testConfig()
	dir := t.TempDir()
	dest := dir + "/out"
	r, err := NewReceiver(cfg, ReceiverOptions{Name: "agent", Dir: dir, Apply: copyApply(dest)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	agent := &testNode{r: r}
	serve := func() chan Result {
		ch := make(chan Result, 1)
		go func() {
			res, err := r.Next(ctx)
			if err != nil {
				res.Err = err
			}
			ch <- res
		}()
		return ch
	}

	done := serve()
	if rep := offerTo(t, ctx, agent, curSigned, path); rep.Failed() != 0 {
		t.Fatalf("first session: %+v", rep.Nodes)
	}
	if res := <-done; res.Err != nil {
		t.Fatal(res.Err)
	}
	os.Remove(dest)

	// The very session again is answered "applied": nothing runs again.
	done = serve()
	if rep := offerTo(t, ctx, agent, curSigned, path); rep.Failed() != 0 || rep.Nodes[0].Received != 0 {
		t.Errorf("replay of the applied session: %+v, want ok with nothing sent", rep.Nodes)
	}
	if res := <-done; res.Err != nil || !res.Already {
		t.Errorf("replay of the applied session at the agent: %+v", res)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Errorf("replay: applied again")
	}

	// An older one from the same key for the same group is refused, whatever its name.
	done = serve()
	old.Name = "renamed-" + old.Name
	oldSigned = Sign(old, key)
	rep := offerTo(t, ctx, agent, oldSigned, path)
	if rep.Nodes[0].Status != StatusFailed || !strings.Contains(rep.Nodes[0].Error, "downgrade") {
		t.Errorf("older release: %q %q, want failed mentioning downgrade", rep.Nodes[0].Status, rep.Nodes[0].Error)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Errorf("older release: applied")
	}
	r.opt.AllowDowngrade = true
	if rep := offerTo(t, ctx, agent, oldSigned, path); rep.Failed() != 0 {
		t.Fatalf("allowed downgrade: %+v", rep.Nodes)
	}
	<-done
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, data) {
		t.Errorf("allowed downgrade not applied")
	}
}

// A relay that flips a bit is caught by its child, which fetches the
// chunk again elsewhere; the liar is reported and nothing corrupt is applied.
func TestCorruptRelayIsReportedAndBypassed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 2<<20+99)
	nodes := startNodes(t, ctx, cfg, 6, func(i int, o *ReceiverOptions, _ *context.Context) {
		if i == 0 {
			// A chunk of each stripe: it relays one of them, whichever
			// tree it is inner in (the order nodes accept decides).
			o.CorruptChunk = func(i int) bool { return i == 4 || i == 5 }
		}
	})
	rep := seedSession(t, ctx, cfg, path, 64<<10, peersOf(nodes))
	if rep.Nodes[0].Status != StatusFailed || !strings.Contains(rep.Nodes[0].Error, "(chunk 4)") && !strings.Contains(rep.Nodes[0].Error, "(chunk 5)") {
		t.Errorf("liar: %q %q", rep.Nodes[0].Status, rep.Nodes[0].Error)
	}
	for i, n := range nodes[1:] {
		res := <-n.applied
		if res.Err != nil || rep.Nodes[i+1].Status != StatusOK {
			t.Errorf("node %d: %v %+v", i+1, res.Err, rep.Nodes[i+1])
		}
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("node %d: bytes differ", i+1)
		}
	}
}

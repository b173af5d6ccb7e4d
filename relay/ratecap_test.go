package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{
		"": 0, "0": 0, "20mbit": 2_500_000, "1.5Gbit/s": 187_500_000, "800kbit": 100_000,
		"5MB/s": 5_000_000, "2MiB/s": 2 << 20, "500KB": 500_000, "64kib/s": 64 << 10,
	} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"fast", "-1mbit", "10", "10 furlongs", "1bit"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
}

// A seed capped at a rate never sends faster than it, and the session
// still delivers identical bytes.
func TestMaxRateCapsTheSeed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.MaxRate = "8MB/s"
	path, data := writePackage(t, 4<<20)
	nodes := startNodes(t, ctx, cfg, 2, nil)
	m, _ := BuildManifest(ctx, path, 1<<20, time.Hour, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	start := time.Now()
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peersOf(nodes)})
	took := time.Since(start)
	if err != nil || rep.Failed() != 0 {
		t.Fatalf("session: %v %+v", err, rep)
	}
	for i, n := range nodes {
		<-n.applied
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("node %d: bytes differ", i)
		}
	}
	floor := time.Duration(float64(rep.Uploaded-capBurst) / 8e6 * float64(time.Second))
	if took < floor {
		t.Errorf("the seed sent %d bytes in %s: faster than 8 MB/s (at least %s)", rep.Uploaded, took, floor)
	}
	if rep.MaxRate != "8MB/s" {
		t.Errorf("the report says the cap was %q", rep.MaxRate)
	}
}

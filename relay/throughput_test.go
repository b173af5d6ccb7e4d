package relay

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkRelayLoopback moves one package from a seed to two nodes over
// loopback, each relaying half of it to the other (two trees): the bytes of
// a seed → node → node chain, unshaped, so the CPU is the limit.
// TREECAST_BENCH_MIB sets the package size (default 256); the work files go
// to TMPDIR.
func BenchmarkRelayLoopback(b *testing.B) {
	mib := 256
	if v, err := strconv.Atoi(os.Getenv("TREECAST_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	size := int64(mib) << 20
	path := filepath.Join(b.TempDir(), "pkg.bin")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	f.Write(testData(int(size)))
	f.Close()
	cfg := testConfig()
	m, err := BuildManifest(context.Background(), path, 1<<20, time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	signed := Sign(m, testKey(1))
	b.SetBytes(size)
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		nodes := startNodes(b, ctx, cfg, 2, func(_ int, o *ReceiverOptions, _ *context.Context) {
			o.Apply = func(context.Context, Package) error { return nil }
		})
		rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: signed, Path: path, Peers: peersOf(nodes)})
		if err != nil {
			b.Fatal(err)
		}
		if rep.Failed() != 0 {
			b.Fatalf("report: %+v", rep.Nodes)
		}
		for _, n := range nodes {
			<-n.applied
		}
		cancel()
	}
}

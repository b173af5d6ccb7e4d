package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// With a write target, blocks land on the target as they arrive. A session
// of package B stopped part-way leaves the target half B; the next session
// of A, which was applied before B began, is not up to date: it is written
// again, and the target holds A.
func TestInterruptedWriteIsNotUpToDate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.SeedTimeout = 2 * time.Second
	pathA, dataA := writePackage(t, 4<<20)
	pathB, _ := writePackage(t, 4<<20)
	target := filepath.Join(t.TempDir(), "disk.img")
	_, key, _ := ed25519.GenerateKey(rand.Reader)

	var phase atomic.Int32
	var stopB context.CancelFunc
	var stopped atomic.Bool
	results := make(chan Result, 4)
	opt := ReceiverOptions{Name: "n0", Dir: t.TempDir(), Write: target, Actions: "write",
		Apply: func(context.Context, Package) error { return nil },
		Progress: func(p ReceiverProgress) {
			if phase.Load() == 2 && p.Verified >= 512<<10 && p.Verified < p.Size && stopped.CompareAndSwap(false, true) {
				stopB() // the operator stops the seed of B part-way
			}
		}}
	rand.Read(opt.ID[:])
	r, err := NewReceiver(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	go func() {
		for ctx.Err() == nil {
			res, err := r.Next(ctx)
			if err != nil && res.Err == nil {
				res.Err = err
			}
			results <- res
		}
	}()
	peers := peersOf([]*testNode{{r: r, id: opt.ID}})
	run := func(c context.Context, path string, scfg Config) *Report {
		m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		rep, _ := RunSeed(c, scfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers})
		return rep
	}

	phase.Store(1)
	run(ctx, pathA, cfg)
	if res := <-results; res.Err != nil {
		t.Fatalf("A: %v", res.Err)
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, dataA) {
		t.Fatal("A not written")
	}

	phase.Store(2)
	slow := cfg
	slow.MaxRate = "4MiB/s"
	bctx, c2 := context.WithCancel(ctx)
	stopB = c2
	run(bctx, pathB, slow)
	res := <-results
	t.Logf("B: err %v", res.Err)

	phase.Store(3)
	rep := run(ctx, pathA, cfg)
	res = <-results
	t.Logf("A again: err %v up to date %v status %s", res.Err, res.UpToDate, rep.Nodes[0].Status)
	got, _ := os.ReadFile(target)
	if res.Err != nil || res.UpToDate || !bytes.Equal(got, dataA) {
		diff := 0
		for i := range got {
			if i < len(dataA) && got[i] != dataA[i] {
				diff++
			}
		}
		t.Errorf("A re-sent: %v, up to date %v, and %d bytes of the target differ from A", res.Err, res.UpToDate, diff)
	}
}

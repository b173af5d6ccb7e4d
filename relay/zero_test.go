package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A package with empty stretches (whole empty chunks, empty blocks among
// full ones, an empty tail) arrives byte for byte, and no node downloads
// a byte of its empty blocks.
func TestEmptyBlocksCrossNoLink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const mib, blk = 1 << 20, DefaultBlockSize
	data := make([]byte, 6*mib-100)
	rand.Read(data[:mib])                           // chunk 0: data
	for g := 3 * mib / blk; g < 4*mib/blk; g += 2 { // chunk 3: every other block empty
		rand.Read(data[g*blk : (g+1)*blk])
	}
	rand.Read(data[4*mib : 5*mib])  // chunk 4: data
	rand.Read(data[len(data)-100:]) // chunk 5: empty but its last 100 bytes
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var full int64 // bytes of blocks that are not all zeros
	for off := 0; off < len(data); off += blk {
		b := data[off:min(off+blk, len(data))]
		if !bytes.Equal(b, make([]byte, len(b))) {
			full += int64(len(b))
		}
	}
	cfg := testConfig()
	nodes := startNodes(t, ctx, cfg, 6, nil)
	rep := seedSession(t, ctx, cfg, path, mib, peersOf(nodes))
	if rep.Failed() != 0 {
		t.Fatalf("session: %+v", rep.Nodes)
	}
	for i, n := range nodes {
		res := <-n.applied
		if got, _ := os.ReadFile(n.dest); !bytes.Equal(got, data) {
			t.Errorf("node %d: bytes differ", i)
		}
		if res.Received != full || res.Empty != int64(len(data))-full {
			t.Errorf("node %d downloaded %d bytes and held %d empty, want %d and %d", i, res.Received, res.Empty, full, int64(len(data))-full)
		}
	}
	if rep.Uploaded > 2*full {
		t.Errorf("the seed uploaded %d bytes for %d bytes of data", rep.Uploaded, full)
	}
}

// What compresses travels compressed: the seed sends compressed blocks
// and relays forward them compressed, sealed or not; every copy is
// byte-identical.
func TestCompressibleTravelsCompressed(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(map[bool]string{false: "clear", true: "sealed"}[sealed], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var text bytes.Buffer
			for i := 0; text.Len() < 3<<20; i++ {
				fmt.Fprintf(&text, "%08d sensor %d reads %d.%d C at station %d\n", i, i%97, 20+i%13, i%10, i%7)
			}
			data := text.Bytes()
			path := filepath.Join(t.TempDir(), "log.txt")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig()
			var sec *Secret
			if sealed {
				sec = testSecret(t, "a fleet secret for compressed blocks")
			}
			nodes := startNodes(t, ctx, cfg, 6, func(_ int, o *ReceiverOptions, _ *context.Context) { o.Secret = sec })
			var seen bytes.Buffer
			var mu sync.Mutex
			peers := peersOf(nodes)
			for i := range peers {
				peers[i].Addr = tap(t, ctx, peers[i].Addr, &seen, &mu)
			}
			m, _ := BuildManifest(ctx, path, 1<<20, time.Hour, nil)
			_, key, _ := ed25519.GenerateKey(rand.Reader)
			rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers, Secret: sec, Compress: true})
			if err != nil {
				t.Fatal(err)
			}
			for i, n := range nodes {
				res := <-n.applied
				if got, _ := os.ReadFile(n.dest); res.Err != nil || !bytes.Equal(got, data) {
					t.Errorf("node %d: %v, identical %v", i, res.Err, bytes.Equal(got, data))
				}
			}
			if rep.Failed() != 0 {
				t.Fatalf("session: %+v", rep.Nodes)
			}
			if rep.Uploaded > int64(len(data))/2 {
				t.Errorf("the seed sent %d bytes of a %d-byte package that compresses well", rep.Uploaded, len(data))
			}
			// Every byte a node got from another node crossed a tap; four
			// of the six got the whole package that way, each in a
			// quarter of its size at most (it shrinks tenfold).
			mu.Lock()
			defer mu.Unlock()
			if relayed := seen.Len(); relayed > 4*len(data)/4 {
				t.Errorf("relays moved %d bytes for 4 copies of %d: not forwarded compressed", relayed, len(data))
			}
			t.Logf("package %d bytes, the seed sent %d, the relays %d", len(data), rep.Uploaded, seen.Len())
		})
	}
}

// sparsePackage writes a package of empty and full stretches and returns
// its path, its bytes, and how many of them are in blocks that are not
// empty.
func sparsePackage(t *testing.T) (string, []byte, int64) {
	t.Helper()
	const mib, blk = 1 << 20, DefaultBlockSize
	data := make([]byte, 6*mib-100)
	rand.Read(data[:mib])
	for g := 3 * mib / blk; g < 4*mib/blk; g += 2 {
		rand.Read(data[g*blk : (g+1)*blk])
	}
	rand.Read(data[4*mib : 5*mib])
	rand.Read(data[len(data)-100:])
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var full int64
	for off := 0; off < len(data); off += blk {
		b := data[off:min(off+blk, len(data))]
		if !bytes.Equal(b, make([]byte, len(b))) {
			full += int64(len(b))
		}
	}
	return path, data, full
}

// With a write target, every verified block goes to its place in the
// target as it arrives; a seed that dies and runs again resumes every
// node from what its target verifiably holds, each full block downloaded
// once, and the state folder stays small.
func TestWriteTargetResumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data, full := sparsePackage(t)
	targets, dirs := make([]string, 5), make([]string, 5)
	var once sync.Once
	sctx, killSeed := context.WithCancel(ctx)
	nodes := startNodes(t, ctx, cfg, 5, func(i int, o *ReceiverOptions, _ *context.Context) {
		targets[i], dirs[i] = filepath.Join(t.TempDir(), "sda.img"), o.Dir
		garbage := bytes.Repeat([]byte{0xaa}, len(data)+12345) // an old image, longer
		if err := os.WriteFile(targets[i], garbage, 0o644); err != nil {
			t.Fatal(err)
		}
		o.Write = targets[i]
		o.Apply = func(context.Context, Package) error { return nil }
		if i == 4 {
			o.Progress = func(p ReceiverProgress) {
				if p.Verified > p.Size/2 {
					once.Do(killSeed)
				}
			}
		}
	})
	peers := peersOf(nodes)
	peers[0].Addr = throttle(t, ctx, peers[0].Addr)
	m, _ := BuildManifest(ctx, path, 1<<20, time.Hour, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	RunSeed(sctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers})
	first := make([]Result, len(nodes))
	for i, n := range nodes {
		first[i] = <-n.applied
		go func() {
			res, err := n.r.Next(ctx)
			if err != nil && res.Err == nil {
				res.Err = err
			}
			n.applied <- res
		}()
	}
	m2, _ := BuildManifest(ctx, path, 1<<20, time.Hour, nil)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m2, key), Path: path, Peers: peersOf(nodes)})
	if err != nil {
		t.Fatal(err)
	}
	resumed := 0
	for i, n := range nodes {
		res := <-n.applied
		if got, _ := os.ReadFile(targets[i]); res.Err != nil || !bytes.Equal(got, data) {
			t.Errorf("node %d: %v, target identical %v", i, res.Err, bytes.Equal(got, data))
		}
		if !rep.Nodes[i].Flushed {
			t.Errorf("node %d: the report does not say its target was flushed", i)
		}
		if first[i].Err == nil {
			continue // applied before the seed died: that session stands
		}
		if first[i].Received > 0 {
			resumed++
		}
		if got := first[i].Received + res.Received; got != full {
			t.Errorf("node %d downloaded %d then %d bytes, %d in all; the full blocks are %d", i, first[i].Received, res.Received, got, full)
		}
		var state int64
		filepath.Walk(dirs[i], func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				state += fi.Size()
			}
			return nil
		})
		if state > 1<<20 {
			t.Errorf("node %d: the state folder holds %d bytes", i, state)
		}
	}
	if resumed == 0 {
		t.Errorf("no node resumed: the seed was not killed mid-transfer")
	}
}

// A stream apply gets the package in order while it arrives; a slow one
// holds up no other node, and one that fails fails its node only.
func TestStreamApply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 3<<20)
	got := make([]bytes.Buffer, 6)
	var doneAt [6]time.Time
	nodes := startNodes(t, ctx, cfg, 6, func(i int, o *ReceiverOptions, _ *context.Context) {
		o.Apply = func(context.Context, Package) error { doneAt[i] = time.Now(); return nil }
		o.Stream = func(_ context.Context, _ Package, in io.Reader) error {
			buf := make([]byte, 16<<10)
			for {
				n, err := in.Read(buf)
				got[i].Write(buf[:n])
				switch {
				case i == 5 && got[i].Len() > len(data)/2:
					return errors.New("the command exited 2")
				case err == io.EOF:
					return nil
				case err != nil:
					return err
				}
				if i == 0 {
					time.Sleep(5 * time.Millisecond) // a slow command: 3 MiB in about a second
				}
			}
		}
	})
	rep := seedSession(t, ctx, cfg, path, 1<<20, peersOf(nodes))
	for i, n := range nodes {
		res := <-n.applied
		switch i {
		case 5:
			if res.Err == nil || rep.Nodes[i].Status != StatusFailed {
				t.Errorf("node %d, whose command failed: %v, %s", i, res.Err, rep.Nodes[i].Status)
			}
		default:
			if res.Err != nil || !bytes.Equal(got[i].Bytes(), data) {
				t.Errorf("node %d: %v, the command got the package %v", i, res.Err, bytes.Equal(got[i].Bytes(), data))
			}
		}
	}
	for i := 1; i < 5; i++ {
		if doneAt[i].After(doneAt[0]) {
			t.Errorf("node %d finished after the slow node 0: the slow command held it up", i)
		}
	}
}

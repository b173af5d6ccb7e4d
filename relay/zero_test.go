package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
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

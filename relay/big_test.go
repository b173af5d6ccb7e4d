package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A package over 4 GiB crosses every 32-bit boundary in sizes and offsets.
func TestSessionOver4GiB(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	size := int64(4<<30 + 4099)
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	// Marks where a 32-bit offset would wrap, plus the very end.
	marks := map[int64][]byte{}
	for _, off := range []int64{0, 1<<32 - 8, 1<<32 - 2, size - 5} {
		b := make([]byte, 5)
		rand.Read(b)
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		marks[off] = b
	}
	f.Close()
	cfg := testConfig()
	checked := make(chan error, 1)
	nodes := startNodes(t, ctx, cfg, 1, func(_ int, o *ReceiverOptions, _ *context.Context) {
		o.Apply = func(_ context.Context, p Package) error {
			g, err := os.Open(p.Path)
			if err != nil {
				return err
			}
			defer g.Close()
			st, _ := g.Stat()
			if st.Size() != size || p.Size != size {
				checked <- fmt.Errorf("applied file is %d bytes, package %d, want %d", st.Size(), p.Size, size)
				return nil
			}
			for off, want := range marks {
				got := make([]byte, len(want))
				if _, err := g.ReadAt(got, off); err != nil || !bytes.Equal(got, want) {
					checked <- fmt.Errorf("at offset %d: got %x, want %x (%v)", off, got, want, err)
					return nil
				}
			}
			checked <- nil
			return nil
		}
	})
	rep := seedSession(t, ctx, cfg, path, MaxChunkSize, peersOf(nodes))
	if rep.Failed() != 0 || rep.Nodes[0].Bytes != size || rep.Package.Size != size {
		t.Fatalf("report: %+v %+v", rep.Package, rep.Nodes)
	}
	if err := <-checked; err != nil {
		t.Errorf("the applied file differs from the package: %v", err)
	}
	<-nodes[0].applied
}

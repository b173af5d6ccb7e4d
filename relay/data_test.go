package relay

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"testing"
)

// A child moved to a new parent may hold its whole stripe of many chunks
// and lack only the other stripe's blocks there: the parent sends those
// chunks' block hashes one after another, and then blocks again. What it
// gathers must never outgrow its buffer, and the child must end with its
// stripe whole and intact.
func TestFeedManyHashesThenBlocks(t *testing.T) {
	const chunk, chunks, held = 1 << 20, 24, 20
	data := testData(chunks * chunk)
	m := testManifest(data, chunk)
	_, f := seedFile(t, data)
	sp := mustOpenSpool(t, t.TempDir(), m)
	for g := range held * m.blocksPerChunk() {
		if g%2 == 0 {
			mustPut(t, sp, data, g)
		}
	}
	need := map[int]bool{}
	for i := range chunks {
		need[i] = true
	}

	cfg := DefaultConfig()
	parent, child := net.Pipe()
	defer child.Close()
	fed := make(chan error, 1)
	go func() {
		defer parent.Close()
		w := wantMsg{session: m.Session, stripes: 2, stripe: 0, have: sp.bitmapCopy()}
		_, err := feed(context.Background(), parent, newFileSource(f, m), newFeedPacer(cfg, m.BlockSize), m, w, cfg, feedOptions{})
		fed <- err
	}()
	p := parentMsg{stripes: 2, stripe: 0}
	if err := pull(bufio.NewReaderSize(child, fetchBuffer), p, sp, need, func(int) {}, 0, nil); err != nil {
		t.Fatalf("pull: %v", err)
	}
	if err := <-fed; err != nil {
		t.Fatalf("feed: %v", err)
	}
	buf := make([]byte, m.BlockSize)
	for g := 0; g < m.Blocks(); g += 2 {
		got, err := sp.readBlock(g, buf)
		if err != nil || !bytes.Equal(got, blockOf(data, m, g)) {
			t.Fatalf("block %d of stripe 0 is not the package's: %v", g, err)
		}
	}
	if len(need) > 0 {
		t.Fatalf("block hashes of chunks %v never came", need)
	}
}

package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A file seeded again unchanged is not hashed again: the cache gives the
// same hashes under a new session, and a session sent from them (the seed
// then hashes each chunk as it first sends it) delivers the file whole.
func TestHashCacheKeepsAnUnchangedFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path, data := writePackage(t, 3<<20+5)
	c := HashCache{Dir: t.TempDir(), from: 1}
	m1, cached, err := c.Build(ctx, path, 64<<10, time.Hour, nil)
	if err != nil || cached {
		t.Fatalf("first build: cached %v, %v", cached, err)
	}
	hashed := 0
	m2, cached, err := c.Build(ctx, path, 64<<10, time.Hour, func(int64) { hashed++ })
	if err != nil || !cached || hashed > 0 {
		t.Fatalf("second build of the unchanged file: cached %v, hashed %d times, %v", cached, hashed, err)
	}
	if m2.SHA256 != m1.SHA256 || len(m2.Chunks) != len(m1.Chunks) || m2.Session == m1.Session || m2.Empty() != m1.Empty() {
		t.Fatalf("cached manifest differs: sha %x/%x, %d/%d chunks, sessions %x/%x", m2.SHA256, m1.SHA256, len(m2.Chunks), len(m1.Chunks), m2.Session, m1.Session)
	}
	for i := range m1.Chunks {
		if m2.Chunks[i] != m1.Chunks[i] {
			t.Fatalf("chunk %d's hash differs", i)
		}
	}
	if _, _, err := c.Build(ctx, path, 128<<10, time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	nodes := startNodes(t, ctx, testConfig(), 2, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := RunSeed(ctx, testConfig(), SeedOptions{Signed: Sign(m2, key), Path: path, Peers: peersOf(nodes)}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		res := <-n.applied
		got, _ := os.ReadFile(n.dest)
		if res.Err != nil || !bytes.Equal(got, data) {
			t.Errorf("node %s: %v, %d bytes", n.id.Short(), res.Err, len(got))
		}
	}
}

// Any write to the file misses, even one that puts its size and
// modification time back: its change time moved.
func TestHashCacheMissesAChangedFile(t *testing.T) {
	ctx := context.Background()
	path, data := writePackage(t, 1<<20)
	c := HashCache{Dir: t.TempDir(), from: 1}
	m1, _, err := c.Build(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	time.Sleep(10 * time.Millisecond) // a change time the filesystem can tell apart
	data[100] ^= 1
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	m2, cached, err := c.Build(ctx, path, 64<<10, time.Hour, nil)
	if err != nil || cached || m2.SHA256 == m1.SHA256 {
		t.Fatalf("after a write: cached %v, sha256 changed %v, %v", cached, m2.SHA256 != m1.SHA256, err)
	}
}

// An entry that no longer matches the file (a filesystem that keeps no
// change time) fails the session as the seed sends the chunk, never the
// receivers' check; forgotten, the file is hashed afresh.
func TestHashCacheStaleEntryIsCaught(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path, _ := writePackage(t, 1<<20)
	c := HashCache{Dir: t.TempDir(), from: 1}
	if _, _, err := c.Build(ctx, path, 64<<10, time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	b, err := os.ReadFile(c.entry(abs))
	if err != nil {
		t.Fatal(err)
	}
	var e hashEntry
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	e.Chunks[0] ^= 1 // as if the file had changed unseen since
	if b, err = json.Marshal(e); err != nil || os.WriteFile(c.entry(abs), b, 0o600) != nil {
		t.Fatal("rewrite the entry")
	}
	m, cached, err := c.Build(ctx, path, 64<<10, time.Hour, nil)
	if err != nil || !cached {
		t.Fatalf("stale entry: cached %v, %v", cached, err)
	}
	nodes := startNodes(t, ctx, testConfig(), 1, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := RunSeed(ctx, testConfig(), SeedOptions{Signed: Sign(m, key), Path: path, Peers: peersOf(nodes)}); !errors.Is(err, ErrSourceChanged) {
		t.Fatalf("session from a stale entry: %v, want ErrSourceChanged", err)
	}
	c.Forget(path)
	if _, cached, err := c.Build(ctx, path, 64<<10, time.Hour, nil); err != nil || cached {
		t.Fatalf("after Forget: cached %v, %v", cached, err)
	}
}

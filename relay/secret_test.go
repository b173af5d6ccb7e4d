package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func testSecret(t *testing.T, b string) *Secret {
	t.Helper()
	s, err := NewSecret([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tap forwards connections to to, keeping a copy of every byte either way.
func tap(t *testing.T, ctx context.Context, to netip.AddrPort, seen *bytes.Buffer, mu *sync.Mutex) netip.AddrPort {
	return proxy(t, ctx, to, func(_, _ net.Conn, b []byte) {
		mu.Lock()
		seen.Write(b)
		mu.Unlock()
	})
}

// With a fleet secret, every node gets the package byte for byte, and no
// 64-byte run of it crosses a connection in clear.
func TestSecretSealsEveryBlock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	sec := testSecret(t, "correct horse battery staple, fleet 7")
	path, data := writePackage(t, 3<<20)
	nodes := startNodes(t, ctx, cfg, 5, func(_ int, o *ReceiverOptions, _ *context.Context) { o.Secret = sec })
	var seen bytes.Buffer
	var mu sync.Mutex
	peers := peersOf(nodes)
	for i := range peers {
		peers[i].Addr = tap(t, ctx, peers[i].Addr, &seen, &mu)
	}
	m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers, Secret: sec})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		res := <-n.applied
		got, _ := os.ReadFile(n.dest)
		if res.Err != nil || rep.Nodes[i].Status != StatusOK || !bytes.Equal(got, data) {
			t.Errorf("node %d: %v %s %q, identical %v", i, res.Err, rep.Nodes[i].Status, rep.Nodes[i].Error, bytes.Equal(got, data))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen.Len() < len(data) {
		t.Fatalf("the taps saw %d bytes, less than the package: the test tests nothing", seen.Len())
	}
	for off := 0; off+64 <= len(data); off += 64 << 10 {
		if bytes.Contains(seen.Bytes(), data[off:off+64]) {
			t.Fatalf("the package's bytes at %d crossed a connection in clear", off)
		}
	}
}

// A seed with a secret offers nothing to a receiver without it or with
// another; a receiver with a secret takes nothing from a seed without it.
func TestSecretMismatchIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	fleet := testSecret(t, "the fleet's own secret, 32 bytes..")
	other := testSecret(t, "another fleet's secret, 32 bytes..")
	path, _ := writePackage(t, 256<<10)
	for _, tc := range []struct {
		name           string
		seed, receiver *Secret
		want           string
	}{
		{"receiver without", fleet, nil, "holds no fleet secret"},
		{"receiver with another", fleet, other, "did not prove"},
		{"seed without", nil, fleet, "holds a fleet secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offered := false
			nodes := startNodes(t, ctx, cfg, 1, func(_ int, o *ReceiverOptions, _ *context.Context) {
				o.Secret = tc.receiver
				o.Trust = func(ed25519.PublicKey) error { offered = true; return nil }
			})
			m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
			_, key, _ := ed25519.GenerateKey(rand.Reader)
			rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peersOf(nodes), Secret: tc.seed})
			if err != nil {
				t.Fatal(err)
			}
			if n := rep.Nodes[0]; n.Status != StatusFailed || !strings.Contains(n.Error, tc.want) {
				t.Errorf("%s %q, want failed mentioning %q", n.Status, n.Error, tc.want)
			}
			if offered {
				t.Errorf("the receiver was shown the offer")
			}
			if _, err := os.Stat(nodes[0].dest); err == nil {
				t.Errorf("applied")
			}
		})
	}
}

// A host without the secret that knows a running session's id gets no
// block hash and no block from a receiver of it.
func TestSecretKeepsFetchersOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.MaxRate = "16mbit" // 2 s a hop: the session runs while the thief tries
	sec := testSecret(t, "the fleet's own secret, 32 bytes..")
	path, data := writePackage(t, 4<<20)
	m, _ := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	got := make(chan []msgType, 2)
	var once sync.Once
	var target netip.AddrPort
	nodes := startNodes(t, ctx, cfg, 3, func(i int, o *ReceiverOptions, _ *context.Context) {
		o.Secret = sec
		if i == 0 {
			o.Progress = func(p ReceiverProgress) {
				if p.Verified > 0 {
					once.Do(func() {
						go func() {
							for _, sealed := range []bool{false, true} {
								got <- stealAttempt(ctx, target, m, sealed)
							}
						}()
					})
				}
			}
		}
	})
	peers := peersOf(nodes)
	target = peers[0].Addr
	peers[0].Addr = throttle(t, ctx, peers[0].Addr)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers, Secret: sec})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed() != 0 {
		t.Errorf("session: %+v", rep.Nodes)
	}
	for _, first := range []msgType{msgRefuse, msgWelcome} {
		var types []msgType
		select {
		case types = <-got:
		case <-ctx.Done():
			t.Fatal("the thief never tried: node 0 verified no block while the session ran")
		}
		if len(types) == 0 || types[0] != first {
			t.Errorf("the thief got %v, want a %s first: it did not reach the receiver", types, first)
		}
		for _, typ := range types {
			if typ == msgHashes || typ == msgBlock {
				t.Errorf("a host without the secret was sent a %s frame", typ)
			}
		}
	}
	for _, n := range nodes {
		if res := <-n.applied; res.Err != nil {
			t.Error(res.Err)
		}
		if b, _ := os.ReadFile(n.dest); !bytes.Equal(b, data) {
			t.Errorf("bytes differ")
		}
	}
}

// stealAttempt asks addr for every block of m's session as a child without
// the secret would (claiming one if sealed, with a made-up proof) and
// returns the types of the frames it got.
func stealAttempt(ctx context.Context, addr netip.AddrPort, m *Manifest, sealed bool) []msgType {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	h := helloMsg{role: roleData, name: "thief", sealed: sealed}
	writeFrame(conn, msgHello, h.encode())
	if sealed {
		writeFrame(conn, msgProof, proofMsg{}.encode())
	}
	writeFrame(conn, msgWant, wantMsg{session: m.Session, stripes: 2, have: newBitmap(m.Blocks())}.encode())
	var types []msgType
	br := bufio.NewReader(conn)
	for {
		f, err := readFrame(br, nil)
		if err != nil {
			return types
		}
		types = append(types, f.typ)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fleet.secret")
	if err := WriteSecret(path); err != nil {
		t.Fatal(err)
	}
	if err := WriteSecret(path); err == nil {
		t.Errorf("WriteSecret overwrote a secret")
	}
	if _, err := LoadSecret(path); err != nil {
		t.Errorf("a fresh secret does not load: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadSecret(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable secret: %v, want refused with the chmod", err)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("  hunter2 \n"), 0o600)
	if _, err := LoadSecret(short); err == nil || !strings.Contains(err.Error(), "at least 16 bytes") {
		t.Errorf("a short secret: %v, want refused", err)
	}
}

package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testEpoch keeps manifests built by tests reproducible.
var testEpoch = time.Unix(1_700_000_000, 123)

// testData returns n reproducible pseudo-random bytes.
func testData(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{'t', 'r', 'e', 'e', 'c', 'a', 's', 't'})
	r.Read(b)
	return b
}

// testManifest describes data the way BuildManifest would, with fixed times and session.
func testManifest(data []byte, chunkSize int) *Manifest {
	m := &Manifest{
		Session:   [16]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
		Created:   testEpoch,
		Expires:   testEpoch.Add(time.Hour),
		Name:      "app.bin",
		Size:      int64(len(data)),
		ChunkSize: chunkSize,
		BlockSize: blockSizeFor(chunkSize),
		SHA256:    sha256.Sum256(data),
	}
	for off := 0; off < len(data); off += chunkSize {
		m.Chunks = append(m.Chunks, sha256.Sum256(hashBlocks(nil, data[off:min(off+chunkSize, len(data))], m.BlockSize)))
	}
	return m
}

// testKey returns a reproducible seed key; different seeds give different keys.
func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pubOf(key ed25519.PrivateKey) ed25519.PublicKey { return key.Public().(ed25519.PublicKey) }

// offerPayload lays out an offer by hand: manifest blob, key, signature.
func offerPayload(raw []byte, pub ed25519.PublicKey, sig []byte) []byte {
	var e enc
	e.blob(raw)
	e.raw(pub)
	e.raw(sig)
	return e.b
}

// signRaw signs arbitrary manifest bytes the way a seed signs a manifest.
func signRaw(key ed25519.PrivateKey, raw []byte) []byte {
	return offerPayload(raw, pubOf(key), ed25519.Sign(key, append([]byte(signContext), raw...)))
}

// sameManifest fails t unless got describes the same package as want.
func sameManifest(t *testing.T, got, want *Manifest) {
	t.Helper()
	if got.Session != want.Session || !got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) ||
		got.Name != want.Name || got.Size != want.Size || got.ChunkSize != want.ChunkSize || got.SHA256 != want.SHA256 || got.Force != want.Force {
		t.Fatalf("manifest header differs:\ngot  %+v\nwant %+v", *got, *want)
	}
	if len(got.Chunks) != len(want.Chunks) {
		t.Fatalf("got %d chunk hashes, want %d", len(got.Chunks), len(want.Chunks))
	}
	for i := range got.Chunks {
		if got.Chunks[i] != want.Chunks[i] {
			t.Fatalf("chunk %d hash differs", i)
		}
	}
}

func TestBuildManifest(t *testing.T) {
	const cs = MinChunkSize
	tests := []struct {
		name    string
		size    int
		chunks  int
		lastLen int
	}{
		{"empty file", 0, 0, 0},
		{"one byte", 1, 1, 1},
		{"exactly three chunks", 3 * cs, 3, cs},
		{"three chunks and 123 bytes", 3*cs + 123, 4, 123},
		{"more chunks than are read ahead", 40*cs + 7, 41, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := testData(tt.size)
			path := filepath.Join(t.TempDir(), "pkg.bin")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			var hashed []int64
			before := time.Now()
			m, err := BuildManifest(context.Background(), path, cs, time.Hour, func(n int64) { hashed = append(hashed, n) })
			after := time.Now()
			if err != nil {
				t.Fatalf("BuildManifest: %v", err)
			}
			if m.Name != "pkg.bin" || m.Size != int64(tt.size) || m.ChunkSize != cs {
				t.Errorf("name %q size %d chunk size %d, want pkg.bin %d %d", m.Name, m.Size, m.ChunkSize, tt.size, cs)
			}
			if len(m.Chunks) != tt.chunks {
				t.Fatalf("%d chunks, want %d", len(m.Chunks), tt.chunks)
			}
			if tt.chunks > 0 {
				if got := m.ChunkLen(tt.chunks - 1); got != tt.lastLen {
					t.Errorf("ChunkLen(last) = %d, want %d", got, tt.lastLen)
				}
			}
			for i, h := range m.Chunks {
				off := i * cs
				if h != sha256.Sum256(hashBlocks(nil, data[off:off+m.ChunkLen(i)], m.BlockSize)) {
					t.Errorf("chunk %d hash is not the SHA-256 of the block hashes of bytes %d..%d", i, off, off+m.ChunkLen(i))
				}
			}
			if m.SHA256 != sha256.Sum256(data) {
				t.Errorf("whole-file hash is not the SHA-256 of the file")
			}
			if m.Created.Before(before) || m.Created.After(after) || m.Expires.Sub(m.Created) != time.Hour {
				t.Errorf("created %v expires %v, want now and an hour later", m.Created, m.Expires)
			}
			if m.Session == ([16]byte{}) {
				t.Errorf("session id is zero")
			}
			if err := m.Validate(); err != nil {
				t.Errorf("built manifest does not validate: %v", err)
			}
			if tt.size > 0 && (len(hashed) == 0 || hashed[len(hashed)-1] != int64(tt.size)) {
				t.Errorf("progress reported %v, want it to end at %d", hashed, tt.size)
			}
			for i := 1; i < len(hashed); i++ {
				if hashed[i] < hashed[i-1] {
					t.Errorf("progress went backwards: %v", hashed)
				}
			}
		})
	}
}

// Stopped mid-file, hashing returns the context's error and leaves no
// goroutine reading the file behind.
func TestBuildManifestStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pkg.bin")
	if err := os.WriteFile(path, testData(64*MinChunkSize), 0o644); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := BuildManifest(ctx, path, MinChunkSize, time.Hour, func(done int64) {
		if done >= 5*MinChunkSize {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("BuildManifest stopped mid-file: %v, want context.Canceled", err)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after hashing stopped, %d before", n, before)
	}
}

func TestBuildManifestSessionsDiffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pkg.bin")
	if err := os.WriteFile(path, []byte("same bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := BuildManifest(context.Background(), path, MinChunkSize, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildManifest(context.Background(), path, MinChunkSize, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Session == b.Session {
		t.Errorf("two builds share session id %x: a replayed offer could not be told apart", a.Session)
	}
}

func TestBuildManifestRejects(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pkg.bin")
	if err := os.WriteFile(file, testData(10), 0o644); err != nil {
		t.Fatal(err)
	}
	badName := filepath.Join(dir, "bad\x01name")
	if err := os.WriteFile(badName, testData(10), 0o644); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name      string
		ctx       context.Context
		path      string
		chunkSize int
		want      string  // in the error text
		is        []error // errors.Is targets
	}{
		{"directory", context.Background(), dir, MinChunkSize, "not a regular file", nil},
		{"missing file", context.Background(), filepath.Join(dir, "nope"), MinChunkSize, "nope", []error{os.ErrNotExist}},
		{"zero chunk size", context.Background(), file, 0, "chunk size 0", nil},
		{"negative chunk size", context.Background(), file, -1, "chunk size -1", nil},
		{"chunk size below minimum", context.Background(), file, MinChunkSize - 1, "must be between", nil},
		{"chunk size above maximum", context.Background(), file, MaxChunkSize + 1, "must be between", nil},
		{"control character in name", context.Background(), badName, MinChunkSize, "control character", nil},
		{"cancelled", cancelled, file, MinChunkSize, "", []error{context.Canceled}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := BuildManifest(tt.ctx, tt.path, tt.chunkSize, time.Hour, nil)
			if err == nil {
				t.Fatalf("BuildManifest accepted it: %+v", m)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("error %q is not %v", err, target)
				}
			}
		})
	}
}

func TestSignedManifestRoundTrip(t *testing.T) {
	for i, size := range []int{0, 1, 3*MinChunkSize + 123} {
		m := testManifest(testData(size), MinChunkSize)
		m.Force = i%2 == 1
		key := testKey(1)
		offer := Sign(m, key).encode()
		s, err := decodeSigned(offer)
		if err != nil {
			t.Fatalf("size %d: decodeSigned: %v", size, err)
		}
		sameManifest(t, s.Manifest, m)
		if !s.Key.Equal(pubOf(key)) {
			t.Errorf("size %d: key %x, want the signer's %x", size, s.Key, pubOf(key))
		}
		if !bytes.Equal(s.encode(), offer) {
			t.Errorf("size %d: re-encoded offer differs from the one received", size)
		}
	}
}

func TestDecodeSignedDetectsTampering(t *testing.T) {
	key, other := testKey(1), testKey(2)
	m := testManifest(testData(2*MinChunkSize+5), MinChunkSize)
	signed := Sign(m, key)
	offer := signed.encode()
	raw := m.encode()
	rawStart, keyStart := 4, 4+len(raw)
	sigStart := keyStart + ed25519.PublicKeySize

	flip := func(p []byte, i int) []byte {
		q := bytes.Clone(p)
		q[i] ^= 1 << (i % 8)
		return q
	}
	type tc struct {
		name  string
		offer []byte
	}
	var tests []tc
	for i := rawStart; i < keyStart; i++ {
		tests = append(tests, tc{"manifest byte " + strconv.Itoa(i-rawStart), flip(offer, i)})
	}
	tests = append(tests,
		tc{"flipped signature bit", flip(offer, sigStart+10)},
		tc{"flipped key bit", flip(offer, keyStart+3)},
		tc{"other key's signature, original key", offerPayload(raw, pubOf(key), ed25519.Sign(other, append([]byte(signContext), raw...)))},
		tc{"original signature, other key", offerPayload(raw, pubOf(other), signed.sig)},
		tc{"signature without the treecast context", offerPayload(raw, pubOf(key), ed25519.Sign(key, raw))},
		tc{"zero signature", offerPayload(raw, pubOf(key), make([]byte, ed25519.SignatureSize))},
	)
	for _, tt := range tests {
		s, err := decodeSigned(tt.offer)
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: got %v, %v; want ErrBadSignature", tt.name, s, err)
		}
	}
}

func TestDecodeSignedRejectsTruncatedOffers(t *testing.T) {
	offer := Sign(testManifest(testData(MinChunkSize+1), MinChunkSize), testKey(1)).encode()
	for n := range len(offer) {
		if s, err := decodeSigned(offer[:n]); err == nil {
			t.Fatalf("offer cut to %d of %d bytes decoded: %+v", n, len(offer), s.Manifest)
		}
	}
}

// A relay or attacker that re-signs the manifest with its own key passes
// the tamper check, but decodeSigned must report that key, so the trust
// check (done by the receiver) sees who really signed.
func TestDecodeSignedReportsTheKeyThatSigned(t *testing.T) {
	seed, attacker := testKey(1), testKey(2)
	m := testManifest(testData(MinChunkSize), MinChunkSize)
	forged := Sign(m, attacker).encode()

	s, err := decodeSigned(forged)
	if err != nil {
		t.Fatalf("decodeSigned: %v", err)
	}
	if !s.Key.Equal(pubOf(attacker)) {
		t.Fatalf("key %x, want the attacker's %x", s.Key, pubOf(attacker))
	}
	var trust TrustSet
	if err := trust.Add(Fingerprint(pubOf(seed))); err != nil {
		t.Fatal(err)
	}
	err = trust.Check(s.Key)
	if err == nil {
		t.Fatalf("a receiver trusting only the seed accepted the attacker's offer")
	}
	if !strings.Contains(err.Error(), Fingerprint(pubOf(attacker))) {
		t.Errorf("rejection %q does not name the attacker's fingerprint %s", err, Fingerprint(pubOf(attacker)))
	}
}

func TestDecodeSignedRejectsInvalidManifests(t *testing.T) {
	key := testKey(1)
	valid := func() *Manifest { return testManifest(testData(3*MinChunkSize+123), MinChunkSize) }
	with := func(change func(m *Manifest)) []byte {
		m := valid()
		change(m)
		return Sign(m, key).encode()
	}
	rawWith := func(change func(raw []byte) []byte) []byte {
		return signRaw(key, change(valid().encode()))
	}
	tests := []struct {
		name  string
		offer []byte
	}{
		{"name ../x", with(func(m *Manifest) { m.Name = "../x" })},
		{"name with slash", with(func(m *Manifest) { m.Name = "etc/passwd" })},
		{"absolute name", with(func(m *Manifest) { m.Name = "/etc/passwd" })},
		{"name with backslash", with(func(m *Manifest) { m.Name = `..\x` })},
		{"empty name", with(func(m *Manifest) { m.Name = "" })},
		{"name ..", with(func(m *Manifest) { m.Name = ".." })},
		{"name .", with(func(m *Manifest) { m.Name = "." })},
		{"NUL in name", with(func(m *Manifest) { m.Name = "app\x00.bin" })},
		{"newline in name", with(func(m *Manifest) { m.Name = "app\n.bin" })},
		{"escape in name", with(func(m *Manifest) { m.Name = "\x1b[2Japp" })},
		{"DEL in name", with(func(m *Manifest) { m.Name = "app\x7f" })},
		{"invalid UTF-8 name", with(func(m *Manifest) { m.Name = "app\xff.bin" })},
		{"256-byte name", with(func(m *Manifest) { m.Name = strings.Repeat("a", 256) })},
		{"chunk size below minimum", with(func(m *Manifest) { m.ChunkSize = MinChunkSize - 1 })},
		{"chunk size above maximum", with(func(m *Manifest) { m.ChunkSize = MaxChunkSize + 1 })},
		{"chunk size zero", with(func(m *Manifest) { m.ChunkSize = 0 })},
		{"one chunk hash too few", with(func(m *Manifest) { m.Chunks = m.Chunks[:len(m.Chunks)-1] })},
		{"one chunk hash too many", with(func(m *Manifest) { m.Chunks = append(m.Chunks, [32]byte{}) })},
		{"size larger than the chunks", with(func(m *Manifest) { m.Size += MinChunkSize })},
		{"expires before created", with(func(m *Manifest) { m.Expires = m.Created.Add(-time.Second) })},
		{"expires when created", with(func(m *Manifest) { m.Expires = m.Created })},
		{"negative size", with(func(m *Manifest) { m.Size, m.Chunks = -1, nil })},
		{"huge size", with(func(m *Manifest) { m.Size = 1 << 62 })},
		{"manifest version 1", rawWith(func(raw []byte) []byte { raw[0] = 1; return raw })},
		{"manifest version 2", rawWith(func(raw []byte) []byte { raw[0] = 2; return raw })},
		{"manifest version 3", rawWith(func(raw []byte) []byte { raw[0] = 3; return raw })},
		{"manifest version 5", rawWith(func(raw []byte) []byte { raw[0] = 5; return raw })},
		{"unknown flag", rawWith(func(raw []byte) []byte {
			n := len(raw) - 32*4 - 4 - 1 // the flags of a 4-chunk manifest
			raw[n] |= 2
			return raw
		})},
		{"manifest version 0", rawWith(func(raw []byte) []byte { raw[0] = 0; return raw })},
		{"trailing bytes", rawWith(func(raw []byte) []byte { return append(raw, 0) })},
		{"last hash cut short", rawWith(func(raw []byte) []byte { return raw[:len(raw)-1] })},
		{"empty manifest", rawWith(func([]byte) []byte { return nil })},
		{"count above limit", rawWith(func(raw []byte) []byte {
			n := len(raw) - 32*4 - 4 // the count field of a 4-chunk manifest
			raw[n], raw[n+1], raw[n+2], raw[n+3] = 0xff, 0xff, 0xff, 0xff
			return raw
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := decodeSigned(tt.offer)
			if err == nil {
				t.Fatalf("accepted: %+v", *s.Manifest)
			}
			if errors.Is(err, ErrBadSignature) {
				t.Fatalf("validly signed offer failed its signature: %v", err)
			}
			if !errors.Is(err, ErrBadManifest) {
				t.Errorf("error %q is not ErrBadManifest", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(m *Manifest)
		want   string // in the error; empty means valid
	}{
		{"valid", func(*Manifest) {}, ""},
		{"empty package", func(m *Manifest) { m.Size, m.Chunks = 0, nil }, ""},
		{"largest chunk size", func(m *Manifest) { m.ChunkSize = MaxChunkSize; m.Chunks = m.Chunks[:1] }, ""},
		{"negative size", func(m *Manifest) { m.Size, m.Chunks = -1, nil }, "negative size"},
		{"count mismatch", func(m *Manifest) { m.Chunks = m.Chunks[:1] }, "chunk hashes"},
		{"bad name", func(m *Manifest) { m.Name = "a/b" }, "path separator"},
		{"small chunks", func(m *Manifest) { m.ChunkSize = 1 }, "chunk size 1"},
		{"expired at birth", func(m *Manifest) { m.Expires = m.Created.Add(-time.Hour) }, "before it was created"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testManifest(testData(3*MinChunkSize), MinChunkSize)
			tt.change(m)
			err := m.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrBadManifest) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want ErrBadManifest mentioning %q", err, tt.want)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"app.bin", true},
		{"a", true},
		{"image-2024.11.25.tar.zst", true},
		{"...", true},
		{".hidden", true},
		{"with space.deb", true},
		{"ünïcødé-日本.bin", true},
		{strings.Repeat("x", 255), true},
		{strings.Repeat("é", 127), true}, // 254 bytes
		{"", false},
		{".", false},
		{"..", false},
		{"../x", false},
		{"a/b", false},
		{"/", false},
		{"/etc/passwd", false},
		{`a\b`, false},
		{`..\..\x`, false},
		{"a\x00b", false},
		{"tab\there", false},
		{"line\nbreak", false},
		{"\x1b[31mred", false},
		{"del\x7f", false},
		{"bad\xffutf8", false},
		{strings.Repeat("x", 256), false},
		{strings.Repeat("é", 128), false}, // 256 bytes
	}
	for _, tt := range tests {
		err := ValidName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && strings.IndexFunc(err.Error(), func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
			t.Errorf("ValidName(%q) error %q carries a raw control character to the terminal", tt.name, err)
		}
	}
}

// ValidName promises to reject control characters, so that a package name
// is safe to print in a terminal and a log. Unicode's C1 controls
// (U+0080..U+009F; U+009B is the 8-bit CSI that starts a terminal escape,
// U+0085 is a line break) are control characters too.
func TestValidNameRejectsC1ControlCharacters(t *testing.T) {
	for _, name := range []string{"app\u009b2Jx", "line\u0085break", "\u0080start", "end\u009f"} {
		if err := ValidName(name); err == nil {
			t.Errorf("ValidName(%q) accepted a C1 control character", name)
		}
	}
}

// decodeSigned's result outlives the frame buffer it was decoded from:
// readFrame reuses that buffer for the next frame. Re-encoding the offer
// (to pass it on, or to log it) must give the bytes that were verified.
func TestDecodeSignedOwnsItsBytes(t *testing.T) {
	offer := Sign(testManifest(testData(MinChunkSize), MinChunkSize), testKey(1)).encode()
	buf := bytes.Clone(offer)
	s, err := decodeSigned(buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 0xAA // the next frame read into the same buffer
	}
	if !bytes.Equal(s.encode(), offer) {
		t.Errorf("the decoded offer changed when its frame buffer was reused")
	}
	if _, err := decodeSigned(s.encode()); err != nil {
		t.Errorf("re-encoded offer no longer verifies: %v", err)
	}
}

// Stripes split the package's bytes exactly, the short last block in its own.
func TestStripeBytes(t *testing.T) {
	for _, size := range []int{0, 1, DefaultBlockSize, DefaultBlockSize + 1, 5*DefaultBlockSize + 77, 6 * DefaultBlockSize} {
		m := testManifest(make([]byte, size), 4*DefaultBlockSize)
		for stripes := 1; stripes <= maxStripes; stripes++ {
			var sum int64
			for st := range stripes {
				var want int64
				for g := st; g < m.Blocks(); g += stripes {
					want += int64(m.BlockLen(g))
				}
				if got := m.stripeBytes(stripes, st); got != want {
					t.Errorf("size %d, stripe %d of %d: %d bytes, want %d", size, st, stripes, got, want)
				}
				sum += want
			}
			if sum != m.Size {
				t.Errorf("size %d in %d stripes adds up to %d", size, stripes, sum)
			}
		}
	}
}

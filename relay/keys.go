package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

const (
	keyPEMType = "TREECAST SEED KEY"
	pubPrefix  = "treecast-ed25519"
)

// Fingerprint is the short form of a seed key people read aloud and type:
// the first 64 bits of its SHA-256, as four groups of four hex digits.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	h := hex.EncodeToString(sum[:8])
	return h[0:4] + "-" + h[4:8] + "-" + h[8:12] + "-" + h[12:16]
}

// warmVerify has ed25519 build the table its first verification in a
// process builds (0.5 ms of CPU, four times a verification's own), so a
// receiver does it while idle, not in a session's first handshake, which
// a whole fleet's receivers make at once: 128 of them on 2 cores spent a
// tenth of the CPU of their handshakes in it.
func warmVerify() {
	identity := make([]byte, ed25519.PublicKeySize) // the neutral point, a valid key
	identity[0] = 1
	ed25519.Verify(identity, nil, make([]byte, ed25519.SignatureSize))
}

// GenerateKey writes a new seed key to path (mode 0600) and its public
// half to path+".pub". It never overwrites an existing key.
func GenerateKey(path string) (ed25519.PrivateKey, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%s already exists: pick another --out, or remove it to replace the key", path)
		}
		return nil, err
	}
	err = pem.Encode(f, &pem.Block{Type: keyPEMType, Bytes: key.Seed()})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write key %s: %w", path, err)
	}
	line := fmt.Sprintf("%s %s %s\n", pubPrefix, base64.StdEncoding.EncodeToString(pub), Fingerprint(pub))
	if err := os.WriteFile(path+".pub", []byte(line), 0o644); err != nil {
		return nil, fmt.Errorf("write public key: %w", err)
	}
	return key, nil
}

// ErrKeyUnprotected is a seed key file that users other than its owner may
// read or write: whoever reads it can sign sessions that every receiver
// trusting the key applies. Test for it with errors.Is.
var ErrKeyUnprotected = errors.New("UNPROTECTED PRIVATE KEY FILE")

// maxKeyFile bounds what LoadKey reads: a key file is a few hundred bytes.
const maxKeyFile = 64 << 10

// LoadKey reads a seed key written by GenerateKey. As ssh does, it refuses a
// key file that its group or others may read or write (ErrKeyUnprotected),
// and says the chmod that fixes it.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	b, err := readPrivate(path, "a seed key (make one with `treecast keygen`)",
		"whoever reads it can make every receiver that trusts this key apply a package")
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != keyPEMType || len(blk.Bytes) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s is not a treecast seed key (make one with `treecast keygen`)", path)
	}
	return ed25519.NewKeyFromSeed(blk.Bytes), nil
}

// readPrivate reads a small file that only its owner may read or write
// (else ErrKeyUnprotected, with the chmod that fixes it). what names the
// file for a person, and risk says what its exposure would allow.
func readPrivate(path, what, risk string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a file: give the path of %s", path, what)
	}
	if perm := st.Mode().Perm(); !ownerOnly(perm) {
		return nil, fmt.Errorf("%s: %w: permissions %04o let users other than its owner read or replace it, and %s; fix it with: chmod 600 %s",
			path, ErrKeyUnprotected, perm, risk, shellQuote(path))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// shellQuote returns s as one word of a POSIX shell command.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+,:@%=", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// LoadOrCreateKey loads the key at path, creating it on first use.
func LoadOrCreateKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = LoadKey(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err = GenerateKey(path)
		return key, err == nil, err
	}
	return key, false, err
}

// TrustSet is the seed keys a receiver accepts sessions from.
type TrustSet struct {
	keys         []ed25519.PublicKey
	fingerprints []string
}

// Add takes a fingerprint, a base64 public key, a `.pub` line, or the path of a `.pub` file.
func (t *TrustSet) Add(value string) error {
	v := strings.TrimSpace(value)
	if b, err := os.ReadFile(v); err == nil && (strings.HasSuffix(v, ".pub") || strings.HasPrefix(string(b), pubPrefix)) {
		v = strings.TrimSpace(string(b))
	}
	if f := strings.Fields(v); len(f) >= 2 && f[0] == pubPrefix {
		v = f[1]
	}
	if fp := strings.ToLower(strings.ReplaceAll(v, "-", "")); len(fp) == 16 {
		if _, err := hex.DecodeString(fp); err == nil {
			t.fingerprints = append(t.fingerprints, fp[0:4]+"-"+fp[4:8]+"-"+fp[8:12]+"-"+fp[12:16])
			return nil
		}
	}
	if b, err := base64.StdEncoding.DecodeString(v); err == nil && len(b) == ed25519.PublicKeySize {
		t.keys = append(t.keys, ed25519.PublicKey(b))
		return nil
	}
	return fmt.Errorf("trust %q: not a key fingerprint (like 3f9a-77c2-19ab-e0d4), a public key, or a .pub file", value)
}

// Len is how many keys or fingerprints are trusted.
func (t *TrustSet) Len() int { return len(t.keys) + len(t.fingerprints) }

// Check accepts pub if it is trusted, and otherwise says which key it was.
func (t *TrustSet) Check(pub ed25519.PublicKey) error {
	fp := Fingerprint(pub)
	for _, k := range t.keys {
		if k.Equal(pub) {
			return nil
		}
	}
	for _, f := range t.fingerprints {
		if f == fp {
			return nil
		}
	}
	return fmt.Errorf("seed key %s is not trusted here (trust it with --trust %s)", fp, fp)
}

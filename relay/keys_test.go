package relay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestGenerateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dir", "seed.key")
	key, err := GenerateKey(path)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600: other users could read the seed key", st.Mode().Perm())
	}

	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatalf("public key file: %v", err)
	}
	want := "treecast-ed25519 " + base64.StdEncoding.EncodeToString(pubOf(key)) + " " + Fingerprint(pubOf(key)) + "\n"
	if string(pub) != want {
		t.Errorf(".pub is %q, want %q", pub, want)
	}

	loaded, err := LoadKey(path)
	if err != nil {
		t.Fatalf("LoadKey: %v", err)
	}
	if !loaded.Equal(key) {
		t.Errorf("LoadKey returned another key than GenerateKey made")
	}
	msg := []byte("manifest")
	if !ed25519.Verify(pubOf(key), msg, ed25519.Sign(loaded, msg)) {
		t.Errorf("the loaded key does not sign for the generated public key")
	}
}

func TestGenerateKeyRefusesToOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed.key")
	first, err := GenerateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	keyBytes, _ := os.ReadFile(path)
	pubBytes, _ := os.ReadFile(path + ".pub")

	if _, err := GenerateKey(path); err == nil {
		t.Fatalf("GenerateKey overwrote %s", path)
	} else if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("error %q does not say that %s already exists", err, path)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, keyBytes) {
		t.Errorf("the refused GenerateKey changed the key file")
	}
	if b, _ := os.ReadFile(path + ".pub"); !bytes.Equal(b, pubBytes) {
		t.Errorf("the refused GenerateKey changed the .pub file")
	}
	loaded, err := LoadKey(path)
	if err != nil || !loaded.Equal(first) {
		t.Errorf("after the refusal LoadKey = %v, want the first key", err)
	}
}

func TestLoadKeyRejectsOtherFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "seed.key")
	if _, err := GenerateKey(good); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"empty":            nil,
		"garbage":          testData(200),
		"text":             []byte("hello\n"),
		"the public half":  mustRead(t, good+".pub"),
		"other PEM type":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: make([]byte, ed25519.SeedSize)}),
		"short seed":       pem.EncodeToMemory(&pem.Block{Type: keyPEMType, Bytes: make([]byte, ed25519.SeedSize-1)}),
		"long seed":        pem.EncodeToMemory(&pem.Block{Type: keyPEMType, Bytes: make([]byte, ed25519.PrivateKeySize)}),
		"broken PEM":       bytes.Replace(mustRead(t, good), []byte("-----END"), []byte("-----XXX"), 1),
		"ssh private key":  []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"),
		"seed as raw data": bytes.Repeat([]byte{1}, ed25519.SeedSize),
	}
	for name, content := range files {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		key, err := LoadKey(path)
		if err == nil {
			t.Errorf("%s: LoadKey accepted it as key %x", name, pubOf(key))
			continue
		}
		for _, want := range []string{path, "not a treecast seed key", "treecast keygen"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", name, err, want)
			}
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(dir); err == nil || !strings.Contains(err.Error(), "not a file") {
		t.Errorf("a directory: LoadKey = %v, want it refused as not a file", err)
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing key: %v, want os.ErrNotExist", err)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seed.key")
	first, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first use: created=%v err=%v, want a new key", created, err)
	}
	again, created, err := LoadOrCreateKey(path)
	if err != nil || created || !again.Equal(first) {
		t.Fatalf("second use: created=%v err=%v same=%v, want the same key loaded", created, err, again.Equal(first))
	}

	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(bad); err == nil {
		t.Errorf("LoadOrCreateKey accepted a file that is not a key")
	}
	if b, _ := os.ReadFile(bad); string(b) != "not a key" {
		t.Errorf("LoadOrCreateKey replaced a file it could not read as a key")
	}
}

func TestFingerprint(t *testing.T) {
	format := regexp.MustCompile(`^[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}$`)
	seen := map[string]bool{}
	for seed := range byte(20) {
		pub := pubOf(testKey(seed))
		fp := Fingerprint(pub)
		if !format.MatchString(fp) {
			t.Fatalf("fingerprint %q is not xxxx-xxxx-xxxx-xxxx", fp)
		}
		sum := sha256.Sum256(pub)
		if want := hex.EncodeToString(sum[:8]); strings.ReplaceAll(fp, "-", "") != want {
			t.Errorf("fingerprint %s is not the first 64 bits of SHA-256 %s", fp, want)
		}
		if Fingerprint(pub) != fp {
			t.Errorf("fingerprint of the same key changed")
		}
		if seen[fp] {
			t.Errorf("two keys share fingerprint %s", fp)
		}
		seen[fp] = true
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTrustSetAddAcceptedForms(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "seed.key")
	key, err := GenerateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pub := pubOf(key)
	fp := Fingerprint(pub)
	b64 := base64.StdEncoding.EncodeToString(pub)
	pubLine := strings.TrimSpace(string(mustRead(t, keyPath+".pub")))
	renamed := filepath.Join(dir, "seed-key.txt") // a .pub file under another name
	if err := os.WriteFile(renamed, mustRead(t, keyPath+".pub"), 0o644); err != nil {
		t.Fatal(err)
	}
	stranger := pubOf(testKey(99))

	forms := []struct{ name, value string }{
		{"fingerprint", fp},
		{"fingerprint without dashes", strings.ReplaceAll(fp, "-", "")},
		{"fingerprint in upper case", strings.ToUpper(fp)},
		{"fingerprint in mixed case with spaces", "  " + strings.ToUpper(fp[:9]) + fp[9:] + "\n"},
		{"base64 public key", b64},
		{".pub line", pubLine},
		{".pub line without fingerprint", "treecast-ed25519 " + b64},
		{".pub file path", keyPath + ".pub"},
		{"file holding a .pub line", renamed},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			var ts TrustSet
			if err := ts.Add(f.value); err != nil {
				t.Fatalf("Add(%q): %v", f.value, err)
			}
			if ts.Len() != 1 {
				t.Errorf("Len = %d after one Add", ts.Len())
			}
			if err := ts.Check(pub); err != nil {
				t.Errorf("the trusted key was refused: %v", err)
			}
			err := ts.Check(stranger)
			if err == nil {
				t.Fatalf("an untrusted key was accepted")
			}
			if !strings.Contains(err.Error(), Fingerprint(stranger)) {
				t.Errorf("refusal %q does not name the key %s", err, Fingerprint(stranger))
			}
		})
	}
}

func TestTrustSetAddRejectsJunk(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "seed.key")
	key, err := GenerateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	junkPub := filepath.Join(dir, "junk.pub")
	if err := os.WriteFile(junkPub, []byte("treecast-ed25519 bm90IGEga2V5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fp := strings.ReplaceAll(Fingerprint(pubOf(key)), "-", "")
	pub := pubOf(key)
	values := []string{
		"",
		"   ",
		"hello",
		"3f9a-77c2-19ab",      // 48 bits
		fp + "0",              // 17 hex digits
		fp[:15],               // 15 hex digits
		"zzzz-zzzz-zzzz-zzzz", // not hex
		base64.StdEncoding.EncodeToString(pub[:31]),
		base64.StdEncoding.EncodeToString(append(bytes.Clone(pub), 0)),
		"treecast-ed25519 not-base64!",
		"ssh-ed25519 " + base64.StdEncoding.EncodeToString(pub),
		filepath.Join(dir, "missing.pub"),
		junkPub,
		keyPath, // the private key is not a trust value
	}
	for _, v := range values {
		var ts TrustSet
		err := ts.Add(v)
		if err == nil {
			t.Errorf("Add(%q) accepted junk", v)
			continue
		}
		for _, want := range []string{"fingerprint", "public key", ".pub file"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Add(%q): error %q does not list %q among the accepted forms", v, err, want)
			}
		}
		if ts.Len() != 0 {
			t.Errorf("Add(%q) failed but trusts %d keys", v, ts.Len())
		}
		if ts.Check(pub) == nil {
			t.Errorf("after the failed Add(%q) the key is trusted", v)
		}
	}
	var ts TrustSet
	err = ts.Add(keyPath)
	secret := base64.StdEncoding.EncodeToString(key.Seed())
	if err == nil || strings.Contains(err.Error(), secret[:16]) {
		t.Errorf("Add of the private key path: %v; it must fail without showing the key", err)
	}
}

func TestTrustSetCheck(t *testing.T) {
	a, b, c := pubOf(testKey(1)), pubOf(testKey(2)), pubOf(testKey(3))
	var empty TrustSet
	if err := empty.Check(a); err == nil || !strings.Contains(err.Error(), Fingerprint(a)) {
		t.Errorf("empty set: Check = %v, want a refusal naming %s", err, Fingerprint(a))
	}

	var ts TrustSet
	if err := ts.Add(Fingerprint(a)); err != nil {
		t.Fatal(err)
	}
	if err := ts.Add(base64.StdEncoding.EncodeToString(b)); err != nil {
		t.Fatal(err)
	}
	if ts.Len() != 2 {
		t.Errorf("Len = %d, want 2", ts.Len())
	}
	for _, k := range []ed25519.PublicKey{a, b} {
		if err := ts.Check(k); err != nil {
			t.Errorf("trusted key %s refused: %v", Fingerprint(k), err)
		}
	}
	err := ts.Check(c)
	if err == nil {
		t.Fatalf("untrusted key %s accepted", Fingerprint(c))
	}
	for _, want := range []string{Fingerprint(c), "not trusted", "--trust " + Fingerprint(c)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
}

func TestLoadKeyRefusesUnprotectedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seed.key")
	key, err := GenerateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666, 0o700, 0o601} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKey(path)
		if mode&0o077 == 0 {
			if err != nil {
				t.Errorf("mode %04o: %v, want the key loaded", mode, err)
			}
			continue
		}
		if !errors.Is(err, ErrKeyUnprotected) {
			t.Errorf("mode %04o: LoadKey = %v, want ErrKeyUnprotected", mode, err)
			continue
		}
		for _, want := range []string{"UNPROTECTED PRIVATE KEY FILE", path, "chmod 600 " + path} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("mode %04o: error %q does not say %q", mode, err, want)
			}
		}
		// LoadOrCreateKey must not take the refusal for a missing key.
		if _, created, err := LoadOrCreateKey(path); created || !errors.Is(err, ErrKeyUnprotected) {
			t.Errorf("mode %04o: LoadOrCreateKey created=%v err=%v, want the refusal", mode, created, err)
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadKey(path); err != nil || !got.Equal(key) {
		t.Errorf("after chmod 600: LoadKey = %v, want the key", err)
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadKey(path); err != nil || !got.Equal(key) {
		t.Errorf("mode 0400: LoadKey = %v, want the key", err)
	}
}

func TestUnprotectedKeyHintIsAShellCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "it's my key")
	if _, err := GenerateKey(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadKey(path)
	quoted := "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
	if err == nil || !strings.HasSuffix(err.Error(), "chmod 600 "+quoted) {
		t.Errorf("error %v, want it to end with chmod 600 %s", err, quoted)
	}
}

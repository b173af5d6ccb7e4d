package relay

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Secret is a fleet's shared secret. With one, seed and receivers prove to
// each other that they hold it before an offer, a block hash or a block
// crosses a connection, and every block travels sealed with AES-256-GCM
// under a key derived for its session: a host without it can neither join
// a session nor read a byte of the package. A nil *Secret is no secret.
type Secret struct {
	auth []byte // keys the proofs of connections
	data []byte // derives each session's block key
}

// MinSecretLen is the fewest bytes a secret file may hold: 128 bits.
const MinSecretLen = 16

// ErrWeakSecret means a secret file holds too few bytes to be guessed never.
var ErrWeakSecret = fmt.Errorf("a fleet secret needs at least %d bytes: make one with `treecast secret --out FILE`", MinSecretLen)

// NewSecret derives a fleet's keys from the bytes of its secret file;
// surrounding white space is not part of the secret.
func NewSecret(b []byte) (*Secret, error) {
	b = bytes.TrimSpace(b)
	if len(b) < MinSecretLen {
		return nil, ErrWeakSecret
	}
	prk, err := hkdf.Extract(sha256.New, b, []byte("treecast fleet secret v1"))
	if err != nil {
		return nil, err
	}
	auth, err := hkdf.Expand(sha256.New, prk, "connection proofs", 32)
	if err != nil {
		return nil, err
	}
	data, err := hkdf.Expand(sha256.New, prk, "session data", 32)
	if err != nil {
		return nil, err
	}
	return &Secret{auth: auth, data: data}, nil
}

// LoadSecret reads a fleet secret file, which only its owner may read, as
// for a seed key.
func LoadSecret(path string) (*Secret, error) {
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
		return nil, fmt.Errorf("%s is not a file: give the path of a fleet secret (make one with `treecast secret --out FILE`)", path)
	}
	if perm := st.Mode().Perm(); !ownerOnly(perm) {
		return nil, fmt.Errorf("%s: %w: permissions %04o let users other than its owner read or replace the fleet secret; fix it with: chmod 600 %s",
			path, ErrKeyUnprotected, perm, shellQuote(path))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read secret %s: %w", path, err)
	}
	s, err := NewSecret(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// WriteSecret writes a new random secret to path, readable by its owner
// only; it never overwrites a file.
func WriteSecret(path string) error {
	b := make([]byte, 32)
	rand.Read(b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(b)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Proof roles: each side of a connection proves with its own label, so a
// proof cannot be reflected back to the side that sent it.
const (
	proveSeed     = "seed"
	proveReceiver = "receiver"
	proveParent   = "parent"
	proveChild    = "child"
)

// proof is the MAC that shows the sender of role holds the secret, bound to
// both sides' fresh nonces: mine first, then the peer's.
func (s *Secret) proof(role string, mine, theirs [16]byte) [32]byte {
	h := hmac.New(sha256.New, s.auth)
	h.Write([]byte(role))
	h.Write(mine[:])
	h.Write(theirs[:])
	return [32]byte(h.Sum(nil))
}

// ErrNoProof means a peer could not prove it holds the fleet secret.
var ErrNoProof = errors.New("the peer did not prove it holds the fleet secret")

// check verifies a peer's proof; mine and theirs are as the peer sees them.
func (s *Secret) check(role string, theirs, mine [16]byte, got [32]byte) error {
	want := s.proof(role, theirs, mine)
	if !hmac.Equal(want[:], got[:]) {
		return ErrNoProof
	}
	return nil
}

// sealer is a session's block cipher. Each block is sealed under a nonce
// made of its index, with the session id as associated data: a block
// cannot be moved to another place or session.
type sealer struct {
	aead    cipher.AEAD
	session [16]byte
}

// sealOverhead is what sealing adds to a block: GCM's tag.
const sealOverhead = 16

// blockFlagSealed marks a block frame whose data is sealed.
const blockFlagSealed = 0x01

func (s *Secret) sealer(session [16]byte) (*sealer, error) {
	if s == nil {
		return nil, nil
	}
	key, err := hkdf.Expand(sha256.New, s.data, "session "+hex.EncodeToString(session[:]), 32)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead, session: session}, nil
}

func (s *sealer) nonce(g int) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], uint64(g))
	return n[:]
}

// seal seals block g in place; buf must have room for sealOverhead more.
func (s *sealer) seal(g int, plain []byte) []byte {
	return s.aead.Seal(plain[:0], s.nonce(g), plain, s.session[:])
}

// open opens block g in place.
func (s *sealer) open(g int, sealed []byte) ([]byte, error) {
	return s.aead.Open(sealed[:0], s.nonce(g), sealed, s.session[:])
}

// SealMismatchError is a connection between a side that holds a fleet
// secret and one that does not: they cannot be in one session.
type SealMismatchError struct{ PeerSealed bool }

func (e *SealMismatchError) Error() string {
	if e.PeerSealed {
		return "the peer holds a fleet secret and this side does not: give both the same --secret FILE"
	}
	return "the peer holds no fleet secret and this side does: give both the same --secret FILE"
}

// greet is the listener's side of a connection's opening, once it read the
// connector's hello h: it sends its welcome w (with a fresh nonce, and
// sealed when it holds sec) and then, with a secret, its proof as role
// mine, and reads and checks the connector's proof as role theirs.
func greet(c *ctrl, d time.Duration, sec *Secret, h helloMsg, w welcomeMsg, mine, theirs string) error {
	rand.Read(w.nonce[:])
	w.sealed = sec != nil
	if err := c.send(msgWelcome, w.encode()); err != nil {
		return err
	}
	if h.sealed != w.sealed {
		return &SealMismatchError{PeerSealed: h.sealed}
	}
	if sec == nil {
		return nil
	}
	if err := c.send(msgProof, proofMsg{mac: sec.proof(mine, w.nonce, h.nonce)}.encode()); err != nil {
		return err
	}
	p, err := c.expect(d, msgProof)
	if err != nil {
		return err
	}
	pm, err := decodeProof(p)
	if err != nil {
		return err
	}
	return sec.check(theirs, h.nonce, w.nonce, pm.mac)
}

// prove is the connector's side, once it sent hello h and read the
// listener's welcome w: with a secret, it checks the listener's proof as
// role theirs and sends its own as role mine.
func prove(c *ctrl, d time.Duration, sec *Secret, h helloMsg, w welcomeMsg, mine, theirs string) error {
	if w.sealed != (sec != nil) {
		return &SealMismatchError{PeerSealed: w.sealed}
	}
	if sec == nil {
		return nil
	}
	p, err := c.expect(d, msgProof)
	if err != nil {
		return err
	}
	pm, err := decodeProof(p)
	if err != nil {
		return err
	}
	if err := sec.check(theirs, w.nonce, h.nonce, pm.mac); err != nil {
		return err
	}
	return c.send(msgProof, proofMsg{mac: sec.proof(mine, h.nonce, w.nonce)}.encode())
}

// newHello is a connector's hello with a fresh nonce.
func newHello(role uint8, id NodeID, name string, sec *Secret) helloMsg {
	h := helloMsg{role: role, id: id, name: name, sealed: sec != nil}
	rand.Read(h.nonce[:])
	return h
}

// keys is what a session's connections need of the fleet secret: the
// secret for proofs and the session's sealer for blocks; both nil without.
type keys struct {
	secret *Secret
	seal   *sealer
}

func newKeys(sec *Secret, session [16]byte) (keys, error) {
	seal, err := sec.sealer(session)
	return keys{secret: sec, seal: seal}, err
}

// overhead is what sealing adds to each block frame.
func (k keys) overhead() int {
	if k.seal == nil {
		return 0
	}
	return sealOverhead
}

// dataHello opens a data connection as a child: hello, and with a secret
// the listener's welcome and the proofs. A refusal comes back as a
// *RefusedError.
func (k keys) dataHello(c *ctrl, d time.Duration, id NodeID, name string) error {
	h := newHello(roleData, id, name, k.secret)
	if err := c.send(msgHello, h.encode()); err != nil {
		return err
	}
	if k.secret == nil {
		return nil
	}
	p, err := c.expect(d, msgWelcome)
	if err != nil {
		return err
	}
	w, err := decodeWelcome(p)
	if err != nil {
		return err
	}
	return prove(c, d, k.secret, h, w, proveChild, proveParent)
}

// dataGreet is a parent's side of dataHello, once it read the hello h; a
// child that disagrees on holding a secret is refused, saying so.
func (k keys) dataGreet(c *ctrl, d time.Duration, h helloMsg, id NodeID, name string) error {
	if h.sealed != (k.secret != nil) {
		err := &SealMismatchError{PeerSealed: h.sealed}
		c.send(msgRefuse, refuseMsg{code: refuseUntrusted, reason: err.Error()}.encode())
		return err
	}
	if k.secret == nil {
		return nil
	}
	return greet(c, d, k.secret, h, welcomeMsg{id: id, name: name}, proveParent, proveChild)
}

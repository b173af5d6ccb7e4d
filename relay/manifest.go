package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Manifest describes one session's package: everything a receiver checks
// bytes against. It is signed by the seed as a whole.
//
// The package is cut into blocks, the unit that is relayed and verified on
// arrival, and blocks are grouped into chunks, the unit the manifest
// hashes: a chunk's hash is the SHA-256 of its blocks' SHA-256s in order.
// A parent sends a chunk's block hashes ahead of its blocks; the child
// checks them against the chunk's hash, then each block against its own,
// so a node relays a block as soon as it is verified while the manifest
// stays at 32 bytes a chunk.
type Manifest struct {
	Session   [16]byte
	Created   time.Time
	Expires   time.Time
	Name      string
	Group     string // the receivers it is for: they refuse it in any other group
	Size      int64
	ChunkSize int        // a multiple of BlockSize
	BlockSize int        // a power of two, MinBlockSize to MaxBlockSize
	Chunks    [][32]byte // per chunk: SHA-256 of its block hashes
	SHA256    [32]byte   // SHA-256 of the whole file
	// Force asks receivers to apply the package even where it is up to
	// date: applied already, under the same name and with the same actions.
	Force bool

	built *builtFrom // the seed's file, when BuildManifest made this
}

// builtFrom is what the seed remembers of the file it hashed: how to tell
// that it changed since, and every block hash while they fit leafBudget.
type builtFrom struct {
	empty   int64 // bytes of empty blocks, which cross no link
	size    int64
	modTime time.Time
	leaves  []byte
}

// ChunkLen is the length of chunk i; only the last chunk may be short.
func (m *Manifest) ChunkLen(i int) int {
	off := int64(i) * int64(m.ChunkSize)
	if rest := m.Size - off; rest < int64(m.ChunkSize) {
		return int(rest)
	}
	return m.ChunkSize
}

// Blocks is how many blocks the package has; block g starts at g × BlockSize.
func (m *Manifest) Blocks() int { return int((m.Size + int64(m.BlockSize) - 1) / int64(m.BlockSize)) }

// BlockLen is the length of block g; only the last block may be short.
func (m *Manifest) BlockLen(g int) int {
	return int(min(int64(m.BlockSize), m.Size-int64(g)*int64(m.BlockSize)))
}

// stripeBytes is the size of stripe st of stripes: blocks st, st+stripes, ...
func (m *Manifest) stripeBytes(stripes, st int) int64 {
	nb := m.Blocks()
	if st >= nb {
		return 0
	}
	n := int64((nb - st + stripes - 1) / stripes)
	size := n * int64(m.BlockSize)
	if (nb-1)%stripes == st {
		size -= int64(nb)*int64(m.BlockSize) - m.Size // the short last block
	}
	return size
}

// blocksPerChunk is how many blocks a full chunk holds.
func (m *Manifest) blocksPerChunk() int { return m.ChunkSize / m.BlockSize }

// chunkBlocks returns the first block of chunk i and how many it has.
func (m *Manifest) chunkBlocks(i int) (first, n int) {
	first = i * m.blocksPerChunk()
	return first, min(m.blocksPerChunk(), m.Blocks()-first)
}

// hashBlocks appends the SHA-256 of each block of data to leaves.
func hashBlocks(leaves, data []byte, blockSize int) []byte {
	for off := 0; off < len(data); off += blockSize {
		h := sha256.Sum256(data[off:min(off+blockSize, len(data))])
		leaves = append(leaves, h[:]...)
	}
	return leaves
}

// Empty is how many bytes of the package are in empty blocks, which cross
// no link; known to the seed that hashed the file, else 0.
func (m *Manifest) Empty() int64 {
	if m.built == nil {
		return 0
	}
	return m.built.empty
}

// SumHex is the whole file's SHA-256 in lowercase hex.
func (m *Manifest) SumHex() string { return hex.EncodeToString(m.SHA256[:]) }

// chunkCount is how many chunks a file of size bytes has.
func chunkCount(size int64, chunkSize int) int {
	return int((size + int64(chunkSize) - 1) / int64(chunkSize))
}

const manifestVersion = 4

// Manifest flags, one bit each.
const manifestForce uint8 = 1 // apply even where the package is up to date

// ErrBadManifest marks a manifest that breaks the rules in Validate.
var ErrBadManifest = errors.New("bad manifest")

// Validate checks every field a peer could have chosen to hurt us with.
func (m *Manifest) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadManifest, fmt.Sprintf(format, a...))
	}
	if err := ValidName(m.Name); err != nil {
		return bad("%v", err)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize {
		return bad("chunk size %d outside %d..%d", m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if m.BlockSize < MinBlockSize || m.BlockSize > MaxBlockSize || m.BlockSize&(m.BlockSize-1) != 0 || m.ChunkSize%m.BlockSize != 0 {
		return bad("block size %d: not a power of two from %d to %d dividing the chunk size %d", m.BlockSize, MinBlockSize, MaxBlockSize, m.ChunkSize)
	}
	if m.Size < 0 {
		return bad("negative size %d", m.Size)
	}
	if m.Size > int64(maxBlocks)*int64(m.BlockSize) {
		return bad("%d bytes in blocks of %d is over %d blocks", m.Size, m.BlockSize, maxBlocks)
	}
	if len(m.Chunks) > maxChunks {
		return bad("%d chunks, limit %d", len(m.Chunks), maxChunks)
	}
	if want := int64(len(m.Chunks)); want != (m.Size+int64(m.ChunkSize)-1)/int64(m.ChunkSize) {
		return bad("%d chunk hashes for %d bytes in chunks of %d", len(m.Chunks), m.Size, m.ChunkSize)
	}
	if !m.Expires.After(m.Created) {
		return bad("expires %s before it was created %s", m.Expires.Format(time.RFC3339), m.Created.Format(time.RFC3339))
	}
	return nil
}

// ValidName reports whether name can be used as a file name on every receiver.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("package name is empty")
	case len(name) > 255:
		return fmt.Errorf("package name is %d bytes, limit 255", len(name))
	case name == "." || name == "..":
		return fmt.Errorf("package name %q is not a file name", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("package name %q is not valid UTF-8", name)
	case strings.ContainsAny(name, "/\\"):
		return fmt.Errorf("package name %q contains a path separator", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("package name %q contains a control character", name)
		}
	}
	return nil
}

func (m *Manifest) encode() []byte {
	e := enc{b: make([]byte, 0, 128+len(m.Name)+32*len(m.Chunks))}
	e.u8(manifestVersion)
	e.id(m.Session)
	e.i64(m.Created.UnixNano())
	e.i64(m.Expires.UnixNano())
	e.str(m.Name)
	e.str(m.Group)
	e.u64(uint64(m.Size))
	e.u32(uint32(m.ChunkSize))
	e.u32(uint32(m.BlockSize))
	e.hash(m.SHA256)
	var flags uint8
	if m.Force {
		flags |= manifestForce
	}
	e.u8(flags)
	e.u32(uint32(len(m.Chunks)))
	for _, h := range m.Chunks {
		e.hash(h)
	}
	return e.b
}

func decodeManifest(p []byte) (*Manifest, error) {
	d := dec{b: p}
	if v := d.u8(); d.err == nil && v != manifestVersion {
		return nil, fmt.Errorf("%w: manifest version %d, want %d", ErrBadManifest, v, manifestVersion)
	}
	m := &Manifest{Session: d.id()}
	m.Created = time.Unix(0, d.i64())
	m.Expires = time.Unix(0, d.i64())
	m.Name = d.str(255)
	m.Group = d.str(maxGroupLen)
	size := d.u64()
	m.ChunkSize = int(d.u32())
	m.BlockSize = int(d.u32())
	m.SHA256 = d.hash()
	flags := d.u8()
	if d.err == nil && flags&^manifestForce != 0 {
		d.fail(fmt.Errorf("unknown flags %#x", flags))
	}
	m.Force = flags&manifestForce != 0
	n := d.u32()
	if d.err == nil && (size > 1<<62 || n > maxChunks || int(n)*32 != len(d.b)) {
		d.fail(fmt.Errorf("%d chunk hashes in %d bytes", n, len(d.b)))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, d.err)
	}
	m.Size = int64(size)
	m.Chunks = make([][32]byte, n)
	for i := range m.Chunks {
		m.Chunks[i] = d.hash()
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// signContext separates treecast manifest signatures from any other use of the key.
const signContext = "treecast manifest v4\x00"

// Signed is a manifest with the seed's signature over its encoding.
type Signed struct {
	Manifest *Manifest
	Key      ed25519.PublicKey
	raw      []byte
	sig      []byte
}

// Sign signs m with key.
func Sign(m *Manifest, key ed25519.PrivateKey) *Signed {
	raw := m.encode()
	return &Signed{
		Manifest: m,
		Key:      key.Public().(ed25519.PublicKey),
		raw:      raw,
		sig:      ed25519.Sign(key, append([]byte(signContext), raw...)),
	}
}

func (s *Signed) encode() []byte {
	var e enc
	e.blob(s.raw)
	e.raw(s.Key)
	e.raw(s.sig)
	return e.b
}

// Bytes is the signed session as it travels in an offer.
func (s *Signed) Bytes() []byte { return s.encode() }

// ParseSigned reads a signed session from its offer bytes, checking the
// signature and the manifest's rules.
func ParseSigned(p []byte) (*Signed, error) { return decodeSigned(p) }

// ErrBadSignature means a manifest's signature does not match its bytes and key.
var ErrBadSignature = errors.New("manifest signature does not verify")

// decodeSigned checks the signature before it decodes the manifest it covers.
func decodeSigned(p []byte) (*Signed, error) { return decodeSignedBy(p, nil) }

// decodeSignedBy is decodeSigned for a receiver that trusts only some keys:
// trust, if set, judges the key before the signature is checked, so an
// untrusted offer costs no hashing.
func decodeSignedBy(p []byte, trust func(ed25519.PublicKey) error) (*Signed, error) {
	d := dec{b: p}
	raw := d.blob(maxManifestLen)
	key := d.take(ed25519.PublicKeySize)
	sig := d.take(ed25519.SignatureSize)
	if d.err != nil {
		return nil, wrapDecode("offer", d.err)
	}
	if trust != nil {
		if err := trust(ed25519.PublicKey(key)); err != nil {
			return nil, &untrustedError{err}
		}
	}
	if !ed25519.Verify(key, append([]byte(signContext), raw...), sig) {
		return nil, ErrBadSignature
	}
	m, err := decodeManifest(raw)
	if err != nil {
		return nil, err
	}
	return &Signed{Manifest: m, Key: bytes.Clone(key), raw: bytes.Clone(raw), sig: bytes.Clone(sig)}, nil
}

// untrustedError is an offer signed by a key this receiver does not trust.
type untrustedError struct{ err error }

func (e *untrustedError) Error() string { return e.err.Error() }
func (e *untrustedError) Unwrap() error { return e.err }

// BuildManifest reads the file at path once and hashes it block by block.
// progress, if set, is called with the bytes hashed so far.
func BuildManifest(ctx context.Context, path string, chunkSize int, ttl time.Duration, progress func(int64)) (*Manifest, error) {
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize || chunkSize%MinBlockSize != 0 {
		return nil, fmt.Errorf("chunk size %d: must be between %d and %d bytes, a multiple of %d", chunkSize, MinChunkSize, MaxChunkSize, MinBlockSize)
	}
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
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	name := st.Name()
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	n := chunkCount(st.Size(), chunkSize)
	if n > maxChunks {
		return nil, fmt.Errorf("%s has %d chunks of %d bytes, limit %d: use a larger --chunk-size", path, n, chunkSize, maxChunks)
	}
	m := &Manifest{Name: name, Size: st.Size(), ChunkSize: chunkSize, BlockSize: blockSizeFor(chunkSize), Chunks: make([][32]byte, 0, n)}
	if m.Blocks() > maxBlocks {
		return nil, fmt.Errorf("%s is too large: over %d blocks of %d bytes", path, maxBlocks, m.BlockSize)
	}
	if _, err := rand.Read(m.Session[:]); err != nil {
		return nil, err
	}
	m.built = &builtFrom{size: st.Size(), modTime: st.ModTime()}
	keep := int64(m.Blocks())*32 <= seedLeafBudget
	var leaves []byte
	var done int64
	h := newHashing(f, chunkSize)
	for buf := range h.hashed {
		if err := ctx.Err(); err != nil {
			h.stop()
			return nil, err
		}
		leaves = hashBlocks(leaves[:0], buf, m.BlockSize)
		m.Chunks = append(m.Chunks, sha256.Sum256(leaves))
		m.built.empty += m.zeroBytes(len(m.Chunks)-1, leaves)
		if keep {
			m.built.leaves = append(m.built.leaves, leaves...)
		}
		done += int64(len(buf))
		if progress != nil {
			progress(done)
		}
		h.free <- buf[:cap(buf)]
	}
	h.wg.Wait()
	if h.err != nil {
		return nil, fmt.Errorf("read %s: %w", path, h.err)
	}
	if done != st.Size() {
		return nil, fmt.Errorf("%s changed while it was read (%d bytes, expected %d)", path, done, st.Size())
	}
	copy(m.SHA256[:], h.whole.Sum(nil))
	m.Created = time.Now()
	m.Expires = m.Created.Add(ttl)
	return m, nil
}

// hashing reads a file chunk by chunk and hashes it whole as it goes, in
// goroutines of its own, so that the caller's block hashes of a chunk run
// beside the whole-file hash of the next, on another core: 1 GB took 1.9 s
// in one goroutine on a 2-core machine.
type hashing struct {
	free   chan []byte   // buffers to read into
	hashed chan []byte   // chunks in order, in the whole-file hash; closed after the last or an error
	whole  hash.Hash     // the file's SHA-256, once hashed is closed
	err    error         // why reading stopped early, once hashed is closed
	quit   chan struct{} // closed by stop
	wg     sync.WaitGroup
}

// hashAhead is how many chunks may be read and not yet block-hashed. Each
// channel holds them all, so no send ever blocks.
const hashAhead = 3

func newHashing(r io.Reader, chunkSize int) *hashing {
	h := &hashing{free: make(chan []byte, hashAhead), hashed: make(chan []byte, hashAhead), whole: sha256.New(), quit: make(chan struct{})}
	for range hashAhead {
		h.free <- make([]byte, chunkSize)
	}
	read := make(chan []byte, hashAhead)
	h.wg.Go(func() {
		defer close(read)
		for {
			var buf []byte
			select {
			case buf = <-h.free:
			case <-h.quit:
				return
			}
			k, err := io.ReadFull(r, buf)
			if k > 0 {
				read <- buf[:k]
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil {
				h.err = err
				return
			}
		}
	})
	h.wg.Go(func() {
		defer close(h.hashed)
		for buf := range read {
			h.whole.Write(buf)
			h.hashed <- buf
		}
	})
	return h
}

// stop ends the reading early and waits for the goroutines.
func (h *hashing) stop() {
	close(h.quit)
	for range h.hashed {
	}
	h.wg.Wait()
}

// seedLeafBudget bounds the block hashes a seed keeps from hashing its
// file, 16 MiB for 8 GiB at the default sizes; beyond, it hashes each
// chunk again as it first sends it.
const seedLeafBudget = 16 << 20

// blockSizeFor is the largest power of two up to DefaultBlockSize that
// divides chunkSize, itself a multiple of MinBlockSize.
func blockSizeFor(chunkSize int) int {
	b := DefaultBlockSize
	for chunkSize%b != 0 {
		b /= 2
	}
	return b
}

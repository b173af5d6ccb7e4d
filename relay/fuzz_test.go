package relay

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"slices"
	"testing"
)

// FuzzReadFrame feeds arbitrary bytes to the frame reader, as a hostile
// peer would. Every frame it accepts is within its type's limit and
// re-encodes to exactly the bytes it was read from; every refusal is one
// of the documented errors.
func FuzzReadFrame(f *testing.F) {
	var stream []byte
	for _, s := range sampleFrames() {
		var b bytes.Buffer
		if err := writeFrame(&b, s.typ, s.payload); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
		stream = append(stream, b.Bytes()...)
	}
	f.Add(stream)
	f.Add([]byte{})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(frameHeader(magic, 2, msgHello, 0))
	f.Add(frameHeader(magic, Version, msgOffer, uint32(maxPayload(msgOffer)+1)))
	f.Add(frameHeader(magic, Version, msgPing, 0xffffffff))
	f.Add(frameHeader(magic, Version, 200, 3))
	f.Add(append(frameHeader(magic, Version, msgAccept, 4), 0, 0))

	// readFrame allocates a header's announced length (up to 32 MiB for an
	// offer) before the payload arrives; TestReadFrameRejectsOversizeBeforeAllocating
	// checks that bound. Here one buffer of the largest legal payload is
	// reused, so the fuzzer spends its time on parsing, not on zeroing memory.
	big := make([]byte, maxPayload(msgOffer))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		buf := big[:0]
		for {
			at := len(in) - r.Len()
			fr, err := readFrame(r, buf)
			if err != nil {
				switch {
				case err == io.EOF:
					if at != len(in) {
						t.Fatalf("io.EOF at byte %d of %d: a cut frame looks like a clean close", at, len(in))
					}
				case errors.Is(err, ErrBadMagic), errors.Is(err, ErrFrameTooLarge),
					errors.Is(err, io.ErrUnexpectedEOF), IsVersionMismatch(err):
				default:
					t.Fatalf("undocumented error %v", err)
				}
				return
			}
			if len(fr.payload) > maxPayload(fr.typ) {
				t.Fatalf("%s frame of %d bytes passed its limit %d", fr.typ, len(fr.payload), maxPayload(fr.typ))
			}
			consumed := in[at : len(in)-r.Len()]
			var out bytes.Buffer
			if err := writeFrame(&out, fr.typ, fr.payload); err != nil {
				t.Fatalf("a frame that was read cannot be written: %v", err)
			}
			if !bytes.Equal(out.Bytes(), consumed) {
				t.Fatalf("frame re-encodes as %x, was read from %x", out.Bytes(), consumed)
			}
			buf = fr.payload
		}
	})
}

// FuzzDecodeSigned feeds arbitrary offer payloads to decodeSigned. An
// offer it accepts verifies under the key it reports, holds a manifest
// that passes Validate, and re-encodes to the bytes it came from.
func FuzzDecodeSigned(f *testing.F) {
	key := testKey(1)
	for _, size := range []int{0, 1, 3*MinChunkSize + 123} {
		m := testManifest(testData(size), MinChunkSize)
		offer := Sign(m, key).encode()
		f.Add(offer)
		f.Add(offer[:len(offer)-1])
		f.Add(append(bytes.Clone(offer), 0xff))
		raw := m.encode()
		f.Add(offerPayload(raw, pubOf(testKey(2)), ed25519.Sign(key, append([]byte(signContext), raw...))))
	}
	bad := testManifest(testData(10), MinChunkSize)
	bad.Name = "../x"
	f.Add(Sign(bad, key).encode())
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := decodeSigned(in)
		if err != nil {
			if s != nil {
				t.Fatalf("error %v came with a result", err)
			}
			return
		}
		if !ed25519.Verify(s.Key, append([]byte(signContext), s.raw...), s.sig) {
			t.Fatalf("accepted an offer whose signature does not verify")
		}
		if err := s.Manifest.Validate(); err != nil {
			t.Fatalf("accepted an offer with an invalid manifest: %v", err)
		}
		if out := s.encode(); !bytes.HasPrefix(in, out) {
			t.Fatalf("offer re-encodes as %x, was read from %x", out, in)
		}
	})
}

// FuzzDecodeMessages feeds one arbitrary payload to every message decoder.
// A decoder never panics; what it accepts re-encodes to the bytes it read
// (parent's address aside, which netip may spell differently) and decodes
// again to the same message.
func FuzzDecodeMessages(f *testing.F) {
	for _, c := range wireCases() {
		f.Add(c.payload)
	}
	for _, s := range sampleFrames() {
		f.Add(s.payload)
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	token := [16]byte{1}
	f.Add(appendDatagram(nil, reportKey(nil, token), token, progressMsg{held: 1, millis: 2}.encode()))

	f.Fuzz(func(t *testing.T, in []byte) {
		p := bytes.Clone(in)
		checkCodec(t, "hello", p, decodeHello, helloMsg.encode, true)
		checkCodec(t, "welcome", p, decodeWelcome, welcomeMsg.encode, true)
		checkCodec(t, "accept", p, decodeAccept, acceptMsg.encode, false) // an accept without a seed timeout (an earlier build's) gains a zero one
		checkCodec(t, "refuse", p, decodeRefuse, refuseMsg.encode, true)
		checkCodec(t, "parent", p, decodeParent, parentMsg.encode, false)
		checkCodec(t, "want", p, decodeWant, wantMsg.encode, true)
		checkCodec(t, "progress", p, decodeProgress, progressMsg.encode, false) // a progress without a clock (an earlier build's) gains a zero one
		checkCodec(t, "result", p, decodeResult, resultMsg.encode, false)       // a result without output (an earlier build's) gains an empty one
		checkCodec(t, "complain", p, decodeComplain, complainMsg.encode, true)
		checkCodec(t, "proof", p, decodeProof, proofMsg.encode, true)
		checkCodec(t, "report", p, decodeReport, reportMsg.encode, true)
		if tok, ok := datagramToken(p); ok {
			openDatagram(p, reportKey(nil, tok))
		}
		if !bytes.Equal(p, in) {
			t.Fatalf("a decoder changed its input")
		}

		if h, err := decodeHello(p); err == nil && h.role != roleControl && h.role != roleData {
			t.Fatalf("hello with role %d accepted", h.role)
		}
		if m, err := decodeParent(p); err == nil && (m.stripes == 0 || m.stripe >= m.stripes || !m.addr.IsValid()) {
			t.Fatalf("parent %+v accepted", m)
		}
		if w, err := decodeWant(p); err == nil && (w.stripes == 0 || w.stripe >= w.stripes || len(w.have) > maxChunks/8+1) {
			t.Fatalf("want stripe %d of %d with a %d-byte bitmap accepted", w.stripe, w.stripes, len(w.have))
		}
	})
}

func checkCodec[M any](t *testing.T, name string, p []byte, decode func([]byte) (M, error), encode func(M) []byte, exact bool) {
	t.Helper()
	m, err := decode(p)
	if err != nil {
		return
	}
	out := encode(m)
	if exact && !bytes.HasPrefix(p, out) {
		t.Fatalf("%s re-encodes as %x, was read from %x", name, out, p)
	}
	again, err := decode(out)
	if err != nil {
		t.Fatalf("%s %+v does not decode after encoding: %v", name, m, err)
	}
	if !reflect.DeepEqual(again, m) {
		t.Fatalf("%s decodes as %+v, then as %+v", name, m, again)
	}
}

// FuzzManifest feeds arbitrary bytes to decodeManifest, the code that runs
// once a signature has verified. A manifest it accepts follows every rule
// of Validate, describes its chunks consistently, encodes back to exactly
// its bytes, and survives signing and verification.
func FuzzManifest(f *testing.F) {
	for _, size := range []int{0, 1, MinChunkSize, 3*MinChunkSize + 123} {
		f.Add(testManifest(testData(size), MinChunkSize).encode())
	}
	big := testManifest(testData(10), MaxChunkSize)
	big.Name = "ünï cødé.tar"
	f.Add(big.encode())
	f.Add([]byte{})
	f.Add([]byte{manifestVersion})
	key := testKey(1)

	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := decodeManifest(in)
		if err != nil {
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("error %v is not ErrBadManifest", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid manifest: %v", err)
		}
		if err := ValidName(m.Name); err != nil {
			t.Fatalf("accepted name %q: %v", m.Name, err)
		}
		if n := len(m.Chunks); n > 0 {
			last := m.ChunkLen(n - 1)
			if last < 1 || last > m.ChunkSize || int64(n-1)*int64(m.ChunkSize)+int64(last) != m.Size {
				t.Fatalf("%d chunks of %d with a last chunk of %d do not make %d bytes", n, m.ChunkSize, last, m.Size)
			}
		} else if m.Size != 0 {
			t.Fatalf("no chunks for %d bytes", m.Size)
		}
		if out := m.encode(); !bytes.Equal(out, in) {
			t.Fatalf("manifest re-encodes as %x, was read from %x", out, in)
		}
		s, err := decodeSigned(Sign(m, key).encode())
		if err != nil {
			t.Fatalf("a valid manifest does not survive signing: %v", err)
		}
		if !bytes.Equal(s.Manifest.encode(), in) {
			t.Fatalf("signed round trip changed the manifest")
		}
	})
}

// FuzzPull plays a parent that may lie: arbitrary frames on a data
// connection. pull never panics, and whatever it stores is the package's
// own bytes; it stores nothing it has not verified.
func FuzzPull(f *testing.F) {
	data := testData(5*DefaultBlockSize + 77)
	m := testManifest(data, 2*DefaultBlockSize)
	sec, _ := NewSecret([]byte("a fleet secret for fuzzing pull"))
	seal, _ := sec.sealer(m.Session)
	honest := func(stripes, stripe int, sealed bool) []byte {
		var out []byte
		src := &bytesSource{m: m, data: data}
		for g := stripe; g < m.Blocks(); g += stripes {
			if g%m.blocksPerChunk() == 0 || g == stripe {
				l, _ := src.leaves(g / m.blocksPerChunk())
				out = appendHeader(out, msgHashes, 4+len(l))
				out = binary.BigEndian.AppendUint32(out, uint32(g/m.blocksPerChunk()))
				out = append(out, l...)
			}
			b := bytes.Clone(blockOf(data, m, g))
			flags := byte(0)
			if sealed {
				b, flags = seal.seal(g, slices.Grow(b, sealOverhead)), blockFlagSealed
			}
			out = appendHeader(out, msgBlock, blockHeaderLen+len(b))
			out = binary.BigEndian.AppendUint32(out, uint32(g))
			out = append(out, flags)
			out = append(out, b...)
		}
		return out
	}
	for _, sealed := range []bool{false, true} {
		f.Add(uint8(1), uint8(0), sealed, honest(1, 0, sealed))
		f.Add(uint8(2), uint8(1), sealed, honest(2, 1, sealed))
		f.Add(uint8(2), uint8(0), sealed, honest(2, 0, sealed)[:100])
		flipped := honest(1, 0, sealed)
		flipped[len(flipped)-3] ^= 1
		f.Add(uint8(1), uint8(0), sealed, flipped)
	}
	dir := f.TempDir() // no state is ever synced, so each run starts with nothing held
	f.Fuzz(func(t *testing.T, stripes, stripe uint8, sealed bool, in []byte) {
		if stripes == 0 || stripes > maxStripes || stripe >= stripes {
			return
		}
		sp, err := openSpool(dir, m)
		if err != nil {
			t.Fatal(err)
		}
		defer sp.close()
		p := parentMsg{stripes: stripes, stripe: stripe}
		var open *sealer
		if sealed {
			open = seal
		}
		pull(bufio.NewReaderSize(bytes.NewReader(in), fetchBuffer), p, sp, map[int]bool{}, func(int) {}, 0, nil, open)
		buf := make([]byte, m.BlockSize)
		for g := range m.Blocks() {
			if !sp.has(g) {
				continue
			}
			got, err := sp.readBlock(g, buf)
			if err != nil || !bytes.Equal(got, blockOf(data, m, g)) {
				t.Fatalf("block %d stored, but it is not the package's (%v)", g, err)
			}
		}
	})
}

// bytesSource serves a package from memory, for tests.
type bytesSource struct {
	m    *Manifest
	data []byte
}

func (s *bytesSource) leaves(i int) ([]byte, error) {
	first, n := s.m.chunkBlocks(i)
	off := first * s.m.BlockSize
	end := min(off+n*s.m.BlockSize, len(s.data))
	return hashBlocks(nil, s.data[off:end], s.m.BlockSize), nil
}

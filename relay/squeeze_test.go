package relay

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestSqueeze(t *testing.T) {
	text := bytes.Repeat([]byte("sensor 7 reads 21.5 C at station 3\n"), 500)[:DefaultBlockSize]
	noise := make([]byte, DefaultBlockSize)
	rand.Read(noise)
	z := squeeze(nil, text)
	if z == nil || len(z) > len(text)/4 {
		t.Fatalf("text squeezed to %d of %d bytes", len(z), len(text))
	}
	if got, err := unsqueeze(make([]byte, DefaultBlockSize), z, len(text)); err != nil || !bytes.Equal(got, text) {
		t.Fatalf("text back: %v, equal %v", err, bytes.Equal(got, text))
	}
	if z := squeeze(nil, noise); z != nil {
		t.Errorf("noise squeezed to %d of %d bytes: it should go as it is", len(z), len(noise))
	}
	// A frame that unpacks to more than the block is refused, not unpacked.
	e, _ := zstd.NewWriter(nil)
	bomb := e.EncodeAll(make([]byte, 8*MaxBlockSize), nil)
	if _, err := unsqueeze(make([]byte, DefaultBlockSize), bomb, DefaultBlockSize); err == nil {
		t.Errorf("a frame of %d zeros unpacked into a %d-byte block", 8*MaxBlockSize, DefaultBlockSize)
	}
	if _, err := unsqueeze(make([]byte, DefaultBlockSize), z, len(text)-1); err == nil {
		t.Errorf("a block that unpacks to one byte more than its length was taken")
	}
}

// What an incompressible block costs the seed: the sample tried, then
// sent as it is.
func BenchmarkSqueezeIncompressible(b *testing.B) {
	noise := make([]byte, DefaultBlockSize)
	rand.Read(noise)
	dst := make([]byte, 0, DefaultBlockSize)
	b.SetBytes(int64(len(noise)))
	for b.Loop() {
		squeeze(dst, noise)
	}
}

func BenchmarkSqueezeText(b *testing.B) {
	text := bytes.Repeat([]byte("sensor 7 reads 21.5 C at station 3\n"), 500)[:DefaultBlockSize]
	dst := make([]byte, 0, DefaultBlockSize)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		squeeze(dst, text)
	}
}

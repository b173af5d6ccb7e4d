package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"strings"
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

// A compressed block is forwarded as it came only when it is one zstd
// frame and nothing else.
func TestOneFrame(t *testing.T) {
	plain := []byte(strings.Repeat("a block that shrinks well. ", 600))
	z := squeeze(nil, plain)
	if z == nil {
		t.Fatal("does not shrink")
	}
	skip := binary.LittleEndian.AppendUint32(nil, 0x184D2A50)
	skip = binary.LittleEndian.AppendUint32(skip, 5)
	skip = append(skip, "extra"...)
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"one frame", z, true},
		{"a skippable frame first", append(bytes.Clone(skip), z...), false},
		{"a skippable frame after", append(bytes.Clone(z), skip...), false},
		{"a byte after", append(bytes.Clone(z), 0), false},
		{"two frames", append(bytes.Clone(z), z...), false},
		{"cut short", z[:len(z)-1], false},
		{"the header alone", z[:6], false},
		{"nothing", nil, false},
	} {
		if got := oneFrame(tc.b); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

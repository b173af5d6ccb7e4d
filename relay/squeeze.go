package relay

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// What compresses travels compressed. The seed compresses each block with
// zstd when that saves at least a sixteenth of it, and sends it with the
// blockFlagZstd flag; a relay keeps the compressed bytes of the blocks it
// received a while, and forwards them as they came, so only the seed spends
// time compressing, but only when they are one zstd frame and nothing else
// (see oneFrame): bytes that decompress to the block may carry more (a
// skippable frame) that nothing verified, and such a block is compressed
// again by the relay. Hashes are of the plain blocks: a block is checked
// after it is opened and decompressed, as before. A block that does not
// shrink is found cheaply: its first sampleLen bytes are tried first.

// blockFlagZstd marks a block frame whose data is zstd-compressed (before
// sealing, when sealed).
const blockFlagZstd = 0x02

const (
	// sampleLen: a block whose first sampleLen bytes do not shrink by
	// a sixteenth is sent as it is, without compressing the rest.
	sampleLen = 1 << 10
	// wireCacheBytes bounds the compressed blocks a node keeps to forward:
	// its children follow it within a few blocks, seconds at most.
	wireCacheBytes = 8 << 20
)

var (
	encoders = sync.Pool{New: func() any {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithLowerEncoderMem(true), zstd.WithZeroFrames(true))
		if err != nil {
			panic(err) // only on bad options, which are fixed here
		}
		return e
	}}
	decoders = sync.Pool{New: func() any {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxMemory(MaxBlockSize))
		if err != nil {
			panic(err)
		}
		return d
	}}
)

// squeeze returns plain compressed, appended to dst, or nil when that
// would not save a sixteenth of it.
func squeeze(dst, plain []byte) []byte {
	e := encoders.Get().(*zstd.Encoder)
	defer encoders.Put(e)
	if len(plain) > 2*sampleLen {
		if s := e.EncodeAll(plain[:sampleLen], dst[len(dst):len(dst)]); len(s) > sampleLen-sampleLen/16 {
			return nil
		}
	}
	out := e.EncodeAll(plain, dst)
	if len(out)-len(dst) > len(plain)-len(plain)/16 {
		return nil
	}
	return out
}

// unsqueeze decompresses a block of want bytes into dst[:0], refusing to
// make more.
func unsqueeze(dst, wire []byte, want int) ([]byte, error) {
	d := decoders.Get().(*zstd.Decoder)
	defer decoders.Put(d)
	out, err := d.DecodeAll(wire, dst[:0:want])
	if err != nil {
		return nil, err
	}
	if len(out) != want {
		return nil, fmt.Errorf("decompressed to %d bytes, want %d", len(out), want)
	}
	return out, nil
}

// wireCache keeps the compressed bytes of recent blocks, oldest out first,
// and how the last tries to compress went: after missStreak blocks in a
// row that did not shrink (an archive, a video), only every missStride-th
// block is tried, until one shrinks again.
type wireCache struct {
	mu     sync.Mutex
	by     map[int][]byte
	order  []int
	bytes  int
	misses int
}

const (
	missStreak = 16
	missStride = 16
)

// worthTrying reports whether block g should be tried at all.
func (c *wireCache) worthTrying(g int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.misses < missStreak || g%missStride == 0
}

// tried records whether a try shrank its block.
func (c *wireCache) tried(shrank bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if shrank {
		c.misses = 0
	} else {
		c.misses++
	}
}

func newWireCache() *wireCache { return &wireCache{by: map[int][]byte{}} }

func (c *wireCache) get(g int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[g]
}

func (c *wireCache) put(g int, wire []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.by[g]; ok {
		return
	}
	c.by[g] = wire
	c.order = append(c.order, g)
	c.bytes += len(wire)
	for c.bytes > wireCacheBytes && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		c.bytes -= len(c.by[old])
		delete(c.by, old)
	}
}

// oneFrame reports whether b is exactly one zstd frame, without a
// dictionary: its header, its blocks to the last, its checksum if it says
// so, and not a byte more. What it decompresses to is the block, verified;
// a skippable frame or trailing bytes would ride along unverified.
func oneFrame(b []byte) bool {
	var h zstd.Header
	if h.Decode(b) != nil || h.Skippable || h.DictionaryID != 0 || h.HeaderSize < 4 {
		return false
	}
	i := h.HeaderSize
	for {
		if len(b)-i < 3 {
			return false
		}
		bh := int(b[i]) | int(b[i+1])<<8 | int(b[i+2])<<16
		i += 3
		switch bh >> 1 & 3 {
		case 0, 2: // raw, compressed: that many bytes follow
			i += bh >> 3
		case 1: // one byte, repeated
			i++
		default:
			return false
		}
		if i > len(b) {
			return false
		}
		if bh&1 == 1 { // the last block
			break
		}
	}
	if h.HasCheckSum {
		i += 4
	}
	return i == len(b)
}

package relay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Version is the wire protocol version. Peers with a different version
// refuse each other in the handshake.
const Version = 4

var magic = [4]byte{'T', 'C', 'S', 'T'}

const headerLen = 10 // magic(4) version(1) type(1) length(4)

// msgType identifies a frame's payload. Values are append-only.
type msgType uint8

const (
	msgHello    msgType = 1  // connector -> listener: role, node id
	msgWelcome  msgType = 2  // listener -> connector: node id, name, busy
	msgOffer    msgType = 3  // seed -> node: signed manifest
	msgAccept   msgType = 4  // node -> seed: chunks already held
	msgRefuse   msgType = 5  // node -> seed, or parent -> child: reason
	msgParent   msgType = 6  // seed -> node: where to fetch from
	msgWant     msgType = 7  // child -> parent: session, stripe, chunks held
	msgChunk    msgType = 8  // retired with version 1: whole chunks
	msgProgress msgType = 9  // node -> seed: chunks verified (also the heartbeat)
	msgResult   msgType = 10 // node -> seed: apply outcome
	msgEnd      msgType = 11 // seed -> node: session over
	msgPing     msgType = 12 // either way on an idle link
	msgComplain msgType = 13 // node -> seed: its parent failed it
	msgHashes   msgType = 14 // parent -> child: a chunk's block hashes
	msgBlock    msgType = 15 // parent -> child: one block
	msgProof    msgType = 16 // either way: "I hold the fleet secret"
	msgReport   msgType = 17 // seed -> node: where to send progress datagrams
	msgHeld     msgType = 18 // child -> parent: it holds its whole stripe, verified
)

func (t msgType) String() string {
	names := map[msgType]string{
		msgHello: "hello", msgWelcome: "welcome", msgOffer: "offer", msgAccept: "accept",
		msgRefuse: "refuse", msgParent: "parent", msgWant: "want", msgChunk: "chunk",
		msgProgress: "progress", msgResult: "result", msgEnd: "end", msgPing: "ping",
		msgComplain: "complain", msgHashes: "hashes", msgBlock: "block", msgProof: "proof",
		msgReport: "report", msgHeld: "held",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// Size limits, checked before any allocation.
const (
	MinChunkSize     = 4 << 10
	MaxChunkSize     = 16 << 20
	MinBlockSize     = 4 << 10
	MaxBlockSize     = 64 << 10
	DefaultBlockSize = 16 << 10 // one block crosses a 2 Mbit/s tree in 65 ms: a hop costs little
	maxManifestLen   = 32 << 20
	maxControlLen    = 64 << 10
	maxChunks        = (maxManifestLen - 4096) / 32
	maxBlocks        = 1 << 27 // a want's bitmap stays within 16 MiB
	blockHeaderLen   = 5       // block index u32, flags u8
	maxHashesLen     = 4 + 32*(MaxChunkSize/MinBlockSize)
	maxGroupLen      = 63 // a DNS label
	maxRefuseLen     = 1 + 4 + maxText
)

// maxPayload is the largest payload accepted for each message type.
func maxPayload(t msgType) int {
	switch t {
	case msgOffer:
		return maxManifestLen + 4096
	case msgWant:
		return 64 + maxBlocks/8
	case msgHashes:
		return maxHashesLen
	case msgBlock:
		return blockHeaderLen + MaxBlockSize + sealOverhead
	default:
		return maxControlLen
	}
}

var (
	// ErrBadMagic means the peer does not speak the treecast protocol.
	ErrBadMagic = errors.New("not a treecast peer (bad magic)")
	// ErrFrameTooLarge means a peer announced a frame beyond the limit for its type.
	ErrFrameTooLarge = errors.New("frame exceeds size limit")
)

// VersionError reports a peer speaking another protocol version.
type VersionError struct{ Got, Want int }

func (e *VersionError) Error() string {
	return fmt.Sprintf("peer speaks treecast protocol %d, this binary speaks %d: run the same treecast version on every machine", e.Got, e.Want)
}

// IsVersionMismatch reports whether err comes from a peer of another protocol version.
func IsVersionMismatch(err error) bool {
	var v *VersionError
	return errors.As(err, &v)
}

// frame is one decoded message.
type frame struct {
	typ     msgType
	payload []byte
}

// appendHeader appends the header of a frame of type t with an n-byte payload.
func appendHeader(b []byte, t msgType, n int) []byte {
	b = append(b, magic[:]...)
	b = append(b, Version, byte(t))
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// writeFrame writes one frame. The payload is written straight from p.
func writeFrame(w io.Writer, t msgType, p []byte) error {
	if len(p) > maxPayload(t) {
		return fmt.Errorf("write %s: %d bytes: %w", t, len(p), ErrFrameTooLarge)
	}
	h := [headerLen]byte(appendHeader(make([]byte, 0, headerLen), t, len(p)))
	if bw, ok := w.(*bufio.Writer); ok {
		if _, err := bw.Write(h[:]); err != nil {
			return err
		}
		_, err := bw.Write(p)
		return err
	}
	if len(p) <= 4096 {
		_, err := w.Write(append(h[:], p...))
		return err
	}
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// readHeader reads and checks one frame header.
func readHeader(r io.Reader) (msgType, int, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, 0, err
	}
	if [4]byte(h[:4]) != magic {
		return 0, 0, ErrBadMagic
	}
	if h[4] != Version {
		return 0, 0, &VersionError{Got: int(h[4]), Want: Version}
	}
	t := msgType(h[5])
	n := binary.BigEndian.Uint32(h[6:])
	if uint64(n) > uint64(maxPayload(t)) {
		return t, 0, fmt.Errorf("read %s: %d bytes: %w", t, n, ErrFrameTooLarge)
	}
	return t, int(n), nil
}

// growStep bounds what a frame header alone can make us allocate: larger
// payloads grow their buffer as their bytes actually arrive.
const growStep = 1 << 20

// readFrame reads one whole frame. buf is reused when large enough.
func readFrame(r io.Reader, buf []byte) (frame, error) {
	t, n, err := readHeader(r)
	if err != nil {
		return frame{}, err
	}
	return readPayload(r, t, n, buf)
}

// readPayload reads the n-byte payload of a frame of type t.
func readPayload(r io.Reader, t msgType, n int, buf []byte) (frame, error) {
	if cap(buf) >= n {
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return frame{}, fmt.Errorf("read %s payload: %w", t, noEOF(err))
		}
		return frame{typ: t, payload: buf}, nil
	}
	buf = make([]byte, 0, min(n, growStep))
	for len(buf) < n {
		k := min(n-len(buf), growStep)
		buf = slices.Grow(buf, k)
		if _, err := io.ReadFull(r, buf[len(buf):len(buf)+k]); err != nil {
			return frame{}, fmt.Errorf("read %s payload: %w", t, noEOF(err))
		}
		buf = buf[:len(buf)+k]
	}
	return frame{typ: t, payload: buf}, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

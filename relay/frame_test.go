package relay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// allTypes is every message type the wire spec defines.
var allTypes = []msgType{
	msgHello, msgWelcome, msgOffer, msgAccept, msgRefuse, msgParent, msgWant,
	msgProgress, msgResult, msgEnd, msgPing, msgComplain, msgHashes, msgBlock,
}

type sampleFrame struct {
	typ     msgType
	payload []byte
}

// sampleFrames returns one realistic payload for every message type.
func sampleFrames() []sampleFrame {
	block := binary.BigEndian.AppendUint32(nil, 7)
	block = append(block, 0)
	block = append(block, testData(DefaultBlockSize)...)
	hashes := binary.BigEndian.AppendUint32(nil, 7)
	hashes = append(hashes, testData(32*64)...)
	id := NodeID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	return []sampleFrame{
		{msgHello, helloMsg{role: roleControl, id: id, name: "rack1-node07"}.encode()},
		{msgWelcome, welcomeMsg{id: id, name: "rack1-node07", busy: true}.encode()},
		{msgOffer, Sign(testManifest(testData(3*MinChunkSize+123), MinChunkSize), testKey(1)).encode()},
		{msgAccept, acceptMsg{held: 3 << 20}.encode()},
		{msgRefuse, refuseMsg{code: refuseNoSpace, reason: "no space"}.encode()},
		{msgParent, parentMsg{id: id, addr: netip.MustParseAddrPort("10.0.0.7:4455"), stripes: 2, stripe: 1}.encode()},
		{msgWant, wantMsg{session: [16]byte{9}, stripes: 1, have: []byte{0b101}}.encode()},
		{msgProgress, progressMsg{held: 3 << 20, received: 12345}.encode()},
		{msgResult, resultMsg{ok: true, received: 12345, millis: 678}.encode()},
		{msgEnd, nil},
		{msgPing, nil},
		{msgComplain, complainMsg{parent: id, kind: complainCorrupt, block: 3, detail: "hash mismatch"}.encode()},
		{msgHashes, hashes},
		{msgBlock, block},
	}
}

// frameHeader lays out a header by hand, as a hostile or foreign peer might.
func frameHeader(m [4]byte, version byte, t msgType, n uint32) []byte {
	h := append(m[:], version, byte(t))
	return binary.BigEndian.AppendUint32(h, n)
}

func TestFrameRoundTripEveryType(t *testing.T) {
	frames := sampleFrames()
	if len(frames) != len(allTypes) {
		t.Fatalf("%d sample frames for %d types", len(frames), len(allTypes))
	}
	writers := []struct {
		name  string
		write func(w *bytes.Buffer, f sampleFrame) error
	}{
		{"direct", func(w *bytes.Buffer, f sampleFrame) error { return writeFrame(w, f.typ, f.payload) }},
		{"bufio", func(w *bytes.Buffer, f sampleFrame) error {
			bw := bufio.NewWriterSize(w, 16)
			if err := writeFrame(bw, f.typ, f.payload); err != nil {
				return err
			}
			return bw.Flush()
		}},
		{"shared bufio", nil}, // every frame through one bufio.Writer, flushed once
	}
	for _, wr := range writers {
		t.Run(wr.name, func(t *testing.T) {
			var stream bytes.Buffer
			if wr.write == nil {
				bw := bufio.NewWriter(&stream)
				for _, f := range frames {
					if err := writeFrame(bw, f.typ, f.payload); err != nil {
						t.Fatalf("write %s: %v", f.typ, err)
					}
				}
				if err := bw.Flush(); err != nil {
					t.Fatal(err)
				}
			} else {
				for _, f := range frames {
					if err := wr.write(&stream, f); err != nil {
						t.Fatalf("write %s: %v", f.typ, err)
					}
				}
			}
			var buf []byte // reused from frame to frame, as a reader loop does
			for _, want := range frames {
				got, err := readFrame(&stream, buf)
				if err != nil {
					t.Fatalf("read %s: %v", want.typ, err)
				}
				if got.typ != want.typ || !bytes.Equal(got.payload, want.payload) {
					t.Fatalf("read %s with %d bytes, want %s with %d bytes", got.typ, len(got.payload), want.typ, len(want.payload))
				}
				buf = got.payload
			}
			if _, err := readFrame(&stream, buf); err != io.EOF {
				t.Errorf("after the last frame: %v, want io.EOF", err)
			}
		})
	}
}

// The bytes on the wire are what doc.go says they are.
func TestFrameWireLayout(t *testing.T) {
	tests := []struct {
		typ     msgType
		payload []byte
		want    string
	}{
		{msgPing, nil, "TCST\x04\x0c\x00\x00\x00\x00"},
		{msgEnd, nil, "TCST\x04\x0b\x00\x00\x00\x00"},
		{msgAccept, acceptMsg{held: 0x01020304, seedTimeout: 30 * time.Second, datagrams: true}.encode(), "TCST\x04\x04\x00\x00\x00\x0f\x00\x00\x00\x00\x01\x02\x03\x04\x00\x00\x00\x00\x75\x30\x01"},
		{msgReport, reportMsg{port: 0x1f90, token: [16]byte{0: 0xaa, 15: 0xbb}}.encode(), "TCST\x04\x11\x00\x00\x00\x12\x1f\x90\xaa" + strings.Repeat("\x00", 14) + "\xbb"},
		{msgProgress, progressMsg{held: 1, received: 2, millis: 0x0304}.encode(), "TCST\x04\x09\x00\x00\x00\x1b\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x03\x04\x00\x00"},
		{msgProgress, progressMsg{held: 1, received: 2, millis: 0x0304, stalls: []stallReport{{peer: NodeID{15: 0xaa}, addr: netip.MustParseAddr("10.0.0.9"), stripe: 1, millis: 0x0506}}, starved: []stallReport{{peer: NodeID{0: 0xbb}, millis: 7}}}.encode(),
			"TCST\x04\x09\x00\x00\x00\x65\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x03\x04" +
				"\x01" + strings.Repeat("\x00", 15) + "\xaa" + strings.Repeat("\x00", 10) + "\xff\xff\x0a\x00\x00\x09" + "\x01\x00\x00\x05\x06" +
				"\x01\xbb" + strings.Repeat("\x00", 15) + strings.Repeat("\x00", 16) + "\x00\x00\x00\x00\x07"},
		{msgRefuse, refuseMsg{code: refuseBusy, reason: "busy"}.encode(), "TCST\x04\x05\x00\x00\x00\x09\x01\x00\x00\x00\x04busy"},
		{msgBlock, []byte{0, 0, 0, 9, 0, 'x'}, "TCST\x04\x0f\x00\x00\x00\x06\x00\x00\x00\x09\x00x"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := writeFrame(&b, tt.typ, tt.payload); err != nil {
			t.Fatal(err)
		}
		if b.String() != tt.want {
			t.Errorf("%s frame is %q, want %q", tt.typ, b.String(), tt.want)
		}
	}
}

func TestReadFrameRejectsBadMagic(t *testing.T) {
	tests := map[string][]byte{
		"HTTP":           []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"lower case":     frameHeader([4]byte{'t', 'c', 's', 't'}, Version, msgPing, 0),
		"zeros":          make([]byte, headerLen),
		"ssh banner":     []byte("SSH-2.0-OpenSSH_9.6\r\n"),
		"one byte wrong": frameHeader([4]byte{'T', 'C', 'S', 'U'}, Version, msgPing, 0),
	}
	for name, in := range tests {
		_, err := readFrame(bytes.NewReader(in), nil)
		if !errors.Is(err, ErrBadMagic) {
			t.Errorf("%s: %v, want ErrBadMagic", name, err)
		}
		if IsVersionMismatch(err) {
			t.Errorf("%s: bad magic reported as a version mismatch", name)
		}
	}
}

func TestReadFrameVersionMismatch(t *testing.T) {
	for _, v := range []byte{0, 1, 2, 3, 5, 255} {
		in := append(frameHeader(magic, v, msgHello, 3), "abc"...)
		_, err := readFrame(bytes.NewReader(in), nil)
		if !IsVersionMismatch(err) {
			t.Fatalf("version %d: %v, want a version mismatch", v, err)
		}
		if !IsVersionMismatch(fmt.Errorf("handshake with 10.0.0.7: %w", err)) {
			t.Errorf("version %d: a wrapped mismatch is not recognised", v)
		}
		msg := err.Error()
		for _, want := range []string{fmt.Sprintf("protocol %d", v), fmt.Sprintf("speaks %d", Version), "same treecast version"} {
			if !strings.Contains(msg, want) {
				t.Errorf("version %d: message %q does not say %q", v, msg, want)
			}
		}
	}
	for _, err := range []error{nil, ErrBadMagic, io.EOF, ErrFrameTooLarge} {
		if IsVersionMismatch(err) {
			t.Errorf("IsVersionMismatch(%v) = true", err)
		}
	}
}

// A header announcing more than the type's limit is refused on the header
// alone: the reader holds nothing after it, so an allocation or a read of
// the payload would show up as memory use or an EOF error.
func TestReadFrameRejectsOversizeBeforeAllocating(t *testing.T) {
	types := append([]msgType{0, 99, 255}, allTypes...)
	for _, typ := range types {
		limit := maxPayload(typ)
		for _, n := range []uint32{uint32(limit) + 1, uint32(limit) + 1<<20, math.MaxUint32} {
			hdr := frameHeader(magic, Version, typ, n)
			var err error
			allocated := uint64(math.MaxUint64)
			for range 3 { // the least of three, in case something else allocated meanwhile
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				_, err = readFrame(bytes.NewReader(hdr), nil)
				runtime.ReadMemStats(&after)
				allocated = min(allocated, after.TotalAlloc-before.TotalAlloc)
			}
			if !errors.Is(err, ErrFrameTooLarge) {
				t.Errorf("%s announcing %d bytes (limit %d): %v, want ErrFrameTooLarge", typ, n, limit, err)
			}
			if allocated > uint64(limit)/4 {
				t.Errorf("%s announcing %d bytes: %d bytes allocated before the refusal", typ, n, allocated)
			}
		}
		// Exactly the limit is allowed.
		gotTyp, gotN, err := readHeader(bytes.NewReader(frameHeader(magic, Version, typ, uint32(limit))))
		if err != nil || gotTyp != typ || gotN != limit {
			t.Errorf("%s at its limit %d: readHeader = %s, %d, %v", typ, limit, gotTyp, gotN, err)
		}
	}
}

func TestReadFrameTruncated(t *testing.T) {
	full := append(frameHeader(magic, Version, msgRefuse, 9), refuseMsg{code: 1, reason: "busy"}.encode()...)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"nothing", nil, io.EOF},
		{"partial header", full[:3], io.ErrUnexpectedEOF},
		{"header only", full[:headerLen], io.ErrUnexpectedEOF},
		{"half the payload", full[:headerLen+4], io.ErrUnexpectedEOF},
		{"all but one byte", full[:len(full)-1], io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		_, err := readFrame(bytes.NewReader(tt.in), nil)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if tt.want == io.ErrUnexpectedEOF && errors.Is(err, io.EOF) {
			t.Errorf("%s: a cut frame looks like a clean close: %v", tt.name, err)
		}
	}
	if _, err := readFrame(bytes.NewReader(full), nil); err != nil {
		t.Fatalf("the whole frame: %v", err)
	}
}

func TestWriteFrameRefusesOversize(t *testing.T) {
	big := make([]byte, maxPayload(msgOffer)+1)
	for _, typ := range append([]msgType{99}, allTypes...) {
		p := big[:maxPayload(typ)+1]
		var direct bytes.Buffer
		if err := writeFrame(&direct, typ, p); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("%s of %d bytes: %v, want ErrFrameTooLarge", typ, len(p), err)
		}
		var buffered bytes.Buffer
		bw := bufio.NewWriter(&buffered)
		if err := writeFrame(bw, typ, p); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("%s of %d bytes through bufio: %v, want ErrFrameTooLarge", typ, len(p), err)
		}
		bw.Flush()
		if direct.Len() != 0 || buffered.Len() != 0 {
			t.Errorf("%s: a refused frame still put %d+%d bytes on the wire", typ, direct.Len(), buffered.Len())
		}
	}
}

// The largest frame each limit allows goes through whole.
func TestLargestFramesRoundTrip(t *testing.T) {
	big := testData(maxPayload(msgOffer))
	for _, typ := range []msgType{msgOffer, msgBlock, msgHashes, msgWant, msgHello} {
		p := big[:maxPayload(typ)]
		var b bytes.Buffer
		if err := writeFrame(&b, typ, p); err != nil {
			t.Fatalf("write %s of %d bytes: %v", typ, len(p), err)
		}
		f, err := readFrame(&b, nil)
		if err != nil {
			t.Fatalf("read %s of %d bytes: %v", typ, len(p), err)
		}
		if f.typ != typ || !bytes.Equal(f.payload, p) {
			t.Errorf("%s of %d bytes came back as %s of %d", typ, len(p), f.typ, len(f.payload))
		}
	}
}

// The largest legal message of each kind fits the frame limit of its type,
// so a session at the documented limits can actually be run.
func TestLargestMessagesFitTheirFrames(t *testing.T) {
	t.Run("want for the most blocks", func(t *testing.T) {
		w := wantMsg{stripes: 2, stripe: 1, have: make([]byte, (maxBlocks+7)/8)}
		p := w.encode()
		if err := writeFrame(io.Discard, msgWant, p); err != nil {
			t.Fatalf("want for %d blocks: %v", maxBlocks, err)
		}
		if _, err := decodeWant(p); err != nil {
			t.Fatalf("decode want for %d blocks: %v", maxBlocks, err)
		}
	})
	t.Run("offer with the most chunks", func(t *testing.T) {
		m := &Manifest{
			Created: testEpoch, Expires: testEpoch.Add(1), Name: strings.Repeat("n", 255),
			Size: maxChunks * (MaxChunkSize / 2), ChunkSize: MaxChunkSize / 2, BlockSize: MaxBlockSize, Chunks: make([][32]byte, maxChunks),
		}
		if err := m.Validate(); err != nil {
			t.Fatal(err)
		}
		p := Sign(m, testKey(1)).encode()
		if err := writeFrame(io.Discard, msgOffer, p); err != nil {
			t.Fatalf("offer of %d bytes: %v", len(p), err)
		}
		s, err := decodeSigned(p)
		if err != nil {
			t.Fatalf("decode offer with %d chunks: %v", maxChunks, err)
		}
		if len(s.Manifest.Chunks) != maxChunks || s.Manifest.ChunkLen(maxChunks-1) != MaxChunkSize/2 {
			t.Errorf("decoded %d chunks, last of %d bytes", len(s.Manifest.Chunks), s.Manifest.ChunkLen(maxChunks-1))
		}
	})
	t.Run("largest block and block hashes", func(t *testing.T) {
		if err := writeFrame(io.Discard, msgBlock, make([]byte, blockHeaderLen+MaxBlockSize)); err != nil {
			t.Fatal(err)
		}
		if err := writeFrame(io.Discard, msgHashes, make([]byte, 4+32*(MaxChunkSize/MinBlockSize))); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("longest texts", func(t *testing.T) {
		long := strings.Repeat("x", maxText)
		for _, f := range []sampleFrame{
			{msgHello, helloMsg{role: roleData, name: long}.encode()},
			{msgWelcome, welcomeMsg{name: long}.encode()},
			{msgRefuse, refuseMsg{reason: long}.encode()},
			{msgResult, resultMsg{err: long, output: long}.encode()},
			{msgComplain, complainMsg{detail: long}.encode()},
		} {
			if err := writeFrame(io.Discard, f.typ, f.payload); err != nil {
				t.Errorf("%s with a %d-byte text: %v", f.typ, maxText, err)
			}
		}
	})
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriteFrameReportsWriteErrors(t *testing.T) {
	boom := errors.New("connection reset")
	for _, size := range []int{0, 10, 5000} {
		if err := writeFrame(failingWriter{boom}, msgBlock, make([]byte, size)); !errors.Is(err, boom) {
			t.Errorf("%d-byte frame to a broken writer: %v, want %v", size, err, boom)
		}
	}
}

func TestMsgTypeString(t *testing.T) {
	seen := map[string]bool{}
	for _, typ := range allTypes {
		s := typ.String()
		if strings.HasPrefix(s, "type-") || seen[s] {
			t.Errorf("type %d has name %q", typ, s)
		}
		seen[s] = true
	}
	if got := msgType(200).String(); got != "type-200" {
		t.Errorf("unknown type prints as %q", got)
	}
}

// wireCase is one message, its encoding and the decoder that reads it back.
type wireCase struct {
	name    string
	want    any
	payload []byte
	decode  func([]byte) (any, error)
	// olders are the messages peers of earlier builds send: each the
	// payload cut by so many bytes at the end, decoding as earlier, the
	// fields since appended empty.
	olders []older
}

type older struct {
	cut     int
	earlier any
}

func wire[M any](name string, m M, encode func(M) []byte, decode func([]byte) (M, error)) wireCase {
	return wireCase{name: name, want: m, payload: encode(m), decode: func(p []byte) (any, error) {
		v, err := decode(p)
		return v, err
	}}
}

// result is the wire case of m; a node of an earlier build sends no output.
func result(name string, m resultMsg) wireCase {
	c := wire(name, m, resultMsg.encode, decodeResult)
	c.olders = []older{{4 + len(m.output), resultMsg{ok: m.ok, err: m.err, received: m.received, millis: m.millis, flushed: m.flushed}}}
	return c
}

// progress is the wire case of m; nodes of earlier builds send no stalls,
// and before that no clock.
func progress(name string, m progressMsg) wireCase {
	c := wire(name, m, progressMsg.encode, decodeProgress)
	stalls := 2 + 37*(len(m.stalls)+len(m.starved))
	c.olders = []older{
		{stalls, progressMsg{held: m.held, received: m.received, stripes: m.stripes, millis: m.millis}},
		{stalls + 8, progressMsg{held: m.held, received: m.received, stripes: m.stripes}},
	}
	return c
}

// accept is the wire case of m; nodes of earlier builds do not say they
// take datagrams, and before that send no seed timeout.
func accept(name string, m acceptMsg) wireCase {
	c := wire(name, m, acceptMsg.encode, decodeAccept)
	c.olders = []older{
		{1, acceptMsg{held: m.held, applied: m.applied, upToDate: m.upToDate, seedTimeout: m.seedTimeout}},
		{5, acceptMsg{held: m.held, applied: m.applied, upToDate: m.upToDate}},
	}
	return c
}

// parent is the wire case of m; seeds of earlier builds do not say how
// many children the node feeds.
func parent(name string, m parentMsg) wireCase {
	if m.kids == nil {
		m.kids = []kid{} // this build's seed always says
	}
	c := wire(name, m, parentMsg.encode, decodeParent)
	noKids := m
	noKids.kids = nil
	earlier := noKids
	earlier.feeds = -1
	k := 1 + (16+16)*len(m.kids)
	c.olders = []older{{k, noKids}, {k + 1, earlier}}
	return c
}

func wireCases() []wireCase {
	id := NodeID{0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xee}
	long := strings.Repeat("é", maxText/2)
	return []wireCase{
		wire("hello control", helloMsg{role: roleControl, id: id, name: "node-1"}, helloMsg.encode, decodeHello),
		wire("hello data, no name", helloMsg{role: roleData, id: id}, helloMsg.encode, decodeHello),
		wire("hello longest name", helloMsg{role: roleData, name: long}, helloMsg.encode, decodeHello),
		wire("welcome idle", welcomeMsg{id: id, name: "node-1"}, welcomeMsg.encode, decodeWelcome),
		wire("welcome busy", welcomeMsg{id: id, name: "node-1", busy: true}, welcomeMsg.encode, decodeWelcome),
		accept("accept none", acceptMsg{}),
		accept("accept max", acceptMsg{held: math.MaxUint64, seedTimeout: 24 * time.Hour, datagrams: true}),
		accept("accept applied", acceptMsg{held: 7, applied: true, seedTimeout: 30 * time.Second, datagrams: true}),
		accept("accept up to date", acceptMsg{held: 7, applied: true, upToDate: true, seedTimeout: 20 * time.Millisecond}),
		wire("refuse busy", refuseMsg{code: refuseBusy, reason: "busy with another session"}, refuseMsg.encode, decodeRefuse),
		wire("refuse local, no reason", refuseMsg{code: refuseLocal}, refuseMsg.encode, decodeRefuse),
		parent("parent seed ipv4, a leaf", parentMsg{addr: netip.MustParseAddrPort("192.168.1.10:7000"), stripes: 1}),
		parent("parent node ipv6", parentMsg{id: id, addr: netip.MustParseAddrPort("[fe80::1%eth0]:65535"), stripes: 2, stripe: 1, feeds: 2}),
		parent("parent of a node feeding the most", parentMsg{addr: netip.MustParseAddrPort("10.0.0.1:1"), stripes: 2, feeds: math.MaxUint8}),
		parent("parent of a node feeding two", parentMsg{id: id, addr: netip.MustParseAddrPort("10.0.0.1:1"), stripes: 2, feeds: 2,
			kids: []kid{{id: id, addr: netip.MustParseAddr("10.0.0.7")}, {id: NodeID{1}, addr: netip.MustParseAddr("fe80::7")}}}),
		wire("report by datagram", reportMsg{port: 65535, token: [16]byte(id)}, reportMsg.encode, decodeReport),
		wire("report over the connection", reportMsg{}, reportMsg.encode, decodeReport),
		wire("want nothing held", wantMsg{session: [16]byte{1}, stripes: 1, have: []byte{}}, wantMsg.encode, decodeWant),
		wire("want some held", wantMsg{session: [16]byte{1}, stripes: 2, stripe: 1, have: []byte{0b1010_0101, 0xff, 0}}, wantMsg.encode, decodeWant),
		progress("progress", progressMsg{held: 12 << 40, received: 1 << 40, millis: 1}),
		progress("progress by stripe", progressMsg{held: 12 << 40, received: 1 << 40, stripes: []uint64{5 << 40, 7 << 40}, millis: math.MaxUint64}),
		progress("progress with stalls", progressMsg{held: 1, received: 1, stripes: []uint64{1, 0}, millis: 9, stalls: []stallReport{{peer: id, addr: netip.MustParseAddr("192.168.7.3"), stripe: 1, millis: 1500}, {stripe: 0, millis: math.MaxUint32}}}),
		progress("progress with a stall from IPv6", progressMsg{held: 1, received: 1, millis: 9, stalls: []stallReport{{peer: id, addr: netip.MustParseAddr("fe80::1"), millis: 1500}}}),
		progress("progress starved", progressMsg{held: 1, received: 1, stripes: []uint64{1, 0}, millis: 9, starved: []stallReport{{peer: id, stripe: 1, millis: 1000}}}),
		progress("progress with both", progressMsg{held: 1, received: 1, stripes: []uint64{1, 0}, millis: 9, stalls: []stallReport{{peer: id, millis: 2000}}, starved: []stallReport{{peer: id, stripe: 1, millis: 1000}}}),
		result("result ok", resultMsg{ok: true, received: 99, millis: 1234}),
		result("result failed", resultMsg{err: "apply: exit status 3", received: 99, millis: math.MaxUint64}),
		result("result flushed, with output", resultMsg{ok: true, flushed: true, output: "restarted app\nversion 2.4"}),
		result("result failed, longest output", resultMsg{err: "exit status 1", output: long}),
		wire("complain lost", complainMsg{parent: id, kind: complainLost, detail: "silent for 4s"}, complainMsg.encode, decodeComplain),
		wire("complain corrupt", complainMsg{parent: id, kind: complainCorrupt, block: math.MaxUint32, detail: "hash"}, complainMsg.encode, decodeComplain),
		wire("complain refused", complainMsg{kind: complainRefused}, complainMsg.encode, decodeComplain),
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	for _, tt := range wireCases() {
		got, err := tt.decode(tt.payload)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: decoded %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// Fields are only ever appended, so a decoder reads what it knows and
// ignores what a newer peer added after it.
func TestMessagesIgnoreAppendedFields(t *testing.T) {
	for _, tt := range wireCases() {
		got, err := tt.decode(append(bytes.Clone(tt.payload), "a field from the future"...))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: decoded %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestMessagesRejectTruncation(t *testing.T) {
	for _, tt := range wireCases() {
		for n := range len(tt.payload) {
			if slices.ContainsFunc(tt.olders, func(o older) bool { return n == len(tt.payload)-o.cut }) {
				continue // as a peer of an earlier build sends it: below
			}
			got, err := tt.decode(tt.payload[:n])
			if err == nil {
				t.Errorf("%s cut to %d of %d bytes decoded as %+v", tt.name, n, len(tt.payload), got)
				break
			}
			if !strings.HasPrefix(err.Error(), "decode ") {
				t.Errorf("%s cut to %d bytes: error %q does not say what was being decoded", tt.name, n, err)
				break
			}
		}
	}
}

// A message from a node of an earlier build ends before the fields
// appended since (a result's output, an accept's seed timeout, a
// progress's clock): it
// decodes, with those fields empty, rather than failing the node.
func TestMessagesFromAnEarlierBuild(t *testing.T) {
	for _, tt := range wireCases() {
		for _, o := range tt.olders {
			got, err := tt.decode(tt.payload[:len(tt.payload)-o.cut])
			if err != nil || !reflect.DeepEqual(got, o.earlier) {
				t.Errorf("%s as an earlier build sends it (%d bytes shorter): %+v, %v; want %+v", tt.name, o.cut, got, err, o.earlier)
			}
		}
	}
}

func TestMessagesRejectHostileFields(t *testing.T) {
	id := make([]byte, 16)
	build := func(fields ...func(e *enc)) []byte {
		var e enc
		for _, f := range fields {
			f(&e)
		}
		return e.b
	}
	u8 := func(v uint8) func(*enc) { return func(e *enc) { e.u8(v) } }
	u32 := func(v uint32) func(*enc) { return func(e *enc) { e.u32(v) } }
	u64 := func(v uint64) func(*enc) { return func(e *enc) { e.u64(v) } }
	raw := func(p []byte) func(*enc) { return func(e *enc) { e.raw(p) } }
	str := func(s string) func(*enc) { return func(e *enc) { e.str(s) } }
	tooLong := strings.Repeat("x", maxText+1)

	decoders := map[string]func([]byte) error{
		"hello":    func(p []byte) error { _, err := decodeHello(p); return err },
		"welcome":  func(p []byte) error { _, err := decodeWelcome(p); return err },
		"accept":   func(p []byte) error { _, err := decodeAccept(p); return err },
		"refuse":   func(p []byte) error { _, err := decodeRefuse(p); return err },
		"parent":   func(p []byte) error { _, err := decodeParent(p); return err },
		"want":     func(p []byte) error { _, err := decodeWant(p); return err },
		"progress": func(p []byte) error { _, err := decodeProgress(p); return err },
		"result":   func(p []byte) error { _, err := decodeResult(p); return err },
		"complain": func(p []byte) error { _, err := decodeComplain(p); return err },
		"report":   func(p []byte) error { _, err := decodeReport(p); return err },
	}
	tests := []struct {
		name    string
		decoder string
		payload []byte
		want    string // in the error
	}{
		{"role 0", "hello", build(u8(0), raw(id), str("n"), raw(id), u8(0)), "unknown role 0"},
		{"role 3", "hello", build(u8(3), raw(id), str("n"), raw(id), u8(0)), "unknown role 3"},
		{"role 255", "hello", build(u8(255), raw(id), str("n"), raw(id), u8(0)), "unknown role 255"},
		{"name claims 4 GiB", "hello", build(u8(roleData), raw(id), u32(math.MaxUint32)), "exceeds limit"},
		{"name over the text limit", "hello", build(u8(roleData), raw(id), str(tooLong)), "exceeds limit"},
		{"name claims more than sent", "hello", build(u8(roleData), raw(id), u32(10), raw([]byte("abc"))), "too short"},
		{"busy is 2", "welcome", build(raw(id), str("n"), u8(2)), "bad boolean 2"},
		{"empty accept", "accept", nil, "too short"},
		{"accept without up to date", "accept", build(raw(make([]byte, 8)), u8(1)), "too short"},
		{"up to date, not applied", "accept", build(raw(make([]byte, 8)), u8(0), u8(1)), "up to date, yet not applied"},
		{"datagrams is 2", "accept", build(raw(make([]byte, 8)), u8(0), u8(0), u32(0), u8(2)), "bad boolean 2"},
		{"report without its token", "report", build(u8(0x1f), u8(0x90), raw(id[:15])), "too short"},
		{"reason over the text limit", "refuse", build(u8(1), str(tooLong)), "exceeds limit"},
		{"zero stripes", "parent", build(raw(id), str("10.0.0.1:5"), u8(0), u8(0)), "stripe 0 of 0"},
		{"stripe equals stripes", "parent", build(raw(id), str("10.0.0.1:5"), u8(2), u8(2)), "stripe 2 of 2"},
		{"stripe past stripes", "parent", build(raw(id), str("10.0.0.1:5"), u8(1), u8(200)), "stripe 200 of 1"},
		{"more stripes than this build splits into", "parent", build(raw(id), str("10.0.0.1:5"), u8(3), u8(2)), "at most 2"},
		{"address without port", "parent", build(raw(id), str("10.0.0.1"), u8(1), u8(0)), "parent"},
		{"host name address", "parent", build(raw(id), str("seed.local:5"), u8(1), u8(0)), "parent"},
		{"empty address", "parent", build(raw(id), str(""), u8(1), u8(0)), "parent"},
		{"address over 64 bytes", "parent", build(raw(id), str(strings.Repeat("1", 65)), u8(1), u8(0)), "exceeds limit"},
		{"more children than a relay feeds", "parent", build(raw(id), str("10.0.0.1:5"), u8(1), u8(0), u8(2), u8(maxKids+1)), "65 children"},
		{"a child cut short", "parent", build(raw(id), str("10.0.0.1:5"), u8(1), u8(0), u8(1), u8(1), raw(id)), "too short"},
		{"zero stripes", "want", build(raw(id), u8(0), u8(0), u32(0)), "stripe 0 of 0"},
		{"stripe equals stripes", "want", build(raw(id), u8(3), u8(3), u32(0)), "stripe 3 of 3"},
		{"bitmap over the limit", "want", build(raw(id), u8(1), u8(0), u32(maxBlocks/8+1)), "exceeds limit"},
		{"bitmap claims 4 GiB", "want", build(raw(id), u8(1), u8(0), u32(math.MaxUint32)), "exceeds limit"},
		{"progress cut short", "progress", build(u32(1), u32(0)), "too short"},
		{"more stalls than a relay feeds", "progress", build(u64(1), u64(1), u8(0), u64(1), u8(maxStalls+1)), "17 stalls"},
		{"more starved stripes than a relay has", "progress", build(u64(1), u64(1), u8(0), u64(1), u8(0), u8(maxStalls+1)), "17 stalls"},
		{"stalls claim more than sent", "progress", build(u64(1), u64(1), u8(0), u64(1), u8(2), raw(id), raw(make([]byte, 16)), u8(0), u32(1)), "too short"},
		{"ok is 7", "result", build(u8(7), str(""), u64(0), u64(0)), "bad boolean 7"},
		{"error over the text limit", "result", build(u8(0), str(tooLong), u64(0), u64(0)), "exceeds limit"},
		{"output over the text limit", "result", build(u8(0), str(""), u64(0), u64(0), u8(0), str(tooLong)), "exceeds limit"},
		{"output claims more than sent", "result", build(u8(1), str(""), u64(0), u64(0), u8(0), u32(10), raw([]byte("abc"))), "too short"},
		{"detail over the text limit", "complain", build(raw(id), u8(1), u32(0), str(tooLong)), "exceeds limit"},
	}
	for _, tt := range tests {
		err := decoders[tt.decoder](tt.payload)
		if err == nil {
			t.Errorf("%s %s: accepted", tt.decoder, tt.name)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "decode "+tt.decoder) {
			t.Errorf("%s %s: error %q, want \"decode %s: ...%s...\"", tt.decoder, tt.name, err, tt.decoder, tt.want)
		}
	}
}

func TestParseNodeID(t *testing.T) {
	id := NodeID{0xab, 0xcd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
	got, err := ParseNodeID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseNodeID(%s) = %v, %v", id, got, err)
	}
	if id.Short() != "abcd0102" {
		t.Errorf("Short() = %q", id.Short())
	}
	for _, bad := range []string{"", "abcd", id.String() + "0", strings.Repeat("zz", 16)} {
		if _, err := ParseNodeID(bad); err == nil {
			t.Errorf("ParseNodeID(%q) accepted", bad)
		}
	}
}

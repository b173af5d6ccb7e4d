package relay

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// A relay that corrupts what it relays is failed in the report whichever
// chunk it corrupts, the last ones too, and however long its children's
// complaints take to reach the seed: there its feeds have written every
// block before its children read the bad one, so they end well, and the
// relay, applied, must not leave before the seed's probe of it, which a
// child's complaint starts. Here what the other nodes tell the seed comes
// 300 ms late (a busy Wi-Fi link), while the relay's own word does not.
func TestCorruptRelayOfTheLastChunksIsReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, _ := writePackage(t, 2<<20+99) // chunks 0-32 of 64 KiB, the last of 99 bytes
	nodes := startNodes(t, ctx, cfg, 6, func(i int, o *ReceiverOptions, _ *context.Context) {
		if i == 0 {
			o.CorruptChunk = func(i int) bool { return i >= 31 } // blocks of both stripes
		}
	})
	peers := peersOf(nodes)
	for i := 1; i < len(peers); i++ {
		peers[i].Addr = slowToSeed(t, ctx, peers[i].Addr, 300*time.Millisecond)
	}
	rep := seedSession(t, ctx, cfg, path, 64<<10, peers)
	if rep.Nodes[0].Status != StatusFailed || !strings.Contains(rep.Nodes[0].Error, "(chunk 31)") && !strings.Contains(rep.Nodes[0].Error, "(chunk 32)") {
		t.Errorf("liar: %q %q", rep.Nodes[0].Status, rep.Nodes[0].Error)
	}
	for i := range nodes[1:] {
		if rep.Nodes[i+1].Status != StatusOK {
			t.Errorf("node %d: %+v", i+1, rep.Nodes[i+1])
		}
	}
}

// slowToSeed forwards a receiver's port: what the receiver says on a
// control connection reaches the seed delay late; data connections, and
// the seed's own frames, go as they come.
func slowToSeed(t *testing.T, ctx context.Context, to netip.AddrPort, delay time.Duration) netip.AddrPort {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		u, stop, ok := dialFor(ctx, c, to)
		if !ok {
			return
		}
		defer stop()
		hello := make([]byte, headerLen+1)
		if _, err := io.ReadFull(c, hello); err != nil {
			return
		}
		if _, err := u.Write(hello); err != nil {
			return
		}
		go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
		if hello[headerLen] != roleControl {
			io.Copy(c, u)
			return
		}
		// Frame by frame: its welcome and accept as they come, the rest late.
		type late struct {
			b  []byte
			at time.Time
		}
		line := make(chan late, 1024)
		go func() {
			defer close(line)
			for k := 0; ; k++ {
				h := make([]byte, headerLen)
				if _, err := io.ReadFull(u, h); err != nil {
					return
				}
				b := make([]byte, headerLen+int(binary.BigEndian.Uint32(h[6:])))
				copy(b, h)
				if _, err := io.ReadFull(u, b[headerLen:]); err != nil {
					return
				}
				at := time.Now()
				if k >= 2 {
					at = at.Add(delay)
				}
				line <- late{b, at}
			}
		}()
		for f := range line {
			time.Sleep(time.Until(f.at))
			if _, err := c.Write(f.b); err != nil {
				return
			}
		}
	})
}

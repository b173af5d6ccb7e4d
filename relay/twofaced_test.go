package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// relayFront fronts an honest receiver at inner: control connections and
// data connections pass as they are, except that the blocks relayed to
// the child victim (by its hello; the zero id: nobody) get a bit flipped,
// and the seed's own fetches (a data hello under the zero id, as
// probeBlock sends it) are counted in probes. A session member that holds
// the package can tell the seed's fetch from a child's in the same way.
func relayFront(t *testing.T, ctx context.Context, inner netip.AddrPort, victim NodeID, probes *atomic.Int32) netip.AddrPort {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		u, stop, ok := dialFor(ctx, c, inner)
		if !ok {
			return
		}
		defer stop()
		f, err := readFrame(c, nil)
		if err != nil || f.typ != msgHello {
			return
		}
		hello, err := decodeHello(f.payload)
		if err != nil {
			return
		}
		if hello.role == roleData && hello.id == (NodeID{}) && probes != nil {
			probes.Add(1)
		}
		if err := writeFrame(u, f.typ, f.payload); err != nil {
			return
		}
		go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
		if hello.role != roleData || victim == (NodeID{}) || hello.id != victim {
			io.Copy(c, u)
			return
		}
		for {
			h := make([]byte, headerLen)
			if _, err := io.ReadFull(u, h); err != nil {
				return
			}
			b := make([]byte, headerLen+int(binary.BigEndian.Uint32(h[6:])))
			copy(b, h)
			if _, err := io.ReadFull(u, b[headerLen:]); err != nil {
				return
			}
			if msgType(h[5]) == msgBlock && len(b) > headerLen+blockHeaderLen {
				b[len(b)-1] ^= 0x01
			}
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	})
}

// Two relays that corrupt what they send one child, and send the seed's
// own fetch the block intact, fail nobody: the child's true complaints,
// found unconfirmed twice, are checked no more, but it still moves away
// from each of them, applies the package and is reported ok.
func TestTwoFacedRelaysFailNoHonestChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig() // two trees
	cfg.SessionGrace = 10 * time.Second
	path, data := writePackage(t, 2<<20)
	nodes := startNodes(t, ctx, cfg, 4, nil)
	peers := peersOf(nodes)
	// Two trees over A B C D: stripe 0 is A(B(D), C), stripe 1 D(C(A), B).
	// B's parents are A and D, one in each tree: both two-faced.
	victim := nodes[1].id
	var probes atomic.Int32
	peers[0].Addr = relayFront(t, ctx, peers[0].Addr, victim, &probes)
	peers[3].Addr = relayFront(t, ctx, peers[3].Addr, victim, &probes)
	rep := seedSession(t, ctx, cfg, path, 64<<10, peers)
	for i, n := range nodes {
		res := <-n.applied
		got, _ := os.ReadFile(n.dest)
		if res.Err != nil || rep.Nodes[i].Status != StatusOK || !bytes.Equal(got, data) {
			t.Errorf("node %d: %v, reported %s %q, identical %v", i, res.Err, rep.Nodes[i].Status, rep.Nodes[i].Error, bytes.Equal(got, data))
		}
	}
	if probes.Load() == 0 {
		t.Fatal("the seed never fetched from the relays the victim accused: the test shows nothing")
	}
}

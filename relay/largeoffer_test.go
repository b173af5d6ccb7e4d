package relay

import (
	"context"
	"net"
	"testing"
	"time"
)

// largeOffer is a signed offer over smallOffer: 33,000 chunks of 4 KiB (a
// 129 MiB package at the smallest chunk; at the default 1 MiB chunk, a
// package over 32 GiB has one as large).
func largeOffer(t *testing.T) []byte {
	t.Helper()
	const chunks = 33000
	m := &Manifest{Created: time.Now(), Expires: time.Now().Add(time.Hour), Name: "big.img",
		Size: chunks * 4096, ChunkSize: 4096, BlockSize: 4096, Chunks: make([][32]byte, chunks)}
	copy(m.Session[:], "large-offer-test")
	for i := range m.Chunks {
		m.Chunks[i][0], m.Chunks[i][1], m.Chunks[i][2] = byte(i), byte(i>>8), 1
	}
	offer := Sign(m, testKey(7)).encode()
	if len(offer) <= smallOffer {
		t.Fatalf("offer of %d bytes is not large", len(offer))
	}
	return offer
}

// A host without a key opens a control connection for each large-offer
// slot, announces a 32 MiB offer on each and sends a byte every
// DeadAfter/2: never idle, and the whole offer is allowed minutes. The
// slots are freed once those bytes fall behind 512 kbit/s, seconds
// after the grace a seed has to begin, so a real seed's large offer
// (a package over 32 GiB at 1 MiB chunks) is taken, not refused as busy.
func TestDribbledLargeOffersHoldNoSlot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	nodes := startNodes(t, ctx, cfg, 1, nil)
	r := nodes[0].r
	addr := peersOf(nodes)[0].Addr.String()
	for range maxLargeOffers {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := newCtrl(conn, cfg.DeadAfter)
		c.send(msgHello, helloMsg{role: roleControl}.encode())
		if _, err := c.expect(cfg.DeadAfter, msgWelcome); err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Time{})
		conn.Write(appendHeader(nil, msgOffer, maxPayload(msgOffer)))
		go func() {
			tick := time.NewTicker(cfg.DeadAfter / 2)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if _, err := conn.Write([]byte{0}); err != nil {
						return
					}
				}
			}
		}()
	}
	// Both slots taken: the receiver has read both headers.
	for len(r.largeOffers) < maxLargeOffers {
		if ctx.Err() != nil {
			t.Fatal("the receiver never took both large-offer slots")
		}
		time.Sleep(10 * time.Millisecond)
	}

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := newCtrl(conn, cfg.DeadAfter)
	begun := time.Now()
	c.sendFrames(frame{typ: msgHello, payload: helloMsg{role: roleControl}.encode()}, frame{typ: msgOffer, payload: largeOffer(t)})
	if _, err := c.expect(cfg.DeadAfter, msgWelcome); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	f, err := readFrame(conn, nil)
	took := time.Since(begun).Round(100 * time.Millisecond)
	switch {
	case err != nil:
		t.Fatalf("the seed's large offer, to an idle receiver: no answer after %s (%v)", took, err)
	case f.typ == msgRefuse:
		rf, _ := decodeRefuse(f.payload)
		t.Fatalf("the seed's large offer refused after %s, code %d %q, the receiver idle", took, rf.code, rf.reason)
	case f.typ != msgAccept:
		t.Fatalf("the seed's large offer: got %s after %s", f.typ, took)
	}
	t.Logf("accepted after %s", took)
}

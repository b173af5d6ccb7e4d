package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// records keeps the messages and attributes of what a logger writes.
type records struct {
	mu    sync.Mutex
	lines []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		line += " " + a.Key + "=" + a.Value.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	return nil
}

func (r *records) matching(prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func TestRefusalsLogALineAMinutePerAddress(t *testing.T) {
	rec := &records{}
	log := slog.New(rec)
	rf := newRefusals()
	now := time.Unix(1000, 0)
	rf.now = func() time.Time { return now }
	a := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 4000}
	b := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 4000}
	for i := range 100 {
		rf.warn(log, &net.TCPAddr{IP: a.IP, Port: 4000 + i}, "refused session", "reason", "untrusted")
	}
	rf.warn(log, b, "refused session", "reason", "untrusted")
	now = now.Add(refusalWindow - time.Second)
	rf.warn(log, a, "refused session", "reason", "untrusted")
	if got := rec.matching("refused session"); len(got) != 2 {
		t.Fatalf("within a minute, 101 refusals from one address and one from another: %d lines, want 2: %q", len(got), got)
	}
	now = now.Add(time.Second)
	rf.warn(log, a, "refused session", "reason", "untrusted")
	got := rec.matching("refused session")
	if len(got) != 3 || !strings.Contains(got[2], "refused before and not logged=100") {
		t.Fatalf("a minute on, the next refusal from the address: %q, want a third line saying 100 were not logged", got)
	}
}

func TestRefusalsTrackABoundedNumberOfAddresses(t *testing.T) {
	rec := &records{}
	log := slog.New(rec)
	rf := newRefusals()
	now := time.Unix(1000, 0)
	rf.now = func() time.Time { return now }
	for i := range 3 * maxRefusers {
		rf.warn(log, &net.TCPAddr{IP: net.IPv4(10, 1, byte(i>>8), byte(i)), Port: 1}, "refused session")
	}
	if n := len(rf.from); n > maxRefusers+1 {
		t.Errorf("%d addresses refused: %d windows kept, want at most %d", 3*maxRefusers, n, maxRefusers+1)
	}
	if got := len(rec.matching("refused session")); got != maxRefusers+1 {
		t.Errorf("%d addresses refused within a minute: %d lines, want %d (one each, then one for the rest)", 3*maxRefusers, got, maxRefusers+1)
	}
	now = now.Add(refusalWindow)
	rf.warn(log, &net.TCPAddr{IP: net.IPv4(10, 2, 0, 1), Port: 1}, "refused session")
	if got := len(rec.matching("refused session")); got != maxRefusers+2 {
		t.Errorf("a new address a minute later: %d lines, want %d", got, maxRefusers+2)
	}
}

// A host that offers sessions under a key the receiver does not trust, as
// fast as it can, from two addresses, is refused every time, with the
// reason, but costs the receiver's log one line per address; the trusted
// seed's session then arrives whole.
func TestUntrustedOffersFloodNoLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, data := writePackage(t, 256<<10)
	_, seedKey, _ := ed25519.GenerateKey(rand.Reader)
	trusted := seedKey.Public().(ed25519.PublicKey)
	_, strangerKey, _ := ed25519.GenerateKey(rand.Reader)
	rec := &records{}
	nodes := startNodes(t, ctx, cfg, 1, func(_ int, o *ReceiverOptions, _ *context.Context) {
		o.Log = slog.New(rec)
		o.Trust = func(k ed25519.PublicKey) error {
			if !k.Equal(trusted) {
				return errors.New("not trusted")
			}
			return nil
		}
	})
	m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	offer := Sign(m, strangerKey).encode()
	hello := helloMsg{role: roleControl}.encode()
	msg := append(appendHeader(nil, msgHello, len(hello)), hello...)
	msg = append(appendHeader(msg, msgOffer, len(offer)), offer...)
	addr := peersOf(nodes)[0].Addr.String()
	const tries = 200
	for i := range tries {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%2))}, Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("offer %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("offer %d: %v", i, err)
		}
		if _, err := readFrame(c, nil); err != nil { // the welcome
			t.Fatalf("offer %d: welcome: %v", i, err)
		}
		f, err := readFrame(c, nil)
		if err != nil || f.typ != msgRefuse {
			t.Fatalf("offer %d: got %v, %v; want a refusal", i, f.typ, err)
		}
		if r, err := decodeRefuse(f.payload); err != nil || r.code != refuseUntrusted {
			t.Fatalf("offer %d refused with %+v, %v; want code %d", i, r, err, refuseUntrusted)
		}
		c.Close()
	}
	if got := rec.matching("refused session"); len(got) != 2 {
		t.Errorf("%d untrusted offers from two addresses: %d log lines, want 2: %q", tries, len(got), got)
	}
	rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, seedKey), Path: path, Peers: peersOf(nodes)})
	if err != nil {
		t.Fatal(err)
	}
	res := <-nodes[0].applied
	got, _ := os.ReadFile(nodes[0].dest)
	if rep.Failed() != 0 || res.Err != nil || !bytes.Equal(got, data) {
		t.Errorf("the trusted seed after the flood: %+v, %v", rep.Nodes, res.Err)
	}
}

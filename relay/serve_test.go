package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// offerAccepted offers signed to the receiver at addr as a seed would
// (hello, welcome, offer) and returns the control connection and the
// receiver's accept.
func offerAccepted(t *testing.T, addr string, signed *Signed) (*ctrl, acceptMsg) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := newCtrl(conn, 5*time.Second)
	fail := func(err error) {
		conn.Close()
		t.Fatal(err)
	}
	if err := c.send(msgHello, helloMsg{role: roleControl}.encode()); err != nil {
		fail(err)
	}
	if _, err := c.expect(5*time.Second, msgWelcome); err != nil {
		fail(err)
	}
	if err := c.send(msgOffer, signed.encode()); err != nil {
		fail(err)
	}
	b, err := c.expect(5*time.Second, msgAccept)
	if err != nil {
		fail(err)
	}
	a, err := decodeAccept(b)
	if err != nil {
		fail(err)
	}
	return c, a
}

// abortSession offers signed to addr, waits for the accept, and hangs up:
// a seed that dies right after starting.
func abortSession(t *testing.T, addr string, signed *Signed) {
	t.Helper()
	c, _ := offerAccepted(t, addr, signed)
	c.conn.Close()
}

// A serve agent takes hundreds of sessions, some aborted, without leaking
// goroutines, file descriptors, spool files or memory.
func TestServeManySessionsLeaksNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of sessions; run without -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := testConfig()
	path, _ := writePackage(t, 150<<10+3)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	r, err := NewReceiver(cfg, ReceiverOptions{Name: "agent", Dir: dir, AllowDowngrade: true,
		Apply: func(context.Context, Package) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rand.Read(r.opt.ID[:])
	agent := &testNode{r: r, id: r.opt.ID}
	addr := peersOf([]*testNode{agent})[0].Addr.String()

	session := func(i int) {
		m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		signed := Sign(m, key)
		done := make(chan Result, 1)
		go func() {
			res, err := r.Next(ctx)
			if err != nil {
				res.Err = err
			}
			done <- res
		}()
		if i%5 == 4 {
			abortSession(t, addr, signed)
			if res := <-done; res.Err == nil {
				t.Fatalf("session %d: aborted session reported success", i)
			}
			return
		}
		rep := offerTo(t, ctx, agent, signed, path)
		if rep.Failed() != 0 {
			t.Fatalf("session %d: %+v", i, rep.Nodes)
		}
		if res := <-done; res.Err != nil {
			t.Fatalf("session %d: %v", i, res.Err)
		}
	}
	for i := range 20 { // warm up pools and caches
		session(i)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	for i := range 300 {
		session(i)
	}
	// Connection handlers finish just after their session; give them a moment.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && (runtime.NumGoroutine() > goroutines+2 || openFDs(t) > fds+2) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goroutines+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines grew from %d to %d:\n%s", goroutines, g, buf[:runtime.Stack(buf, true)])
	}
	if n := openFDs(t); n > fds+2 {
		t.Errorf("open files grew from %d to %d", fds, n)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 8<<20 {
		t.Errorf("heap in use grew by %d bytes over 300 sessions", grown)
	}
	left, _ := os.ReadDir(filepath.Join(dir, "spool"))
	if len(left) > 2 {
		t.Errorf("spool holds %d files after the sessions", len(left))
	}
}

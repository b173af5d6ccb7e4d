package relay

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// On Linux a TCP flow shows what its peer acknowledged, and takes the
// pacing rate the uplink sets.
func TestTCPFlowDeliveryAndPace(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	u := newUplink(0)
	f := u.join(c, flowTo{})
	if f == nil {
		t.Fatal("join: a TCP flow on Linux is not measured")
	}
	const n = 1 << 20
	if _, err := c.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	f.sock.pace(3_000_000)
	var paced uint64
	raw, _ := c.(syscall.Conn).SyscallConn()
	raw.Control(func(fd uintptr) {
		v, err := unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE)
		if err == nil {
			paced = v
		}
	})
	if paced != 3_000_000 {
		t.Errorf("SO_MAX_PACING_RATE = %d, want 3000000", paced)
	}
	c.(*net.TCPConn).CloseWrite()
	if r := <-got; r != n {
		t.Fatalf("peer read %d bytes, want %d", r, n)
	}
	io.Copy(io.Discard, c) // until the peer's FIN, which follows its last ACK
	// bytes_acked counts the SYN and the FIN as a byte each
	d, ok := f.sock.delivered()
	if !ok || d.bytes < n || d.bytes > n+2 {
		t.Errorf("delivered = %d, %v; want the %d written, acknowledged", d.bytes, ok, n)
	}
	u.leave(f)
	c.Close()
}

// The seed sees on a real control connection whether the node's end takes
// what it sends: a node that reads is never deaf, and one whose buffers are
// full with what it does not read is deaf from when its end stopped taking.
func TestControlLinkShowsADeafNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, reads := range []bool{true, false} {
		peer := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				peer <- nil
				return
			}
			peer <- c
			if reads {
				io.Copy(io.Discard, c)
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		p := <-peer
		if p == nil {
			t.Fatal("accept failed")
		}
		n := &node{c: newCtrlLink(newCtrl(c, time.Minute))}
		written := make(chan struct{})
		go func() {
			defer close(written)
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write(make([]byte, 64<<20)) // a node that does not read takes a few MiB at most
		}()
		// Wait until the flow settles: all of it acknowledged, or the
		// node's end took nothing more for a while.
		var last delivery
		still := 0
		for i := 0; i < 500 && still < 20; i++ {
			d, ok := n.c.delivered()
			if !ok {
				t.Fatal("a TCP control connection on Linux shows no delivery")
			}
			if d.bytes == last.bytes && d.pending == last.pending {
				still++
			} else {
				still = 0
			}
			last = d
			time.Sleep(10 * time.Millisecond)
		}
		now := time.Now()
		n.deaf(now)
		deaf := n.deaf(now.Add(10 * time.Second))
		switch {
		case reads && deaf != 0:
			t.Errorf("a node that reads what the seed sends: deaf %s (delivered %+v)", deaf, last)
		case !reads && deaf != 10*time.Second:
			t.Errorf("a node whose end takes nothing more: deaf %s after 10 s, want 10 s (delivered %+v)", deaf, last)
		}
		c.Close()
		p.Close()
		<-written
	}
}

package relay

import (
	"io"
	"net"
	"syscall"
	"testing"

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

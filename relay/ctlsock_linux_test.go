package relay

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// The seed's control connection sends no packet of its own to finish the
// TCP handshake: the acknowledgement goes with the hello and offer
// written at once, one packet fewer per receiver on the seed's uplink.
func TestControlDialSendsNoLoneAck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// segsOut dials with d, writes a hello's worth at once, and counts the
	// segments the dialer sent: SYN, then the write carrying the ACK.
	segsOut := func(d *net.Dialer) uint32 {
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(make([]byte, 389)); err != nil {
			t.Fatal(err)
		}
		var info *unix.TCPInfo
		rawConn(c).Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		if err != nil {
			t.Fatal(err)
		}
		return info.Segs_out
	}
	if got := segsOut(&net.Dialer{}); got != 3 {
		t.Fatalf("a plain dial sent %d segments for SYN, ACK and one write; want 3 (is this still Linux TCP?)", got)
	}
	// The acknowledgement waits up to 200 ms for the write: a machine
	// that stalls this goroutine longer sends it alone, so one of a few
	// tries must show it carried.
	got := make([]uint32, 0, 3)
	for range 3 {
		n := segsOut(controlDialer(DefaultConfig()))
		if n == 2 {
			return
		}
		got = append(got, n)
	}
	t.Fatalf("the control dial sent %v segments for SYN and one write; want 2: the handshake's ACK went alone", got)
}

package relay

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Options of the seed's control connections.

// cork holds what is written to c until it closes, so a last frame and
// the close go out as one packet (see ctrl.end); false where it cannot.
func cork(c net.Conn) bool {
	return setsockopt(c, unix.TCP_CORK, 1)
}

func setsockopt(c net.Conn, opt, v int) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, opt, v)
	}); err != nil {
		return false
	}
	return serr == nil
}

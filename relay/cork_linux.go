package relay

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// cork holds what is written to c until it closes, so a last frame and
// the close go out as one packet (see ctrl.end); false where it cannot.
func cork(c net.Conn) bool {
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
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1)
	}); err != nil {
		return false
	}
	return serr == nil
}

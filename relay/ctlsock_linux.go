package relay

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Options of TCP sockets: the seed's control connections here, the
// uplink's flows in uplink_linux.go, both through rawConn.

// cork holds what is written to c until it closes, so a last frame and
// the close go out as one packet (see ctrl.end); false where it cannot.
func cork(c net.Conn) bool {
	raw := rawConn(c)
	if raw == nil {
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

// quickAck has c acknowledge what comes next at once, not up to 40 ms
// later in the hope of a reply to carry the acknowledgement: a node that
// would leave waits for its result to be acknowledged (see
// leaveWhenSettled). The kernel drops back to delayed acknowledgements
// by itself, so it is set before each read.
func quickAck(c net.Conn) {
	if raw := rawConn(c); raw != nil {
		raw.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
		})
	}
}

// delayAcks is a net.Dialer's Control: the connection holds its
// acknowledgements up to 40 ms for a frame of its own to carry them, from
// the last step of its TCP handshake on. The seed writes its hello and
// offer at once, so the handshake's acknowledgement rides with them: a
// packet less on its uplink per receiver, 8 KB for 128 (sent alone, it
// went out 5 ms before the offer). The first quickAck ends it.
func delayAcks(_, _ string, raw syscall.RawConn) error {
	// A socket that cannot delay its acknowledgements still connects.
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0)
	})
	return nil
}

// rawConn is c's socket, or nil where c has none (a pipe, say).
func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

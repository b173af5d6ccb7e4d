package relay

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tcpSocket reads delivery from TCP_INFO and paces with
// SO_MAX_PACING_RATE, which the kernel's TCP honours whatever the qdisc.
type tcpSocket struct{ raw syscall.RawConn }

func newFlowSocket(c net.Conn) flowSocket {
	raw := rawConn(c)
	if raw == nil {
		return nil
	}
	return tcpSocket{raw}
}

func (s tcpSocket) delivered() (delivery, bool) {
	var d delivery
	var err error
	cerr := s.raw.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			d = delivery{bytes: info.Bytes_acked, busy: time.Duration(info.Busy_time) * time.Microsecond, pending: info.Unacked > 0 || info.Notsent_bytes > 0}
		}
	})
	return d, cerr == nil && err == nil
}

func (s tcpSocket) pace(bytesPerSecond uint64) {
	s.raw.Control(func(fd uintptr) {
		unix.SetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, bytesPerSecond)
	})
}

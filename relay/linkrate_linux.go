package relay

import (
	"encoding/binary"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// linkRate is how fast this machine can send from the interface that
// holds local, in bytes per second: the lower of the speed its driver
// reports and the rate of a token bucket filter (tbf) at the root of its
// egress. Zero: not known (loopback, no such interface, a virtual NIC
// that reports no speed and is not shaped).
func linkRate(local net.IP) int64 {
	ifi := interfaceOf(local)
	if ifi == nil || ifi.Flags&net.FlagLoopback != 0 {
		return 0
	}
	rate := nicSpeed(ifi.Name)
	if tbf := rootTBFRate(ifi.Index); tbf > 0 && (rate == 0 || tbf < rate) {
		rate = tbf
	}
	return rate
}

// interfaceOf is the interface that holds address ip, or nil.
func interfaceOf(ip net.IP) *net.Interface {
	if ip == nil {
		return nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return &ifs[i]
			}
		}
	}
	return nil
}

// nicSpeed is the link speed the driver of interface name reports, in
// bytes per second; zero when it reports none (-1, or no such file).
func nicSpeed(name string) int64 {
	b, err := os.ReadFile("/sys/class/net/" + name + "/speed")
	if err != nil {
		return 0
	}
	mbit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || mbit <= 0 || mbit > 10_000_000 {
		return 0
	}
	return mbit * 1_000_000 / 8
}

// rootTBFRate asks the kernel (rtnetlink) for the qdiscs and returns the
// rate of a tbf at the root of interface index's egress, in bytes per
// second; zero when there is none or the kernel will not say.
func rootTBFRate(index int) int64 {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Usec: 200_000} // the kernel answers at once; never hang a session on it
	if unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) != nil {
		return 0
	}
	if unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}) != nil {
		return 0
	}
	// nlmsghdr, then a struct tcmsg naming the interface.
	req := make([]byte, unix.SizeofNlMsghdr+tcmsgSize)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.RTM_GETQDISC)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1)
	binary.NativeEndian.PutUint32(req[unix.SizeofNlMsghdr+4:], uint32(index))
	if unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}) != nil {
		return 0
	}
	buf := make([]byte, 1<<16)
	var rate int64
	// A dump ends with NLMSG_DONE; a machine has few qdiscs, so a bounded
	// number of reads covers it.
	for range 64 {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil || n <= 0 {
			return rate // what was read before the kernel stopped answering
		}
		done, r := tbfInDump(buf[:n], index)
		if r > 0 {
			rate = r
		}
		if done {
			return rate
		}
	}
	return rate
}

const (
	tcmsgSize  = 20         // struct tcmsg: family, pad, ifindex, handle, parent, info
	tcRoot     = 0xFFFFFFFF // TC_H_ROOT: the qdisc at the root of an egress
	tbfParms   = 1          // TCA_TBF_PARMS: struct tc_tbf_qopt
	tbfRate64  = 4          // TCA_TBF_RATE64: the rate when it is over 2^32-1 bytes per second
	qoptRateAt = 8          // the rate's offset in tc_tbf_qopt (its tc_ratespec.rate, u32)
)

// tbfInDump reads one datagram of a RTM_GETQDISC dump: whether it ends
// the dump, and the rate of a root tbf on interface index in it (0: none).
// Every length is checked before it is used.
func tbfInDump(b []byte, index int) (done bool, rate int64) {
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(binary.NativeEndian.Uint32(b[0:]))
		typ := binary.NativeEndian.Uint16(b[4:])
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return true, rate
		}
		msg := b[unix.SizeofNlMsghdr:l]
		switch typ {
		case unix.NLMSG_DONE, unix.NLMSG_ERROR:
			return true, rate
		case unix.RTM_NEWQDISC:
			if r := rootTBF(msg, index); r > 0 {
				rate = r
			}
		}
		b = b[min(nlAlign(l), len(b)):]
	}
	return false, rate
}

// rootTBF is the rate of the qdisc in msg (a tcmsg and its attributes)
// if it is a tbf at the root of interface index.
func rootTBF(msg []byte, index int) int64 {
	if len(msg) < tcmsgSize {
		return 0
	}
	if int(int32(binary.NativeEndian.Uint32(msg[4:]))) != index || binary.NativeEndian.Uint32(msg[12:]) != tcRoot {
		return 0
	}
	var kind string
	var opts []byte
	for a := range attrs(msg[tcmsgSize:]) {
		switch a.typ {
		case unix.TCA_KIND:
			kind = strings.TrimRight(string(a.data), "\x00")
		case unix.TCA_OPTIONS:
			opts = a.data
		}
	}
	if kind != "tbf" {
		return 0
	}
	var rate int64
	for a := range attrs(opts) {
		switch {
		case a.typ == tbfParms && len(a.data) >= qoptRateAt+4 && rate == 0:
			rate = int64(binary.NativeEndian.Uint32(a.data[qoptRateAt:]))
		case a.typ == tbfRate64 && len(a.data) >= 8:
			if r := binary.NativeEndian.Uint64(a.data); r > 0 && r < 1<<62 {
				rate = int64(r)
			}
		}
	}
	return rate
}

type rtattr struct {
	typ  uint16
	data []byte
}

// attrs walks a run of netlink attributes, stopping at the first whose
// length does not fit.
func attrs(b []byte) func(func(rtattr) bool) {
	return func(yield func(rtattr) bool) {
		for len(b) >= 4 {
			l := int(binary.NativeEndian.Uint16(b[0:]))
			if l < 4 || l > len(b) {
				return
			}
			if !yield(rtattr{typ: binary.NativeEndian.Uint16(b[2:]) & 0x3FFF, data: b[4:l]}) {
				return
			}
			b = b[min(nlAlign(l), len(b)):]
		}
	}
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

package relay

import (
	"encoding/binary"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// qdiscMsg is one RTM_NEWQDISC message as the kernel dumps it: a qdisc of
// kind on interface index under parent, with options opts.
func qdiscMsg(index int, parent uint32, kind string, opts []byte) []byte {
	le := binary.NativeEndian
	attr := func(typ uint16, data []byte) []byte {
		b := make([]byte, nlAlign(4+len(data)))
		le.PutUint16(b[0:], uint16(4+len(data)))
		le.PutUint16(b[2:], typ)
		copy(b[4:], data)
		return b
	}
	tcm := make([]byte, tcmsgSize)
	le.PutUint32(tcm[4:], uint32(index))
	le.PutUint32(tcm[12:], parent)
	body := append(tcm, attr(unix.TCA_KIND, append([]byte(kind), 0))...)
	body = append(body, attr(unix.TCA_OPTIONS|0x8000, opts)...) // NLA_F_NESTED, as the kernel sets it
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	le.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	le.PutUint16(msg[4:], unix.RTM_NEWQDISC)
	return append(msg, body...)
}

// tbfOpts are a tbf's options: its tc_tbf_qopt at rate (u32), and
// TCA_TBF_RATE64 when rate64 is set.
func tbfOpts(rate uint32, rate64 uint64) []byte {
	le := binary.NativeEndian
	qopt := make([]byte, 36)
	le.PutUint32(qopt[qoptRateAt:], rate)
	b := make([]byte, 4, 4+36+12)
	le.PutUint16(b[0:], 4+36)
	le.PutUint16(b[2:], tbfParms)
	b = append(b, qopt...)
	if rate64 > 0 {
		r := make([]byte, 12)
		le.PutUint16(r[0:], 12)
		le.PutUint16(r[2:], tbfRate64)
		le.PutUint64(r[4:], rate64)
		b = append(b, r...)
	}
	return b
}

func nlDone() []byte {
	b := make([]byte, unix.SizeofNlMsghdr+4)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.NLMSG_DONE)
	return b
}

// The rate of a root tbf is read from a qdisc dump; other interfaces'
// qdiscs, a tbf below the root and other kinds are not the link's rate.
func TestTBFInDump(t *testing.T) {
	dump := append(qdiscMsg(2, tcRoot, "tbf", tbfOpts(125_000, 0)), qdiscMsg(3, 0x10001, "tbf", tbfOpts(1_000, 0))...)
	dump = append(dump, qdiscMsg(3, tcRoot, "tbf", tbfOpts(500_000, 0))...)
	dump = append(dump, qdiscMsg(4, tcRoot, "fq_codel", nil)...)
	dump = append(dump, qdiscMsg(5, tcRoot, "tbf", tbfOpts(^uint32(0), 6_000_000_000))...)
	for _, tc := range []struct {
		index int
		want  int64
	}{
		{2, 125_000}, {3, 500_000}, {4, 0}, {5, 6_000_000_000}, {6, 0},
	} {
		done, rate := tbfInDump(dump, tc.index)
		if done || rate != tc.want {
			t.Errorf("interface %d: done %v, rate %d; want not done, rate %d", tc.index, done, rate, tc.want)
		}
		if done, rate := tbfInDump(append(dump, nlDone()...), tc.index); !done || rate != tc.want {
			t.Errorf("interface %d with NLMSG_DONE: done %v, rate %d; want done, rate %d", tc.index, done, rate, tc.want)
		}
	}
	// A datagram cut anywhere, or with lengths that overrun it, is read
	// as far as it holds and no further.
	for n := range len(dump) {
		tbfInDump(dump[:n], 3)
	}
	bad := append([]byte(nil), dump...)
	binary.NativeEndian.PutUint32(bad[0:], 1<<30)
	if done, rate := tbfInDump(bad, 2); !done || rate != 0 {
		t.Errorf("a message longer than its datagram: done %v, rate %d; want done, rate 0", done, rate)
	}
}

// Loopback has no link rate: flows on it are not split (the tests and
// the unshaped hop go as fast as the CPU lets them).
func TestLinkRateOfLoopbackIsUnknown(t *testing.T) {
	for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, nil} {
		if r := linkRate(ip); r != 0 {
			t.Errorf("linkRate(%v) = %d, want 0", ip, r)
		}
	}
}

package relay

import (
	"os"
	"syscall"
	"unsafe"
)

// blkZeroOut is Linux's BLKZEROOUT ioctl, _IO(0x12, 127).
const blkZeroOut = 0x127f

// deviceZeroer zeroes ranges of a block device with BLKZEROOUT, which
// needs them aligned to 512 bytes; it falls back to writing zeros.
func deviceZeroer(f *os.File) zeroer {
	write := writeZeros(f)
	return func(off, n int64) error {
		if off%512 == 0 && n%512 == 0 {
			r := [2]uint64{uint64(off), uint64(n)}
			if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), blkZeroOut, uintptr(unsafe.Pointer(&r))); errno == 0 {
				return nil
			}
		}
		return write(off, n)
	}
}

package relay

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// CheckWriteTarget refuses a --write target that is mounted, holds a
// mounted partition or is in use by a device mapper (LVM, RAID), or that
// is neither a block device nor a regular file that can be made: writing
// under a mounted filesystem corrupts it.
func CheckWriteTarget(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		const wOK, xOK = 0x2, 0x1 // access(2): may write, may enter
		if err := syscall.Access(filepath.Dir(path), wOK|xOK); err != nil {
			return fmt.Errorf("no such file, and it cannot be made in %s: %v", filepath.Dir(path), err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case st.Mode().IsRegular():
		if f, err := os.OpenFile(path, os.O_WRONLY, 0); err != nil {
			return fmt.Errorf("cannot write it: %v", err)
		} else {
			f.Close()
		}
		return nil
	case st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0:
		return errors.New("not a block device (such as /dev/sda) or an image file")
	}
	rdev := st.Sys().(*syscall.Stat_t).Rdev
	major, minor := (rdev>>8)&0xfff|(rdev>>32)&^0xfff, rdev&0xff|(rdev>>12)&^0xff
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", major, minor)
	devs := map[string]bool{fmt.Sprintf("%d:%d", major, minor): true}
	// Its partitions: sub-folders of its sysfs entry with a dev file.
	if entries, err := os.ReadDir(sys); err == nil {
		for _, e := range entries {
			if b, err := os.ReadFile(filepath.Join(sys, e.Name(), "dev")); err == nil {
				devs[strings.TrimSpace(string(b))] = true
			}
		}
	}
	for d := range devs {
		if holders, _ := os.ReadDir(fmt.Sprintf("/sys/dev/block/%s/holders", d)); len(holders) > 0 {
			return fmt.Errorf("in use by %s (device mapper: LVM, RAID or encryption); stop that first", holders[0].Name())
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil // no mount table to check against
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// mount-id parent-id major:minor root mount-point ...
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && devs[fields[2]] {
			return fmt.Errorf("it (or a partition of it) is mounted at %s: unmount it first, or boot from another disk (a live USB stick) to reimage this one", fields[4])
		}
	}
	return nil
}

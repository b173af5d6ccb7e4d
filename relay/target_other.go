//go:build !linux

package relay

import (
	"errors"
	"os"
)

// deviceZeroer writes zeros: only Linux has BLKZEROOUT.
func deviceZeroer(f *os.File) zeroer { return writeZeros(f) }

// CheckWriteTarget: writing a disk in place is for Linux receivers only.
func CheckWriteTarget(string) error {
	return errors.New("writing a disk image in place is supported on Linux only; copy the package or run a command with it instead")
}

//go:build unix

package relay

import (
	"os"
	"syscall"
)

// tryLock takes an exclusive flock on f without waiting; it fails if
// another process holds one.
func tryLock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

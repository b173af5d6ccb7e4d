//go:build unix

package install

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockDestination takes the extraction lock of dir, which root holds open:
// a flock on the directory itself, released when the returned func closes
// it. It fails with errDestinationBusy when another extraction holds it.
func lockDestination(root *os.Root, dir string) (unlock func(), err error) {
	lock, err := root.Open(".")
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errDestinationBusy
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { lock.Close() }, nil
}

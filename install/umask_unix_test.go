//go:build unix

package install

import (
	"syscall"
	"testing"
)

// setUmask sets the process umask to mask until t ends.
func setUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

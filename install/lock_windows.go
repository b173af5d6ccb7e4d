//go:build windows

package install

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/windows"
)

// lockDestination takes the extraction lock of dir, which root holds open.
// Windows cannot lock a directory handle, so the lock is a named mutex
// that exists while the returned func has not closed it: its name is the
// directory's identity (volume serial and file index, as an inode on Unix),
// in the Global namespace so that a service and a user's join see the same
// one. It fails with errDestinationBusy when another extraction holds it.
func lockDestination(root *os.Root, dir string) (unlock func(), err error) {
	f, err := root.Open(".")
	if err != nil {
		return nil, err
	}
	var fi syscall.ByHandleFileInformation
	err = syscall.GetFileInformationByHandle(syscall.Handle(f.Fd()), &fi)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	name, err := windows.UTF16PtrFromString(fmt.Sprintf(`Global\treecast-extract-%08x-%08x%08x`, fi.VolumeSerialNumber, fi.FileIndexHigh, fi.FileIndexLow))
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	h, err := windows.CreateMutex(nil, false, name)
	switch {
	case errors.Is(err, windows.ERROR_ALREADY_EXISTS):
		windows.CloseHandle(h)
		return nil, errDestinationBusy
	case errors.Is(err, windows.ERROR_ACCESS_DENIED): // it exists, made by another user (a service)
		return nil, errDestinationBusy
	case err != nil:
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { windows.CloseHandle(h) }, nil
}

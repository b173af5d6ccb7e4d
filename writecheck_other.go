//go:build !linux

package main

import "errors"

// checkWriteTarget: writing disks is for Linux receivers only here.
func checkWriteTarget(string) error {
	return errors.New("--write is supported on Linux only; use --to or --exec on this system")
}

//go:build unix

package install

import (
	"context"
	"os/exec"
	"syscall"
)

// shellCommand returns `/bin/sh -c command`, started in a process group of
// its own, which is killed whole with SIGKILL when ctx ends.
func shellCommand(ctx context.Context, command string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group id is the shell's pid (Setpgid with Pgid 0). It is not
		// reused before Wait reaps the shell, and Cancel runs before that.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return cmd
}

// killSignal names the signal that killed the command ("killed"), or "" if
// it exited.
func killSignal(e *exec.ExitError) string {
	if ws, ok := e.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal().String()
	}
	return ""
}

//go:build windows

package install

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// shellCommand returns command run by cmd.exe (%ComSpec%) as
// `cmd.exe /d /s /c "command"`: /s makes cmd take everything between the
// outer quotes literally, so the command reads as it would typed at a
// prompt (%TREECAST_FILE% for the environment). When ctx ends, the
// command's whole process tree is ended with taskkill /t /f, the nearest
// Windows has to killing a process group; if that fails, the shell alone
// is killed.
func shellCommand(ctx context.Context, command string) *exec.Cmd {
	shell := os.Getenv("ComSpec")
	if shell == "" {
		shell = filepath.Join(systemRoot(), "System32", "cmd.exe")
	}
	cmd := exec.CommandContext(ctx, shell)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		CmdLine:       syscall.EscapeArg(shell) + ` /d /s /c "` + command + `"`,
		CreationFlags: syscall.CREATE_NEW_PROCESS_GROUP,
	}
	cmd.Cancel = func() error {
		kill := exec.Command(filepath.Join(systemRoot(), "System32", "taskkill.exe"), "/t", "/f", "/pid", strconv.Itoa(cmd.Process.Pid))
		if kill.Run() != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	return cmd
}

func systemRoot() string {
	if d := os.Getenv("SystemRoot"); d != "" {
		return d
	}
	return `C:\Windows`
}

// killSignal is always "": Windows has no signals; a killed command exits
// with status 1.
func killSignal(*exec.ExitError) string { return "" }

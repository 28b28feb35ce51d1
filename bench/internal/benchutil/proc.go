package benchutil

import (
	"bytes"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ChildCPU is the CPU time of all waited-for descendants so far.
func ChildCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_CHILDREN, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TailBuffer keeps the last Max bytes written to it.
type TailBuffer struct {
	bytes.Buffer
	Max int
}

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.Buffer.Write(p)
	if over := t.Len() - t.Max; over > 0 {
		t.Next(over)
	}
	return len(p), nil
}

// NewTail returns a TailBuffer keeping the last 4 KiB: enough of a failed
// command's output to say why.
func NewTail() *TailBuffer { return &TailBuffer{Max: 4096} }

// Timed runs cmd to completion and returns its wall and CPU time (the
// CPU time includes the processes it waited for, e.g. coffer's QEMU).
// The child gets its own process group, so a Ctrl-C reaches only the
// bench, which then stops the child with sig (SIGKILL after a grace time),
// and it is killed if the bench dies (parent-death signal). Make cmd with
// exec.CommandContext: the context's end stops it through sig.
func Timed(cmd *exec.Cmd, sig syscall.Signal) (wall, cpu time.Duration, err error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(sig) }
	cmd.WaitDelay = 20 * time.Second
	// The parent-death signal fires when the forking thread exits: keep
	// this goroutine on its thread until the child is reaped.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := ChildCPU()
	t0 := time.Now()
	err = cmd.Run()
	wall = time.Since(t0)
	cpu = ChildCPU() - cpu0
	return wall, cpu, err
}

// CmdError wraps a failed command's error with the tail of its output.
func CmdError(what string, err error, out *TailBuffer) error {
	msg := strings.TrimSpace(out.String())
	if msg == "" {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %s", what, err, msg)
}

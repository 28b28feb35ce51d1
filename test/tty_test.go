//go:build integration

package test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a new pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

// startOnPTY starts cmd as a session leader with slave as its controlling
// terminal and stdio, collects what it writes, and returns the output and
// a function that types into the terminal.
func startOnPTY(t *testing.T, cmd *exec.Cmd, master, slave *os.File) (*syncBuffer, func(string)) {
	t.Helper()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	out := &syncBuffer{}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	write := func(s string) {
		if _, err := master.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	return out, write
}

func TestTTYSession(t *testing.T) {
	t.Parallel()
	master, slave := openPTY(t)
	defer master.Close()
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 100}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cofferBin, "run", "--rm", "-it", "--rootfs", busybox, "--", "sh")
	out, write := startOnPTY(t, cmd, master, slave)
	// The shell's prompt shows the guest is interactive.
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(out.String(), "# ") })
	write("tty; stty size; echo MARK1\r")
	waitFor(t, 20*time.Second, func() bool { return strings.Count(out.String(), "MARK1") >= 2 })
	// Resizing the host terminal reaches the container's terminal.
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 120}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	write("stty size; echo MARK2\r")
	waitFor(t, 20*time.Second, func() bool { return strings.Count(out.String(), "MARK2") >= 2 })
	// ^C is delivered to the foreground job through the terminal.
	write("sleep 100\r")
	time.Sleep(time.Second)
	write("\x03")
	write("echo after-int; exit 5\r")
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	s := out.String()
	t.Logf("terminal transcript: %q", s)
	if code != 5 {
		t.Fatalf("exit %d, want 5", code)
	}
	for _, want := range []string{"/dev/pts/0", "40 100", "50 120", "after-int"} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q", want)
		}
	}
}

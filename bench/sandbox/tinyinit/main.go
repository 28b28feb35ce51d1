// Command tinyinit is the whole /init of the sandbox benchmark's trivial
// initrd: started by the kernel as PID 1 it prints a marker with the guest
// uptime on the console and powers the VM off at once. The benchmark
// builds it statically (CGO_ENABLED=0) and boots it to measure the raw
// QEMU + kernel boot floor. It imports nothing but the runtime's own
// packages and golang.org/x/sys/unix, to stay small.
package main

import (
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Marker starts the console line; bench/sandbox looks for it (keep the two
// in sync).
const Marker = "coffer-bench-init: powering off, uptime="

func main() {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	ns := strconv.FormatInt(1_000_000_000+ts.Nsec, 10)[1:] // zero-padded to 9 digits
	line := Marker + strconv.FormatInt(ts.Sec, 10) + "." + ns + "\n"
	if _, err := os.Stdout.WriteString(line); err != nil {
		if con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
			_, _ = con.WriteString(line)
			_ = con.Close()
		}
	}
	if os.Getenv("benchidle") != "" {
		for {
			time.Sleep(time.Hour)
		}
	}
	if os.Getpid() != 1 {
		// Not an init: never try to power off a real machine.
		os.Exit(0)
	}
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// PID 1 must never exit (the kernel would panic).
	for {
		time.Sleep(time.Hour)
	}
}

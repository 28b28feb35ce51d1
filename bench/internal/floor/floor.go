// Package floor owns the raw-VM boot floor that the sandbox and containerd
// benchmarks measure coffer against: QEMU with coffer's machine settings
// (machine type, CPU model, memory, vCPUs, accelerator), direct kernel
// boot of the guest image's kernel with its command line, no devices but
// the serial console, and a trivial initrd whose /init (tinyinit) prints
// the guest uptime and powers off.
package floor

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/hypervisor/qemu"
)

// InitMarker starts the line the trivial init prints on the console; a
// boot counts only when it is there, so that a kernel panic (which also
// ends QEMU, through panic=-1 and -no-reboot) is never timed as a boot.
const InitMarker = "coffer-bench-init: powering off, uptime="

// TinyInitPkg is the trivial init's import path.
const TinyInitPkg = "github.com/coffer-project/coffer/bench/sandbox/tinyinit"

// BuildTinyInit builds the trivial init statically into dir. It needs the
// Go toolchain and a working directory inside the coffer module; the
// benchmarks' run.sh build it themselves and pass -init instead.
func BuildTinyInit(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "tinyinit")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, TinyInitPkg)
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the trivial init (%s): %w: %s (run from the repository, or pass -init with a static build of it)",
			TinyInitPkg, err, strings.TrimSpace(string(b)))
	}
	return out, nil
}

// CheckStatic makes sure a binary needs no C library: it runs as /init of
// an initrd, or inside a rootfs, that has none.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked, but it must be static: it runs where there is no C library (build Go programs with CGO_ENABLED=0)", path)
		}
	}
	return nil
}

// ParseInitMarker finds the marker in a console log and returns the guest
// uptime it reports.
func ParseInitMarker(console string) (time.Duration, bool) {
	i := strings.Index(console, InitMarker)
	if i < 0 {
		return 0, false
	}
	rest := console[i+len(InitMarker):]
	if j := strings.IndexAny(rest, "\r\n"); j >= 0 {
		rest = rest[:j]
	}
	sec, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(sec * float64(time.Second)), true
}

// WriteInitrd writes a newc initrd at path holding /dev/console and
// initBin as /init (it must be static: CheckStatic).
func WriteInitrd(path, initBin string) error {
	if err := CheckStatic(initBin); err != nil {
		return err
	}
	init, err := os.ReadFile(initBin)
	if err != nil {
		return err
	}
	entries := []cpioEntry{
		{name: "dev", mode: modeDir | 0o755},
		{name: "dev/console", mode: modeChar | 0o600, rdevMajor: 5, rdevMinor: 1},
		{name: "init", mode: modeReg | 0o755, data: init},
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := writeCPIO(w, entries); err != nil {
		f.Close()
		return fmt.Errorf("write the trivial initrd: %w", err)
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		return fmt.Errorf("write the trivial initrd: %w", err)
	}
	return nil
}

// VM is what the floor boots: the same QEMU, accelerator, kernel and
// command line as coffer's pods.
type VM struct {
	QEMU    string
	Accel   hypervisor.Accel
	Kernel  string
	Cmdline string
}

// Args is the QEMU command line of the floor: the driver's machine, CPU
// model, memory, vCPUs, accelerator, kernel and command line, with no
// devices beyond the serial console (written to console).
func (v VM) Args(initrd, console string) []string {
	return []string{
		"-name", "guest=coffer-bench-raw",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", hypervisor.DefaultMachineType,
		"-accel", qemu.AccelArg(v.Accel, hypervisor.DefaultTCGCacheMiB),
		"-cpu", hypervisor.CPUModel(v.Accel),
		"-m", strconv.Itoa(hypervisor.DefaultMemoryMiB),
		"-smp", strconv.Itoa(hypervisor.DefaultVCPUs),
		"-kernel", v.Kernel,
		"-initrd", initrd,
		"-append", v.Cmdline,
		"-chardev", "file,id=con,path=" + strings.ReplaceAll(console, ",", ",,") + ",append=on",
		"-serial", "chardev:con",
	}
}

// Result is one timed boot.
type Result struct {
	Wall   time.Duration // QEMU's exec until its exit
	CPU    time.Duration // QEMU's user + system time
	Uptime time.Duration // the guest's uptime when the trivial init ran
}

// Boot boots the floor once with initrd, in a console dir made under tmp,
// and times it from QEMU's exec to its exit.
func (v VM) Boot(ctx context.Context, tmp, initrd string) (Result, error) {
	dir, err := os.MkdirTemp(tmp, "raw-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	console := filepath.Join(dir, "console.log")
	out := benchutil.NewTail()
	cmd := exec.CommandContext(ctx, v.QEMU, v.Args(initrd, console)...)
	cmd.Stdout, cmd.Stderr = out, out
	wall, cpu, err := benchutil.Timed(cmd, syscall.SIGKILL)
	if err != nil {
		return Result{}, benchutil.CmdError("raw qemu boot", err, out)
	}
	con, _ := os.ReadFile(console)
	up, ok := ParseInitMarker(string(con))
	if !ok {
		return Result{}, fmt.Errorf("raw qemu boot ended without the trivial init's marker (kernel panic?); console tail: %q", lastBytes(string(con), 600))
	}
	return Result{Wall: wall, CPU: cpu, Uptime: up}, nil
}

// lastBytes is the end of s, at most n bytes.
func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

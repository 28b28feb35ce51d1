package hypervisor

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// EnvAccel is the environment variable that forces the accelerator
// ("kvm" or "tcg") when the caller did not choose one.
const EnvAccel = "COFFER_ACCEL"

// DefaultProbeTimeout bounds the KVM probe boot. A working KVM boots the
// kernel to its root-mount panic in well under a second.
const DefaultProbeTimeout = 10 * time.Second

// DetectOptions configures DetectAccel. Only Kernel and CacheDir matter in
// normal use; the path fields exist so tests can point at fake files.
type DetectOptions struct {
	// Requested is the caller's explicit choice (Config.Accel). Anything but
	// AccelAuto is returned as-is without checks.
	Requested Accel
	// Kernel is the guest kernel booted by the KVM probe. Empty skips the
	// probe boot, leaving the decision to the cheap checks.
	Kernel string
	// QEMUPath is the QEMU binary for the probe; DefaultQEMU when empty.
	QEMUPath string
	// CacheDir holds the probe result cache; empty disables caching.
	CacheDir string
	// ProbeTimeout bounds the probe boot; DefaultProbeTimeout when zero.
	ProbeTimeout time.Duration
	// Getenv reads the environment; os.Getenv when nil.
	Getenv func(string) string
	// CPUInfoPath is /proc/cpuinfo when empty.
	CPUInfoPath string
	// KVMDevice is /dev/kvm when empty.
	KVMDevice string
	// Logger receives debug details; slog.Default() when nil.
	Logger *slog.Logger
}

func (o *DetectOptions) defaults() {
	if o.QEMUPath == "" {
		o.QEMUPath = DefaultQEMU
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.CPUInfoPath == "" {
		o.CPUInfoPath = "/proc/cpuinfo"
	}
	if o.KVMDevice == "" {
		o.KVMDevice = "/dev/kvm"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// DetectAccel decides whether VMs run under KVM or TCG and says why.
//
// Order: opts.Requested, then $COFFER_ACCEL, then detection. Detection picks
// KVM only when the CPU flags show vmx or svm, /dev/kvm opens and creates a
// VM, and (when opts.Kernel is set) a probe VM boots that kernel under KVM:
// with "panic=-1 init=/coffer-probe-none", no initrd and -no-reboot the
// kernel prints its banner, panics on the missing root file system and QEMU
// exits. The probe result is cached in opts.CacheDir.
//
// The error is non-nil only for an invalid override, a cancelled ctx, or a
// QEMU binary that cannot run; every detection failure is a TCG answer with
// the failure as the reason.
func DetectAccel(ctx context.Context, opts DetectOptions) (Accel, string, error) {
	opts.defaults()
	switch opts.Requested {
	case AccelKVM, AccelTCG:
		return opts.Requested, fmt.Sprintf("%s: requested by the caller", opts.Requested), nil
	case AccelAuto:
	default:
		return AccelAuto, "", fmt.Errorf("detect accelerator: unknown requested accelerator %q: use kvm, tcg or auto", opts.Requested)
	}
	if v := opts.Getenv(EnvAccel); v != "" {
		a, err := ParseAccel(v)
		if err != nil {
			return AccelAuto, "", fmt.Errorf("detect accelerator: %s=%q: %w (or unset it for auto-detection)", EnvAccel, v, err)
		}
		if a != AccelAuto {
			return a, fmt.Sprintf("%s: forced by %s=%s", a, EnvAccel, v), nil
		}
	}

	flag, err := cpuVirtFlag(opts.CPUInfoPath)
	if err != nil {
		return AccelTCG, fmt.Sprintf("tcg: cannot read CPU flags: %v", err), nil
	}
	if flag == "" {
		return AccelTCG, fmt.Sprintf("tcg: host CPU has no vmx/svm flag in %s (hardware virtualisation is not exposed to this machine; on a cloud VM enable nested virtualisation)", opts.CPUInfoPath), nil
	}
	if reason := kvmDeviceWorks(opts.KVMDevice); reason != "" {
		return AccelTCG, "tcg: " + reason, nil
	}
	if opts.Kernel == "" {
		return AccelKVM, fmt.Sprintf("kvm: host CPU has %s and %s creates VMs (no kernel given, probe boot skipped)", flag, opts.KVMDevice), nil
	}

	key, err := probeKey(ctx, opts.QEMUPath, opts.Kernel)
	if err != nil {
		return AccelAuto, "", err
	}
	cacheFile := ""
	if opts.CacheDir != "" {
		cacheFile = filepath.Join(opts.CacheDir, "accel-probe-"+key.id()+".json")
		if rec, ok := readProbeCache(cacheFile, key); ok {
			opts.Logger.Debug("accelerator probe result from cache", "file", cacheFile, "accel", rec.Accel)
			return rec.Accel, rec.Reason + " (cached in " + cacheFile + ")", nil
		}
	}

	start := time.Now()
	perr := ProbeBoot(ctx, opts.QEMUPath, opts.Kernel, AccelKVM, opts.ProbeTimeout)
	if ctx.Err() != nil {
		return AccelAuto, "", fmt.Errorf("detect accelerator: probe boot interrupted: %w", ctx.Err())
	}
	var rec probeRecord
	if perr != nil {
		rec = probeRecord{Accel: AccelTCG, Reason: fmt.Sprintf("tcg: host CPU has %s and %s creates VMs, but a probe boot under KVM failed: %v", flag, opts.KVMDevice, perr)}
	} else {
		rec = probeRecord{Accel: AccelKVM, Reason: fmt.Sprintf("kvm: host CPU has %s, %s works and a probe boot of %s under KVM took %s", flag, opts.KVMDevice, filepath.Base(opts.Kernel), time.Since(start).Round(time.Millisecond))}
	}
	opts.Logger.Debug("accelerator probe boot", "accel", rec.Accel, "reason", rec.Reason, "took", time.Since(start))
	if cacheFile != "" {
		rec.Key = key
		rec.ProbedAt = time.Now().UTC()
		if err := writeProbeCache(cacheFile, rec); err != nil {
			opts.Logger.Warn("cannot cache accelerator probe result; it will run again next time", "file", cacheFile, "err", err)
		}
	}
	return rec.Accel, rec.Reason, nil
}

// cpuVirtFlag returns "vmx" or "svm" when the CPU flags in a cpuinfo file
// contain one of them, "" otherwise.
func cpuVirtFlag(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) != "flags" {
			continue
		}
		for _, fl := range strings.Fields(value) {
			if fl == "vmx" || fl == "svm" {
				return fl, nil
			}
		}
	}
	return "", sc.Err()
}

// KVM ioctls (linux/kvm.h): _IO(KVMIO=0xAE, nr).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

// kvmDeviceWorks opens the KVM device and creates (and drops) a VM. It
// returns "" when that works, otherwise why not, with a hint.
func kvmDeviceWorks(dev string) string {
	f, err := os.OpenFile(dev, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		hint := ""
		switch {
		case errors.Is(err, os.ErrNotExist):
			hint = " (load the kvm_intel or kvm_amd module)"
		case errors.Is(err, os.ErrPermission):
			hint = " (add this user to the kvm group or run as root)"
		}
		return fmt.Sprintf("cannot open %s: %v%s", dev, err, hint)
	}
	defer f.Close()
	fd := int(f.Fd())
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil {
		return fmt.Sprintf("%s: KVM_GET_API_VERSION failed: %v (not a KVM device?)", dev, err)
	}
	if v != kvmAPIVersion {
		return fmt.Sprintf("%s: KVM API version %d, want %d", dev, v, kvmAPIVersion)
	}
	vm, err := unix.IoctlRetInt(fd, kvmCreateVM)
	if err != nil {
		return fmt.Sprintf("%s: KVM_CREATE_VM failed: %v (another hypervisor may own VT-x/AMD-V)", dev, err)
	}
	unix.Close(vm)
	return ""
}

// probeBanner is printed by every Linux kernel early in boot.
const probeBanner = "Linux version"

// ProbeBoot boots kernel under accel with no initrd and
// "console=ttyS0 panic=-1 init=/coffer-probe-none", expecting the kernel to
// print its banner and end QEMU by itself (root-mount panic → reboot →
// -no-reboot exit) within timeout. It returns nil when that happened, or an
// error quoting QEMU's and the guest's last output.
func ProbeBoot(ctx context.Context, qemuPath, kernel string, accel Accel, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cpu := CPUModel(accel)
	cmd := exec.CommandContext(ctx, qemuPath,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "q35,accel="+string(accel), "-cpu", cpu, "-m", "128", "-smp", "1",
		"-kernel", kernel, "-append", "console=ttyS0 panic=-1 init=/coffer-probe-none",
		"-serial", "stdio")
	var console, stderr limitedBuffer
	console.max, stderr.max = 256*1024, 64*1024
	cmd.Stdout, cmd.Stderr = &console, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second

	// Pdeathsig fires when the forking thread exits: keep this goroutine on
	// its thread until the child has been reaped.
	runtime.LockOSThread()
	err := cmd.Run()
	runtime.UnlockOSThread()

	out := oneLine(lastLines(stderr.String(), 3))
	if ctx.Err() != nil {
		return fmt.Errorf("qemu did not exit within %s (guest console: %q, qemu: %q)", timeout, lastLines(console.String(), 3), out)
	}
	if err != nil {
		if out == "" {
			out = oneLine(lastLines(console.String(), 3))
		}
		return fmt.Errorf("qemu exited (%v): %s", err, out)
	}
	if !strings.Contains(console.String(), probeBanner) {
		return fmt.Errorf("qemu exited but the guest printed no kernel banner (console: %q)", lastLines(console.String(), 3))
	}
	return nil
}

type probeKeyT struct {
	KernelSHA256 string `json:"kernel_sha256"`
	QEMUVersion  string `json:"qemu_version"`
	HostRelease  string `json:"host_release"`
}

func (k probeKeyT) id() string {
	h := sha256.Sum256([]byte(k.KernelSHA256 + "\n" + k.QEMUVersion + "\n" + k.HostRelease))
	return hex.EncodeToString(h[:8])
}

type probeRecord struct {
	Key      probeKeyT `json:"key"`
	Accel    Accel     `json:"accel"`
	Reason   string    `json:"reason"`
	ProbedAt time.Time `json:"probed_at"`
}

func probeKey(ctx context.Context, qemuPath, kernel string) (probeKeyT, error) {
	f, err := os.Open(kernel)
	if err != nil {
		return probeKeyT{}, fmt.Errorf("detect accelerator: open guest kernel for the KVM probe: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return probeKeyT{}, fmt.Errorf("detect accelerator: hash guest kernel %s: %w", kernel, err)
	}
	out, err := exec.CommandContext(ctx, qemuPath, "--version").Output()
	if err != nil {
		return probeKeyT{}, fmt.Errorf("detect accelerator: run %s --version: %w (install qemu-system-x86 or set the QEMU path)", qemuPath, err)
	}
	ver, _, _ := strings.Cut(string(out), "\n")
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	return probeKeyT{
		KernelSHA256: hex.EncodeToString(h.Sum(nil)),
		QEMUVersion:  strings.TrimSpace(ver),
		HostRelease:  unix.ByteSliceToString(uts.Release[:]),
	}, nil
}

func readProbeCache(file string, key probeKeyT) (probeRecord, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return probeRecord{}, false
	}
	var rec probeRecord
	if json.Unmarshal(b, &rec) != nil || rec.Key != key {
		return probeRecord{}, false
	}
	if rec.Accel != AccelKVM && rec.Accel != AccelTCG {
		return probeRecord{}, false
	}
	return rec, true
}

func writeProbeCache(file string, rec probeRecord) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".accel-probe-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// limitedBuffer keeps at most max bytes, dropping the oldest.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.buf.Write(p)
	if over := l.buf.Len() - l.max; over > 0 {
		l.buf.Next(over)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return l.buf.String() }

// lastLines returns the last n non-empty lines of s, "\r" removed.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r", ""), "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			keep = append(keep, lines[i])
		}
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	return strings.Join(keep, "\n")
}

// oneLine joins lines with " | " so multi-line tool output fits in a reason
// string or an error message.
func oneLine(s string) string {
	return strings.Join(strings.Split(strings.TrimSpace(s), "\n"), " | ")
}

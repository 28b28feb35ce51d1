package hypervisor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

func testKernel(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM under QEMU; skipped with -short")
	}
	k := os.Getenv("COFFER_TEST_KERNEL")
	if k == "" {
		k = "/tmp/k/x/boot/vmlinuz-6.1.0-56-cloud-amd64"
	}
	if _, err := os.Stat(k); err != nil {
		t.Skipf("no guest kernel at %s (set COFFER_TEST_KERNEL to a bzImage/vmlinuz): %v", k, err)
	}
	if _, err := exec.LookPath(DefaultQEMU); err != nil {
		t.Skipf("%s not installed (apt-get install qemu-system-x86): %v", DefaultQEMU, err)
	}
	return k
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDetectAccelOverrides(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		requested Accel
		env       string
		want      Accel
		reason    string
		wantErr   string
	}{
		{name: "caller kvm", requested: AccelKVM, env: "tcg", want: AccelKVM, reason: "requested by the caller"},
		{name: "caller tcg", requested: AccelTCG, want: AccelTCG, reason: "requested by the caller"},
		{name: "env kvm", env: "kvm", want: AccelKVM, reason: "COFFER_ACCEL=kvm"},
		{name: "env TCG", env: " TCG ", want: AccelTCG, reason: "COFFER_ACCEL"},
		{name: "env bad", env: "xen", wantErr: "COFFER_ACCEL=\"xen\""},
		{name: "caller bad", requested: "hvf", wantErr: "unknown requested accelerator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, reason, err := DetectAccel(ctx, DetectOptions{
				Requested:   tc.requested,
				Getenv:      func(k string) string { return map[string]string{EnvAccel: tc.env}[k] },
				CPUInfoPath: "/nonexistent/cpuinfo", // must not be consulted
			})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || a != tc.want || !strings.Contains(reason, tc.reason) || !strings.HasPrefix(reason, string(tc.want)+":") {
				t.Fatalf("DetectAccel = %q, %q, %v; want %q with reason mentioning %q", a, reason, err, tc.want, tc.reason)
			}
		})
	}
}

// TestDetectAccelThisHost checks the real decision on this machine. On a host
// without vmx/svm it must be TCG and say so.
func TestDetectAccelThisHost(t *testing.T) {
	flag, err := cpuVirtFlag("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	a, reason, err := DetectAccel(context.Background(), DetectOptions{Getenv: noEnv, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("DetectAccel: %s (%s)", a, reason)
	if flag == "" {
		if a != AccelTCG || !strings.Contains(reason, "vmx/svm") {
			t.Fatalf("host has no vmx/svm but DetectAccel = %q, %q", a, reason)
		}
	}
}

func TestDetectAccelCheapChecks(t *testing.T) {
	dir := t.TempDir()
	noVirt := writeFile(t, dir, "cpuinfo-novirt", "processor\t: 0\nflags\t\t: fpu vme de pse sse2 hypervisor\n\nprocessor\t: 1\nflags\t\t: fpu sse2\n")
	vmx := writeFile(t, dir, "cpuinfo-vmx", "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n")
	notKVM := writeFile(t, dir, "not-kvm", "")
	ctx := context.Background()

	a, reason, err := DetectAccel(ctx, DetectOptions{Getenv: noEnv, CPUInfoPath: noVirt})
	if err != nil || a != AccelTCG || !strings.Contains(reason, "no vmx/svm flag") {
		t.Errorf("no flags: %q %q %v", a, reason, err)
	}
	a, reason, err = DetectAccel(ctx, DetectOptions{Getenv: noEnv, CPUInfoPath: vmx, KVMDevice: filepath.Join(dir, "missing-kvm")})
	if err != nil || a != AccelTCG || !strings.Contains(reason, "cannot open") || !strings.Contains(reason, "kvm_intel") {
		t.Errorf("missing /dev/kvm: %q %q %v", a, reason, err)
	}
	a, reason, err = DetectAccel(ctx, DetectOptions{Getenv: noEnv, CPUInfoPath: vmx, KVMDevice: notKVM})
	if err != nil || a != AccelTCG || !strings.Contains(reason, "KVM_GET_API_VERSION") {
		t.Errorf("not a kvm device: %q %q %v", a, reason, err)
	}
	a, reason, err = DetectAccel(ctx, DetectOptions{Getenv: noEnv, CPUInfoPath: filepath.Join(dir, "nope")})
	if err != nil || a != AccelTCG || !strings.Contains(reason, "cannot read CPU flags") {
		t.Errorf("unreadable cpuinfo: %q %q %v", a, reason, err)
	}
}

// TestDetectAccelProbeAndCache pretends the CPU has vmx so the real /dev/kvm
// checks and the probe boot run. Whatever the probe decides, the second call
// must come from the cache and agree.
func TestDetectAccelProbeAndCache(t *testing.T) {
	kernel := testKernel(t)
	if reason := kvmDeviceWorks("/dev/kvm"); reason != "" {
		t.Skipf("the probe boot runs only after /dev/kvm works, and here: %s", reason)
	}
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	vmx := writeFile(t, dir, "cpuinfo-vmx", "flags\t\t: fpu vmx\n")
	opts := DetectOptions{Getenv: noEnv, CPUInfoPath: vmx, Kernel: kernel, CacheDir: cache}
	ctx := context.Background()

	start := time.Now()
	a1, r1, err := DetectAccel(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probe (%s): %s %s", time.Since(start).Round(time.Millisecond), a1, r1)
	if !strings.Contains(r1, "probe boot") {
		t.Errorf("reason %q does not mention the probe boot", r1)
	}
	files, _ := filepath.Glob(filepath.Join(cache, "accel-probe-*.json"))
	if len(files) != 1 {
		t.Fatalf("cache files = %v, want exactly one", files)
	}
	a2, r2, err := DetectAccel(ctx, opts)
	if err != nil || a2 != a1 || !strings.Contains(r2, "cached") {
		t.Fatalf("second call = %q %q %v, want %q from the cache", a2, r2, err, a1)
	}
	// A different kernel is a different cache key.
	other := filepath.Join(dir, "other-kernel")
	if err := os.WriteFile(other, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.Kernel = other
	a3, r3, err := DetectAccel(ctx, opts)
	if err != nil || a3 != AccelTCG || strings.Contains(r3, "cached") {
		t.Fatalf("bogus kernel = %q %q %v, want an uncached tcg answer", a3, r3, err)
	}
}

// TestProbeBootTCG checks the probe's success criterion with TCG, which works
// everywhere: the kernel prints its banner and QEMU exits by itself.
func TestProbeBootTCG(t *testing.T) {
	kernel := testKernel(t)
	start := time.Now()
	if err := ProbeBoot(context.Background(), DefaultQEMU, kernel, AccelTCG, 30*time.Second); err != nil {
		t.Fatalf("probe boot under TCG: %v", err)
	}
	t.Logf("TCG probe boot took %s", time.Since(start).Round(time.Millisecond))
	err := ProbeBoot(context.Background(), DefaultQEMU, "/nonexistent/vmlinuz", AccelTCG, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/vmlinuz") {
		t.Fatalf("probe of a missing kernel: %v, want an error naming it", err)
	}
}

func TestParseAccel(t *testing.T) {
	for in, want := range map[string]Accel{"": AccelAuto, "auto": AccelAuto, "KVM": AccelKVM, "tcg": AccelTCG} {
		if got, err := ParseAccel(in); err != nil || got != want {
			t.Errorf("ParseAccel(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseAccel("whpx"); err == nil {
		t.Error("ParseAccel(whpx) succeeded")
	}
}

func TestConfigDefaultsAndValidate(t *testing.T) {
	c := Config{StateDir: "/run/coffer/vm1", Kernel: "/k", Disks: []Disk{{Serial: "root", Path: "/r"}}}.WithDefaults()
	if c.ID != "vm1" || c.QEMUPath != DefaultQEMU || c.MemoryMiB != 256 || c.VCPUs != 1 || c.MachineType != "q35" ||
		c.ConsoleLog != "/run/coffer/vm1/console.log" || c.Disks[0].Format != "raw" || c.Disks[0].Cache != "writeback" {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]Config{
		"StateDir is empty":   {Kernel: "/k"},
		"not absolute":        {StateDir: "rel", Kernel: "/k"},
		"Kernel is empty":     {StateDir: "/s"},
		"at most 20 bytes":    {StateDir: "/s", Kernel: "/k", Disks: []Disk{{Serial: strings.Repeat("x", 21), Path: "/d"}}},
		"used twice":          {StateDir: "/s", Kernel: "/k", Ports: []Port{{Name: "a", Kind: PortFile}, {Name: "a", Kind: PortFile}}},
		"has kind":            {StateDir: "/s", Kernel: "/k", Ports: []Port{{Name: "a", Kind: "pipe"}}},
		"unknown accelerator": {StateDir: "/s", Kernel: "/k", Accel: "xen"},
		"has no Serial":       {StateDir: "/s", Kernel: "/k", Disks: []Disk{{Path: "/d"}}},
		"/dev/virtio-ports":   {StateDir: "/s", Kernel: "/k", Ports: []Port{{Name: "a/b", Kind: PortFile}}},
		"MemoryMiB=8":         {StateDir: "/s", Kernel: "/k", MemoryMiB: 8},
		"use 0 to 32":         {StateDir: "/s", Kernel: "/k", HotplugSlots: 33},
		"needs MachineType q35, not \"microvm,acpi=off\"": {StateDir: "/s", Kernel: "/k", HotplugSlots: 1, MachineType: "microvm,acpi=off"},
		"needs MachineType q35, not \"pc\"":               {StateDir: "/s", Kernel: "/k", HotplugSlots: 1, MachineType: "pc"},
	}
	for want, cfg := range bad {
		err := cfg.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%+v) = %v, want mention of %q", cfg, err, want)
		}
	}
}

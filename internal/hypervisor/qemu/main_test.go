package qemu

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/hypervisor"
)

// The test guest: /init is a busybox shell script whose behaviour is chosen
// by the kernel command line parameter cofftest=<mode> (the kernel hands
// unknown name=value parameters to init as environment variables).
const (
	marker     = "COFFER-TEST-MARKER"
	testInitSh = `#!/bin/busybox sh
/bin/busybox echo "` + marker + ` mode=$cofftest"
case "$cofftest" in
sleep) while true; do /bin/busybox sleep 3600; done ;;
exit) exit 3 ;;
hotplug)
	# Load the virtio block stack (modules in this kernel), then report
	# every disk serial that appears or disappears.
	/bin/busybox mkdir -p /sys
	/bin/busybox mount -t sysfs sysfs /sys
	for m in ` + hotplugModules + `; do
		/bin/busybox insmod /mod/$m.ko || /bin/busybox echo "INSMOD-FAILED $m"
	done
	/bin/busybox echo "HOTPLUG-READY"
	seen=""
	while true; do
		now=""
		for f in /sys/block/*/serial; do
			[ -e "$f" ] || continue
			read s < "$f"
			now="$now $s"
			case " $seen " in *" $s "*) ;; *) /bin/busybox echo "SAW $s" ;; esac
		done
		for s in $seen; do
			case " $now " in *" $s "*) ;; *) /bin/busybox echo "GONE $s" ;; esac
		done
		seen="$now"
		/bin/busybox sleep 0.1
	done ;;
*) /bin/busybox poweroff -f ;;
esac
`
	defaultTestKernel = "/tmp/k/x/boot/vmlinuz-6.1.0-56-cloud-amd64"
	// hotplugModules is the virtio-blk stack in dependency order.
	hotplugModules = "virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk"
)

// Environment passed to the TestNoOrphanOnOwnerDeath helper process.
const (
	envHelperKernel = "COFFER_QEMU_HELPER_KERNEL"
	envHelperInitrd = "COFFER_QEMU_HELPER_INITRD"
)

// Set up by TestMain.
var (
	testKernel string
	testInitrd string
	skipReason string // non-empty: VM tests skip with this reason
	// noModules is non-empty when the guest kernel's virtio modules were
	// not found: the initrd then cannot see hot-plugged disks.
	noModules string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if initrd := os.Getenv(envHelperInitrd); initrd != "" {
		// TestNoOrphanOnOwnerDeath's helper is SIGKILLed, so it never
		// cleans up: it uses the parent's guest rather than a temp dir.
		testKernel, testInitrd = os.Getenv(envHelperKernel), initrd
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "coffer-qemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	skipReason = setupGuest(tmp)
	return m.Run()
}

// setupGuest finds the kernel and builds the test initrd; it returns why VM
// tests cannot run, or "".
func setupGuest(tmp string) string {
	if _, err := exec.LookPath(hypervisor.DefaultQEMU); err != nil {
		return fmt.Sprintf("%s not installed (apt-get install qemu-system-x86)", hypervisor.DefaultQEMU)
	}
	testKernel = os.Getenv("COFFER_TEST_KERNEL")
	if testKernel == "" {
		testKernel = defaultTestKernel
	}
	if _, err := os.Stat(testKernel); err != nil {
		return fmt.Sprintf("no guest kernel (set COFFER_TEST_KERNEL to a vmlinuz): %v", err)
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		return "cpio not installed (apt-get install cpio): needed to build the test initrd"
	}
	root := filepath.Join(tmp, "root")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		return err.Error()
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Sprintf("no static busybox (apt-get install busybox-static): %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), bb, 0o755); err != nil {
		return err.Error()
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(testInitSh), 0o755); err != nil {
		return err.Error()
	}
	files := ".\nbin\nbin/busybox\ninit\n"
	if mods, err := copyModules(root); err != nil {
		noModules = err.Error()
	} else {
		files += mods
	}
	testInitrd = filepath.Join(tmp, "initrd.cpio")
	out, err := os.Create(testInitrd)
	if err != nil {
		return err.Error()
	}
	defer out.Close()
	var stderr bytes.Buffer
	cmd := exec.Command("cpio", "--quiet", "-o", "-H", "newc")
	cmd.Dir = root
	cmd.Stdin = strings.NewReader(files)
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("build test initrd with cpio: %v: %s", err, stderr.String())
	}
	return ""
}

// copyModules copies the hotplugModules of the test kernel into root/mod and
// returns their cpio list entries. The modules are looked up next to the
// kernel (an extracted .deb: <dir>/boot/vmlinuz-<rel> and
// <dir>/lib/modules/<rel>), under $COFFER_TEST_KERNEL_DIR, and in the guest
// kernel cache /var/lib/coffer/guest/kernel/<rel>.
func copyModules(root string) (string, error) {
	rel, ok := strings.CutPrefix(filepath.Base(testKernel), "vmlinuz-")
	if !ok {
		// A plain "vmlinuz" (the guest image's): take the release from the
		// one kernel package unpacked in $COFFER_TEST_KERNEL_DIR.
		if d := os.Getenv("COFFER_TEST_KERNEL_DIR"); d != "" {
			if rels, _ := filepath.Glob(filepath.Join(d, "lib", "modules", "*")); len(rels) == 1 {
				rel, ok = filepath.Base(rels[0]), true
			}
		}
	}
	if !ok {
		return "", fmt.Errorf("cannot tell the release of kernel %s (want vmlinuz-<release>, or one release under $COFFER_TEST_KERNEL_DIR/lib/modules)", testKernel)
	}
	var bases []string
	if d := os.Getenv("COFFER_TEST_KERNEL_DIR"); d != "" {
		bases = append(bases, d)
	}
	bases = append(bases, filepath.Dir(filepath.Dir(testKernel)), filepath.Join("/var/lib/coffer/guest/kernel", rel))
	var tried []string
	for _, b := range bases {
		kdir := filepath.Join(b, "lib", "modules", rel, "kernel")
		tried = append(tried, kdir)
		if _, err := os.Stat(kdir); err != nil {
			continue
		}
		if err := os.MkdirAll(filepath.Join(root, "mod"), 0o755); err != nil {
			return "", err
		}
		list := "mod\n"
		for _, m := range strings.Fields(hotplugModules) {
			var src string
			for _, sub := range []string{"drivers/virtio", "drivers/block"} {
				if p := filepath.Join(kdir, sub, m+".ko"); fileExists(p) {
					src = p
				}
			}
			if src == "" {
				return "", fmt.Errorf("module %s.ko not found (uncompressed) under %s", m, kdir)
			}
			b, err := os.ReadFile(src)
			if err != nil {
				return "", err
			}
			if err := os.WriteFile(filepath.Join(root, "mod", m+".ko"), b, 0o644); err != nil {
				return "", err
			}
			list += "mod/" + m + ".ko\n"
		}
		return list, nil
	}
	return "", fmt.Errorf("no modules for kernel %s in %s", rel, strings.Join(tried, ", "))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// testAccel is TCG unless COFFER_ACCEL says otherwise.
func testAccel() hypervisor.Accel {
	if a, err := hypervisor.ParseAccel(os.Getenv(hypervisor.EnvAccel)); err == nil && a != hypervisor.AccelAuto {
		return a
	}
	return hypervisor.AccelTCG
}

// vmTest skips when VMs cannot run here, and registers a leak check: when
// the test ends no qemu process may still mention dir in its arguments.
func vmTest(t *testing.T) (dir string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs under QEMU; skipped with -short")
	}
	if skipReason != "" {
		t.Skip(skipReason)
	}
	dir = t.TempDir()
	t.Cleanup(func() {
		for _, pid := range qemuProcessesMentioning(dir) {
			t.Errorf("leak: qemu pid %d still running with %s in its arguments", pid, dir)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return dir
}

// guestConfig is a VM running the test init in mode.
func guestConfig(dir, mode string) hypervisor.Config {
	return hypervisor.Config{
		StateDir: filepath.Join(dir, "vm"),
		Kernel:   testKernel,
		Initrd:   testInitrd,
		Cmdline:  "console=ttyS0 panic=-1 quiet cofftest=" + mode,
		Accel:    testAccel(),
	}
}

// qemuProcessesMentioning lists live (non-zombie) qemu processes whose
// command line contains s.
func qemuProcessesMentioning(s string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("qemu-system-x86_64")) || !bytes.Contains(cmdline, []byte(s)) {
			continue
		}
		if alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// state is the first field after "(comm)".
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// testLogger sends slog output to t.Log until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.t = nil
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu sync.Mutex
	t  *testing.T
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t != nil {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// waitConsole polls the console log until it contains s.
func waitConsole(t *testing.T, v *VM, s string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		b, _ := os.ReadFile(v.ConsoleLogPath())
		if bytes.Contains(b, []byte(s)) {
			return time.Since(start)
		}
		select {
		case <-v.Done():
			b, _ := os.ReadFile(v.ConsoleLogPath())
			if bytes.Contains(b, []byte(s)) {
				return time.Since(start)
			}
			t.Fatalf("qemu exited (%v) before the console showed %q; console:\n%s", v.ExitErr(), s, v.ConsoleTail(20))
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("console did not show %q within %s; console:\n%s", s, timeout, v.ConsoleTail(20))
	return 0
}

// waitDone waits for qemu to exit.
func waitDoneT(t *testing.T, v *VM, timeout time.Duration) {
	t.Helper()
	select {
	case <-v.Done():
	case <-time.After(timeout):
		t.Fatalf("qemu pid %d did not exit within %s; console:\n%s", v.PID(), timeout, v.ConsoleTail(20))
	}
}

func startVM(t *testing.T, cfg hypervisor.Config) *VM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := Start(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := v.Stop(context.Background()); err != nil {
			t.Errorf("Stop in cleanup: %v", err)
		}
	})
	return v
}

func assertGone(t *testing.T, v *VM) {
	t.Helper()
	if alive(v.PID()) {
		t.Errorf("qemu pid %d still alive", v.PID())
	}
	if _, err := os.Stat(v.cfg.StateDir); !os.IsNotExist(err) {
		t.Errorf("state dir %s still exists (err=%v)", v.cfg.StateDir, err)
	}
}

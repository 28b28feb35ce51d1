package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ModulesLoadFile lists, one per line and in dependency order, the module
// files (relative to /lib/modules/<release>) the agent loads at boot. The
// guest image builder writes it.
const ModulesLoadFile = "/etc/coffer/modules.load"

// leaveInitramfs makes the agent's root a bind mount of the initramfs
// instead of the initramfs itself. pivot_root(2) refuses to move the
// initramfs (it has no parent mount), and containers need pivot_root; the
// bind mount shares the same files, so nothing is copied.
func leaveInitramfs() error {
	const newRoot = "/.coffer-root"
	if err := os.MkdirAll(newRoot, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", newRoot, err)
	}
	if err := unix.Mount("/", newRoot, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount the initramfs: %w", err)
	}
	if err := unix.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root bind mount to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the root bind mount: %w", err)
	}
	return unix.Chdir("/")
}

type earlyMount struct {
	src, target, fstype string
	flags               uintptr
	data                string
}

var earlyMounts = []earlyMount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "nsdelegate"},
}

// mountEarly mounts the pseudo filesystems PID 1 needs.
func mountEarly() error {
	for _, m := range earlyMounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", m.target, err)
		}
		if err := unix.Mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// channelModules are loaded before the agent listens: the virtio PCI
// transport and the agent's serial port.
var channelModules = map[string]bool{
	"virtio": true, "virtio_ring": true, "virtio_pci": true, "virtio_pci_legacy_dev": true,
	"virtio_pci_modern_dev": true, "virtio_console": true,
}

// podModules are the rest of what every pod needs: the rootfs disk and its
// filesystems. They load in the background while the host connects;
// storage waits for them. The balloon (lateModules) comes later. Everything else in
// ModulesLoadFile (vsock, networking, dm-crypt and dm-verity, the RNG) is
// not loaded at boot: each module costs milliseconds of boot time (tens of
// ms under TCG).
var podModules = map[string]bool{
	"virtio_blk": true, "overlay": true, "erofs": true, "libcrc32c": true,
}

// lateModules load balloonAfter the pod modules: the balloon, whose free
// page reporting hands memory the guest freed back to the host, pays off
// only for pods that live on, and loading it (module and device probe)
// while the first container starts took CPU from that start on a
// one-vCPU guest.
var lateModules = map[string]bool{"virtio_balloon": true}

// balloonAfter is when the balloon loads, after the pod modules.
const balloonAfter = time.Second

// pageReportingOrder is where the kernel keeps the smallest block of free
// memory (2^order pages) that free page reporting hands back to the host.
// virtio_balloon sets it to 9 (2 MiB); after boot, most memory the guest
// touched and freed again sits in smaller blocks, so the agent lowers it.
const pageReportingOrder = "/sys/module/page_reporting/parameters/page_reporting_order"

// lowerReportingOrderAfter (after the balloon loads) delays lowering the
// reporting order: reporting single pages costs CPU while the pod starts
// (measured: ~3 % of a short `coffer run`), and it pays off only for pods
// that live on.
const lowerReportingOrderAfter = 2 * time.Second

// bootWork is module loading that runs in the background; wait blocks
// until it is done and returns its error.
type bootWork struct {
	done chan struct{}
	err  error
}

func startBootWork(log *slog.Logger, want func(name string) bool) *bootWork {
	w := &bootWork{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		start := time.Now()
		if w.err = loadModules(log, want); w.err != nil {
			log.Error("load kernel modules", "err", w.err)
			return
		}
		log.Debug("pod kernel modules loaded", "took", time.Since(start))
		time.AfterFunc(balloonAfter, func() { startBalloon(log) })
	}()
	return w
}

// startBalloon loads the balloon module, then lowers the free page
// reporting order once the pod has settled.
func startBalloon(log *slog.Logger) {
	start := time.Now()
	if err := loadModules(log, func(name string) bool { return lateModules[name] }); err != nil {
		log.Warn("load the balloon module (the host gets none of the guest's free memory back)", "err", err)
		return
	}
	log.Debug("balloon module loaded", "took", time.Since(start))
	time.AfterFunc(lowerReportingOrderAfter, func() {
		if err := os.WriteFile(pageReportingOrder, []byte("0"), 0); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				log.Warn("lower the free page reporting order (the host gets less of the guest's free memory back)", "err", err)
			}
			return
		}
		// Reporting runs when pages are freed; an idle guest frees
		// little. Compaction frees (and merges) pages, so it both
		// starts a reporting pass and hands back bigger blocks.
		_ = os.WriteFile("/proc/sys/vm/compact_memory", []byte("1"), 0)
	})
}

func (w *bootWork) wait(ctx context.Context) error {
	select {
	case <-w.done:
		if w.err != nil {
			return fmt.Errorf("the guest could not load its kernel modules at boot: %w", w.err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the guest's kernel modules: %w", ctx.Err())
	}
}

// vsockModules are loaded at boot when the agent serves on vsock.
var vsockModules = map[string]bool{
	"vsock": true, "vmw_vsock_virtio_transport_common": true, "vmw_vsock_virtio_transport": true,
}

// moduleName is the module name of a .ko path ("-" and "_" are the same).
func moduleName(path string) string {
	return strings.ReplaceAll(strings.TrimSuffix(filepath.Base(path), ".ko"), "-", "_")
}

// loadModules loads the modules listed in ModulesLoadFile (in order) for
// which want returns true. Modules already loaded or built in are fine.
func loadModules(log *slog.Logger, want func(name string) bool) error {
	f, err := os.Open(ModulesLoadFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return err
	}
	base := filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:]))
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		rel := strings.TrimSpace(sc.Text())
		if rel == "" || strings.HasPrefix(rel, "#") || !want(moduleName(rel)) {
			continue
		}
		if err := loadModule(filepath.Join(base, rel)); err != nil {
			return err
		}
		n++
	}
	log.Debug("kernel modules loaded", "count", n)
	return sc.Err()
}

func loadModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open module %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.FinitModule(fd, "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

// powerOff syncs and powers the VM off; it does not return on success.
func powerOff() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func kernelRelease() string {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return ""
	}
	return unix.ByteSliceToString(uts.Release[:])
}

func uptimeSeconds() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

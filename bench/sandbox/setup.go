package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coffer-project/coffer/internal/guest"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/sandbox"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
	"github.com/coffer-project/coffer/bench/internal/floor"
)

// bench holds everything one benchmark run set up; cleanup removes it.
type bench struct {
	opts     options
	progress io.Writer

	tmp      string // everything below is inside tmp
	rt       string // COFFER_RUNTIME_DIR of every coffer command
	guestDir string // snapshot of the guest image
	manifest *guest.Manifest
	coffer   string // absolute path
	qemu     string // absolute path, as the driver resolves it
	accel    hypervisor.Accel
	accelWhy string

	busybox      string // busybox rootfs
	big          string // busybox rootfs plus a copy of bigTree
	bigTree      string
	tinyInitrd   string // trivial /init only
	cofferInitrd string // coffer's initrd with /init replaced by the trivial one
	runcRoot     string
	bundle       string
	images       string // mkfs outputs

	seq         int
	idleStarted bool
	runcID      string // container that may need a delete
	machine     machineInfo
}

// machineInfo describes where the numbers come from.
type machineInfo struct {
	CPUs          int    `json:"cpus"`
	CPUModel      string `json:"cpu_model"`
	HostKernel    string `json:"host_kernel"`
	QEMU          string `json:"qemu"`
	QEMUVersion   string `json:"qemu_version"`
	Accel         string `json:"accel"`
	AccelReason   string `json:"accel_reason"`
	GuestKernel   string `json:"guest_kernel"`
	GuestCmdline  string `json:"guest_cmdline"`
	GuestInitrd   int64  `json:"guest_initrd_bytes"`
	GuestModules  int    `json:"guest_modules"`
	GuestAgent    string `json:"guest_agent_version"`
	TinyInitrd    int64  `json:"tiny_initrd_bytes"`
	Coffer        string `json:"coffer"`
	CofferVersion string `json:"coffer_version"`
	Runc          string `json:"runc_version"`
	BusyboxBytes  int64  `json:"busybox_rootfs_bytes"`
	BusyboxFiles  int    `json:"busybox_rootfs_entries"`
	BigTree       string `json:"big_tree"`
	BigBytes      int64  `json:"big_rootfs_bytes"`
	BigFiles      int    `json:"big_rootfs_entries"`
	THP           string `json:"host_thp"`
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "bench: "+format+"\n", args...)
}

// newBench checks the tools and prepares every input in a new temp dir.
// On error the returned bench (if any) still needs cleanup.
func newBench(ctx context.Context, opts options, progress io.Writer) (*bench, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("run as root: coffer run, runc and QEMU's state need it (sudo ./bench/sandbox/run.sh)")
	}
	for _, tool := range []string{"runc", "mkfs.erofs", "mkfs.ext4", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed (run scripts/setup.sh): %w", tool, err)
		}
	}
	coffer, err := filepath.Abs(opts.coffer)
	if err == nil {
		_, err = os.Stat(coffer)
	}
	if err != nil {
		return nil, fmt.Errorf("coffer binary %s: %w (run `make build`, or pass -coffer)", opts.coffer, err)
	}
	b := &bench{opts: opts, progress: progress, coffer: coffer}
	if b.tmp, err = os.MkdirTemp("", "coffer-bench-"); err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	b.rt = filepath.Join(b.tmp, "rt")
	b.images = filepath.Join(b.tmp, "img")
	b.runcRoot = filepath.Join(b.tmp, "runc-state")
	for _, d := range []string{b.rt, b.images, b.runcRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return b, err
		}
	}

	// Pin the guest image: others may rebuild the shared one meanwhile.
	m, err := guest.Load(opts.guestDir)
	if err != nil {
		return b, fmt.Errorf("load the guest image: %w", err)
	}
	b.guestDir = filepath.Join(b.tmp, "guest")
	if err := os.MkdirAll(b.guestDir, 0o755); err != nil {
		return b, err
	}
	for _, f := range []string{guest.ManifestFile, m.Kernel.Path, m.Initrd.Path} {
		if err := copyFile(filepath.Join(m.Dir, f), filepath.Join(b.guestDir, f)); err != nil {
			return b, fmt.Errorf("snapshot the guest image: %w", err)
		}
	}
	if b.manifest, err = guest.Load(b.guestDir); err != nil {
		return b, fmt.Errorf("load the guest image snapshot: %w", err)
	}
	if err := guest.Verify(b.manifest); err != nil {
		return b, fmt.Errorf("guest image snapshot (was it rebuilt while being copied? run again): %w", err)
	}

	if b.qemu, err = exec.LookPath(hypervisor.DefaultQEMU); err != nil {
		return b, fmt.Errorf("QEMU: %w (install qemu-system-x86)", err)
	}
	// The same decision the driver makes for coffer run (honours COFFER_ACCEL).
	if b.accel, b.accelWhy, err = hypervisor.DetectAccel(ctx, hypervisor.DetectOptions{
		Kernel: b.manifest.KernelPath(), QEMUPath: b.qemu,
	}); err != nil {
		return b, err
	}

	b.busybox = filepath.Join(b.tmp, "rootfs-busybox")
	if err := makeBusyboxRootfs(b.busybox); err != nil {
		return b, err
	}
	b.bigTree = opts.bigTree
	if b.bigTree == "" {
		b.bigTree = "/usr/lib/python3.11"
		if _, err := os.Stat(b.bigTree); err != nil {
			b.bigTree = "/usr/share/doc"
		}
	}
	b.big = filepath.Join(b.tmp, "rootfs-big")
	if err := makeBigRootfs(ctx, b.big, b.bigTree); err != nil {
		return b, err
	}

	initBin := opts.initPath
	if initBin == "" {
		b.logf("building the trivial init (%s)", floor.TinyInitPkg)
		if initBin, err = floor.BuildTinyInit(ctx, b.tmp); err != nil {
			return b, err
		}
	}
	if err := b.makeInitrds(initBin); err != nil {
		return b, err
	}
	if err := b.makeBundle(ctx); err != nil {
		return b, err
	}
	b.machine = b.describeMachine(ctx)
	return b, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// makeBusyboxRootfs builds a minimal rootfs: static busybox, its applets as
// symlinks, passwd and group.
func makeBusyboxRootfs(dir string) error {
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	const src = "/bin/busybox"
	if err := floor.CheckStatic(src); err != nil {
		return fmt.Errorf("the rootfs needs a static busybox (apt-get install busybox-static): %w", err)
	}
	if err := copyFile(src, filepath.Join(dir, "bin", "busybox")); err != nil {
		return fmt.Errorf("copy busybox (apt-get install busybox-static): %w", err)
	}
	if err := os.Chmod(filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return err
	}
	out, err := exec.Command(src, "--list").Output()
	if err != nil {
		return fmt.Errorf("list busybox applets: %w", err)
	}
	for _, app := range strings.Fields(string(out)) {
		if app == "busybox" || strings.Contains(app, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", app)); err != nil {
			return fmt.Errorf("busybox applet link: %w", err)
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// makeBigRootfs is the busybox rootfs plus a copy of tree under /data.
func makeBigRootfs(ctx context.Context, dir, tree string) error {
	if err := makeBusyboxRootfs(dir); err != nil {
		return err
	}
	if fi, err := os.Stat(tree); err != nil || !fi.IsDir() {
		return fmt.Errorf("big tree %s is not a directory (pass -big-tree DIR): %v", tree, err)
	}
	dst := filepath.Join(dir, "data")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "cp", "-a", tree, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s into the big rootfs: %w: %s", tree, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// treeSize returns the bytes of regular files and the number of entries.
func treeSize(dir string) (int64, int) {
	var size int64
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		n++
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	return size, n
}

// makeInitrds writes the trivial initrd (initBin as /init) and a copy
// of coffer's initrd with the trivial one appended: the kernel unpacks
// both archives in order, so the later /init replaces the agent.
func (b *bench) makeInitrds(initBin string) error {
	b.tinyInitrd = filepath.Join(b.tmp, "tiny-initrd.img")
	if err := floor.WriteInitrd(b.tinyInitrd, initBin); err != nil {
		return err
	}

	if b.manifest.Initrd.Compression != "none" && b.manifest.Initrd.Compression != "" {
		return fmt.Errorf("coffer's initrd is %s-compressed; the appended-init variant needs an uncompressed one", b.manifest.Initrd.Compression)
	}
	b.cofferInitrd = filepath.Join(b.tmp, "coffer-initrd-trivial-init.img")
	if err := copyFile(b.manifest.InitrdPath(), b.cofferInitrd); err != nil {
		return err
	}
	out, err := os.OpenFile(b.cofferInitrd, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	// newc archives are 4-byte aligned; pad to be safe before appending.
	if fi, err := out.Stat(); err == nil && fi.Size()%4 != 0 {
		_, _ = out.Write(make([]byte, 4-fi.Size()%4))
	}
	tiny, err := os.ReadFile(b.tinyInitrd)
	if err != nil {
		out.Close()
		return err
	}
	if _, err := out.Write(tiny); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// makeBundle writes a runc bundle for the busybox rootfs that runs `true`.
func (b *bench) makeBundle(ctx context.Context) error {
	b.bundle = filepath.Join(b.tmp, "bundle")
	if err := os.MkdirAll(b.bundle, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "runc", "spec", "--bundle", b.bundle).CombinedOutput(); err != nil {
		return fmt.Errorf("runc spec: %w: %s", err, strings.TrimSpace(string(out)))
	}
	p := filepath.Join(b.bundle, "config.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("parse runc's config.json: %w", err)
	}
	if spec.Process == nil || spec.Root == nil {
		return errors.New("runc spec wrote a config.json without process or root")
	}
	spec.Process.Args = []string{"true"}
	spec.Process.Terminal = false
	spec.Root.Path = b.busybox
	spec.Root.Readonly = true
	raw, err = json.MarshalIndent(&spec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(p, raw, 0o644)
}

func (b *bench) describeMachine(ctx context.Context) machineInfo {
	mi := machineInfo{
		CPUs: runtime.NumCPU(), CPUModel: cpuModel(), QEMU: b.qemu,
		QEMUVersion: benchutil.FirstLine(ctx, b.qemu, "--version"),
		Accel:       string(b.accel), AccelReason: b.accelWhy,
		GuestKernel: b.manifest.Kernel.Release, GuestCmdline: b.manifest.Cmdline,
		GuestInitrd: b.manifest.Initrd.Size, GuestModules: len(b.manifest.Modules), GuestAgent: b.manifest.Agent.Version,
		Coffer: b.coffer, CofferVersion: benchutil.FirstLine(ctx, b.coffer, "--version"),
		Runc: benchutil.FirstLine(ctx, "runc", "--version"), BigTree: b.bigTree,
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		mi.HostKernel = unix.ByteSliceToString(uts.Release[:])
	}
	if fi, err := os.Stat(b.tinyInitrd); err == nil {
		mi.TinyInitrd = fi.Size()
	}
	if thp, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled"); err == nil {
		mi.THP = strings.TrimSpace(string(thp))
	}
	mi.BusyboxBytes, mi.BusyboxFiles = treeSize(b.busybox)
	mi.BigBytes, mi.BigFiles = treeSize(b.big)
	return mi
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// cleanup removes the idle pod, a runc container, stray VMs of this run
// and the temp dir. It is safe to call on a partly set-up bench.
func (b *bench) cleanup() {
	if b.tmp == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if b.idleStarted {
		b.removeIdle(ctx)
	}
	if b.runcID != "" {
		_ = exec.CommandContext(ctx, "runc", "--root", b.runcRoot, "delete", "-f", b.runcID).Run()
	}
	// Pods left by an interrupted run: coffer rm -f kills their VMs.
	if pods, err := sandbox.ListPods(b.rt); err == nil {
		for _, st := range pods {
			cmd := exec.CommandContext(ctx, b.coffer, "rm", "-f", st.Name)
			cmd.Env = b.env()
			_ = cmd.Run()
		}
	}
	killStrayQEMUs(b.tmp)
	if err := os.RemoveAll(b.tmp); err != nil {
		b.logf("could not remove %s: %v", b.tmp, err)
	}
}

// killStrayQEMUs kills QEMU processes whose command line names dir (only
// this run's VMs do).
func killStrayQEMUs(dir string) {
	for _, pid := range qemuPIDs() {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(cmd), dir) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// qemuPIDs lists running qemu-system-* processes.
func qemuPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.HasPrefix(string(comm), "qemu-system") {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (b *bench) env() []string {
	return append(os.Environ(), "COFFER_RUNTIME_DIR="+b.rt)
}

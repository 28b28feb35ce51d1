package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	cshim "github.com/containerd/containerd/runtime/v2/shim"
	"golang.org/x/sys/unix"
)

// Manager implements the shim binary's short-lived invocations: `start`
// (spawn the long-lived shim serving the task API) and `delete` (clean
// up after a shim that is gone).
type Manager struct {
	cfg Config
	log *slog.Logger
}

// NewManager returns the manager for containerd's runtime v2 shim package.
func NewManager(cfg Config, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, log: log}
}

// Name is the runtime name.
func (m *Manager) Name() string { return RuntimeName }

// Start spawns the long-lived shim for task id on a new socket (or finds
// the running shim of its pod) and returns what `start` prints: the
// socket's bare address for containerd 1.6/1.7 (task API v2), or a
// BootstrapResult announcing task API v3 when containerd sent bootstrap
// parameters on stdin (containerd 2.x, see bootstrap.go). The working
// directory is the bundle.
func (m *Manager) Start(ctx context.Context, id string, opts cshim.StartOpts) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	params, v3 := readBootstrap(os.Stdin, id, ns)
	address, err := m.start(ctx, ns, id, opts)
	if err != nil {
		return "", err
	}
	if v3 {
		m.log.Debug("containerd speaks the bootstrap protocol: serving task API v3", "containerd_version", params.ContainerdVersion)
		return string(bootstrapResult(address)), nil
	}
	return address, nil
}

func (m *Manager) start(ctx context.Context, ns, id string, opts cshim.StartOpts) (_ string, retErr error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the shim binary: %w", err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	annotations, err := bundleAnnotations(cwd)
	if err != nil {
		return "", err
	}
	sandboxID, joining := podRole(annotations)
	if joining {
		return m.joinPod(ctx, id, sandboxID, opts)
	}
	// The shim's socket is named after the pod, so that the pod's other
	// containers find it (see joinPod).
	shimID := id
	if sandboxID != "" {
		shimID = sandboxID
	}
	address, err := cshim.SocketAddress(ctx, opts.Address, shimID)
	if err != nil {
		return "", err
	}
	socket, err := cshim.NewSocket(address)
	if err != nil {
		if !cshim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create the shim socket: %w", err)
		}
		if cshim.CanConnect(address) {
			// A shim for this id already serves: reuse it.
			if err := cshim.WriteAddress("address", address); err != nil {
				return "", err
			}
			return address, nil
		}
		if err := cshim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("remove the stale shim socket: %w", err)
		}
		if socket, err = cshim.NewSocket(address); err != nil {
			return "", fmt.Errorf("create the shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = cshim.RemoveSocket(address)
		}
	}()
	if err := cshim.WriteAddress("address", address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	args := []string{"-namespace", ns, "-id", id, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = os.Environ()
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start the shim: %w", err)
	}
	// The shim outlives this process; release it.
	_ = cmd.Process.Release()
	return address, nil
}

// joinPod returns the address of the running shim of pod sandboxID for
// container id, which joins that pod's VM.
func (m *Manager) joinPod(ctx context.Context, id, sandboxID string, opts cshim.StartOpts) (string, error) {
	address, err := cshim.SocketAddress(ctx, opts.Address, sandboxID)
	if err != nil {
		return "", err
	}
	if !cshim.CanConnect(address) {
		return "", fmt.Errorf("container %s joins pod %s, but no Coffer shim serves that pod (%s): start the pod's sandbox container first", id, sandboxID, address)
	}
	if err := cshim.WriteAddress("address", address); err != nil {
		return "", err
	}
	return address, nil
}

// Stop is `containerd-shim-coffer-v2 delete`: the shim of task id is gone
// (or never came up), so remove its VM and state. It is idempotent.
//
// containerd also runs it after each task's Delete has closed its
// connection (containerd 1.6 does), so it removes nothing while the
// pod's shim still runs: the shim owns the VM until the pod's last
// container leaves. Once the shim is dead nothing can use the VM, so the
// first delete after that (the sandbox container's or that of any
// container that joined the pod) removes the VM and the pod state,
// hot-plugged disks included (the pod record lists them).
func (m *Manager) Stop(ctx context.Context, id string) (cshim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return cshim.StopStatus{}, err
	}
	stopped := cshim.StopStatus{ExitStatus: 128 + int(unix.SIGKILL), ExitedAt: time.Now()}
	podID, joining := id, false
	cwd, cwdErr := os.Getwd()
	if cwdErr == nil {
		// The bundle's rootfs is only mounted while Create builds the
		// image; a shim killed then leaves it mounted.
		_ = mount.UnmountAll(filepath.Join(cwd, "rootfs"), unix.MNT_DETACH)
		if annotations, err := bundleAnnotations(cwd); err == nil {
			var sandboxID string
			if sandboxID, joining = podRole(annotations); joining {
				podID = sandboxID
			}
		}
	}
	dir := m.cfg.PodDir(ns, podID)
	rec, recErr := readRecord(dir)
	if recErr == nil && isOurShim(rec.ShimPID) {
		return stopped, nil
	}
	if joining && (recErr != nil || !rec.joined(id)) {
		// Not (or no longer) in the pod: nothing of ours to remove.
		return stopped, nil
	}
	if cwdErr == nil && !joining {
		// A killed shim leaves its socket behind.
		if address, err := cshim.ReadAddress(filepath.Join(cwd, "address")); err == nil {
			_ = cshim.RemoveSocket(address)
		}
	}
	pid, err := m.removePod(ctx, dir)
	if err != nil {
		return cshim.StopStatus{}, err
	}
	stopped.Pid = pid
	return stopped, nil
}

// removePod kills the VM of the pod in dir (if it still runs) and removes
// the pod's state: the VM's files and every recorded disk image. It
// returns the VM's pid.
func (m *Manager) removePod(ctx context.Context, dir string) (int, error) {
	pid := 0
	if rec, err := readRecord(dir); err == nil {
		pid = rec.QEMUPID
		if rec.QEMUPID > 0 && isOurQEMU(rec.QEMUPID, dir) {
			m.log.Warn("killing the VM of a dead shim", "id", rec.ID, "qemu_pid", rec.QEMUPID, "joined_disks", len(rec.Joined))
			_ = unix.Kill(rec.QEMUPID, unix.SIGKILL)
			waitGone(ctx, rec.QEMUPID, 5*time.Second)
		}
		for _, j := range rec.Joined {
			// Images live in the pod dir; anything else is not ours.
			if filepath.Dir(j.Image) == dir {
				_ = os.Remove(j.Image)
			}
		}
	}
	if err := removePodDir(dir); err != nil {
		return pid, fmt.Errorf("remove pod state %s: %w", dir, err)
	}
	return pid, nil
}

// joined reports whether container id joined the pod.
func (r *podRecord) joined(id string) bool {
	for _, j := range r.Joined {
		if j.Container == id {
			return true
		}
	}
	return false
}

// isOurShim reports whether pid is a running Coffer shim.
func isOurShim(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return err == nil && bytes.Contains(b, []byte("containerd-shim-coffer-v2"))
}

// isOurQEMU reports whether pid is a qemu started for the pod in dir.
func isOurQEMU(pid int, dir string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	return bytes.Contains(b, []byte("qemu")) && bytes.Contains(b, []byte(dir))
}

func waitGone(ctx context.Context, pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

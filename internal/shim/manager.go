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
func (m *Manager) Stop(ctx context.Context, id string) (cshim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return cshim.StopStatus{}, err
	}
	if cwd, err := os.Getwd(); err == nil {
		if annotations, err := bundleAnnotations(cwd); err == nil {
			if _, joining := podRole(annotations); joining {
				// The VM and the socket belong to the pod's sandbox
				// container; its shim removes this container's disk.
				_ = mount.UnmountAll(filepath.Join(cwd, "rootfs"), unix.MNT_DETACH)
				return cshim.StopStatus{ExitStatus: 128 + int(unix.SIGKILL), ExitedAt: time.Now()}, nil
			}
		}
	}
	dir := m.cfg.PodDir(ns, id)
	pid := 0
	if rec, err := readRecord(dir); err == nil {
		pid = rec.QEMUPID
		if rec.QEMUPID > 0 && isOurQEMU(rec.QEMUPID, dir) {
			m.log.Warn("killing the VM of a dead shim", "id", id, "qemu_pid", rec.QEMUPID)
			_ = unix.Kill(rec.QEMUPID, unix.SIGKILL)
			waitGone(ctx, rec.QEMUPID, 5*time.Second)
		}
	}
	if cwd, err := os.Getwd(); err == nil {
		// The bundle's rootfs is only mounted while Create builds the
		// image; a shim killed then leaves it mounted.
		_ = mount.UnmountAll(filepath.Join(cwd, "rootfs"), unix.MNT_DETACH)
		// A killed shim leaves its socket behind.
		if address, err := cshim.ReadAddress(filepath.Join(cwd, "address")); err == nil {
			_ = cshim.RemoveSocket(address)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return cshim.StopStatus{}, fmt.Errorf("remove pod state %s: %w", dir, err)
	}
	return cshim.StopStatus{Pid: pid, ExitStatus: 128 + int(unix.SIGKILL), ExitedAt: time.Now()}, nil
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

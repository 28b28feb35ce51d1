package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// DefaultVirtiofsd is QEMU's C virtiofsd as Debian 12 ships it (package
// qemu-system-common).
const DefaultVirtiofsd = "/usr/lib/qemu/virtiofsd"

// virtiofsdStopWait is how long Stop waits for virtiofsd to exit on its
// own (it does when QEMU closes the vhost-user connection) before killing
// it.
const virtiofsdStopWait = 2 * time.Second

// virtiofsd is the pod's virtio-fs backend: one process serving one
// shared directory to one QEMU.
type virtiofsd struct {
	pid    int
	proc   *os.Process
	socket string
	log    *slog.Logger
	done   chan struct{}
	err    error // set before done closes
}

// startVirtiofsd starts virtiofsd exporting source on a unix socket it
// inherits already listening, so QEMU can connect the moment this returns
// (no polling for the socket file). The process is tied to the calling
// process (SIGKILL when the thread that forked it exits, see run) and to
// QEMU (it exits when the vhost-user connection closes).
//
// Sandboxing, as far as the C virtiofsd allows: its default "namespace"
// sandbox (new mount, pid and net namespaces, pivot_root into source, so
// guest-made symlinks cannot reach host files), its built-in seccomp
// filter, and capabilities cut to what file serving needs: CAP_MKNOD and
// CAP_SETFCAP are dropped, so the guest can create neither device nodes
// nor file capabilities on the host. cache=auto: see docs/architecture.md.
func startVirtiofsd(bin, dir, source string, log *slog.Logger) (_ *virtiofsd, err error) {
	if bin == "" {
		bin = DefaultVirtiofsd
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("volumes need virtiofsd, not found at %s (install the Debian package qemu-system-common, or set its path): %w", bin, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the virtiofsd dir: %w", err)
	}
	socket := filepath.Join(dir, "fs.sock")
	if len(socket) > 107 {
		return nil, fmt.Errorf("virtiofsd socket path %s is %d bytes, over the 107-byte limit of unix sockets: use a shorter runtime dir", socket, len(socket))
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on the virtiofsd socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	lf, err := l.File()
	if err != nil {
		_ = os.Remove(socket)
		return nil, fmt.Errorf("virtiofsd socket: %w", err)
	}
	defer lf.Close()
	logf, err := os.OpenFile(filepath.Join(dir, "virtiofsd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		_ = os.Remove(socket)
		return nil, fmt.Errorf("create the virtiofsd log: %w", err)
	}
	defer logf.Close()
	args := []string{
		"--fd=3",
		"-o", "source=" + source,
		"-o", "sandbox=namespace",
		"-o", "cache=auto",
		"-o", "modcaps=-mknod:-setfcap",
		"-o", "no_posix_lock", "-o", "no_flock", "-o", "no_xattr",
		"-o", "log_level=warn",
	}
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	v := &virtiofsd{socket: socket, log: log, done: make(chan struct{})}
	started := make(chan error, 1)
	go v.run(cmd, started)
	if err := <-started; err != nil {
		_ = os.Remove(socket)
		return nil, fmt.Errorf("start virtiofsd %s: %w", bin, err)
	}
	log.Debug("virtiofsd started", "pid", v.pid, "source", source, "args", strings.Join(args, " "))
	return v, nil
}

// run starts and reaps virtiofsd on a goroutine locked to its OS thread
// for the child's whole life: Pdeathsig fires when the forking thread
// exits, which then happens only after the reap.
func (v *virtiofsd) run(cmd *exec.Cmd, started chan<- error) {
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		started <- err
		close(v.done)
		return
	}
	v.proc, v.pid = cmd.Process, cmd.Process.Pid
	started <- nil
	v.err = cmd.Wait()
	close(v.done)
}

// Stop waits briefly for virtiofsd to exit (QEMU must be gone: it exits
// when the vhost-user connection closes), kills its process group
// otherwise (its sandbox child is in the same group; the parent only
// exits after the child, so a reaped parent means no child), and removes
// its socket. Idempotent.
func (v *virtiofsd) Stop(ctx context.Context) error {
	t := time.NewTimer(virtiofsdStopWait)
	defer t.Stop()
	select {
	case <-v.done:
	case <-t.C:
		v.kill()
	case <-ctx.Done():
		v.kill()
	}
	select {
	case <-v.done:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("virtiofsd pid %d did not exit after SIGKILL", v.pid)
	}
	if err := os.Remove(v.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the virtiofsd socket: %w", err)
	}
	return nil
}

func (v *virtiofsd) kill() {
	v.log.Warn("virtiofsd did not exit with the VM; killing it", "pid", v.pid)
	_ = v.proc.Kill()
	_ = syscall.Kill(-v.pid, syscall.SIGKILL)
}

package qemu

import (
	"context"
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
	"sync"
	"syscall"
	"time"

	"github.com/coffer-project/coffer/internal/hypervisor"
)

// DefaultStartTimeout bounds Start when its ctx has no deadline: the time
// from exec to QMP answering (not the guest boot).
const DefaultStartTimeout = 30 * time.Second

// stopGrace is how long Stop waits after QMP "quit" before SIGKILL.
const stopGrace = 2 * time.Second

// killWait bounds the wait for the kernel to reap a SIGKILLed qemu.
const killWait = 5 * time.Second

// VM is one running QEMU process. All methods are safe for concurrent use.
type VM struct {
	cfg    hypervisor.Config
	accel  hypervisor.Accel
	log    *slog.Logger
	layout layout
	proc   *os.Process
	pid    int

	done    chan struct{}
	exitErr error // written once before done is closed

	mu             sync.Mutex
	qmp            *qmpClient
	shutdownReason string
	cleanupMu      sync.Mutex

	// hpMu guards hot; it is never held across a QMP call (the QMP
	// reader takes it to deliver DEVICE_DELETED).
	hpMu sync.Mutex
	// hot[i] is the disk in hot-plug slot i (root port hp<i>), nil when
	// the slot is free. len(hot) == cfg.HotplugSlots.
	hot []*hotDisk
}

var _ hypervisor.VM = (*VM)(nil)

// Start launches QEMU for cfg and returns once QMP answers, so every socket
// in the state directory exists. ctx bounds only the start-up (default
// DefaultStartTimeout), not the VM's lifetime: use Stop or Kill for that.
//
// When Start fails nothing is left behind: the process is killed and the
// state directory removed, and the error quotes qemu's own message and the
// last console lines.
//
// The QEMU process is tied to the caller's process: it gets SIGKILL when the
// calling process dies (Pdeathsig, armed from an OS thread that stays alive
// until QEMU has been reaped) and runs in its own process group.
func Start(ctx context.Context, cfg hypervisor.Config, log *slog.Logger) (*VM, error) {
	if log == nil {
		log = slog.Default()
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("start vm: %w", err)
	}
	log = log.With("vm", cfg.ID)
	qemuBin, err := exec.LookPath(cfg.QEMUPath)
	if err != nil {
		return nil, fmt.Errorf("start vm %s: QEMU binary %q not found: %w (install qemu-system-x86 or set QEMUPath)", cfg.ID, cfg.QEMUPath, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}

	accel, err := chooseAccel(ctx, hypervisor.DetectOptions{
		Requested: cfg.Accel, Kernel: cfg.Kernel, QEMUPath: qemuBin, CacheDir: cfg.AccelCacheDir, Logger: log,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("start vm %s: %w", cfg.ID, err)
	}

	l, err := newLayout(cfg)
	if err != nil {
		return nil, fmt.Errorf("start vm: %w", err)
	}
	if err := prepareStateDir(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("start vm %s: %w", cfg.ID, err)
	}
	v := &VM{cfg: cfg, accel: accel, log: log, layout: l, done: make(chan struct{}), hot: make([]*hotDisk, cfg.HotplugSlots)}
	fail := func(err error) (*VM, error) {
		if cerr := v.Cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}

	qlog, err := os.OpenFile(l.qemuLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fail(fmt.Errorf("start vm %s: create qemu log: %w", cfg.ID, err))
	}
	args := buildArgs(cfg, accel, l)
	cmd := exec.Command(qemuBin, args...)
	cmd.Stdout, cmd.Stderr = qlog, qlog
	cmd.Dir = cfg.StateDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	log.Info("starting qemu", "accel", accel, "machine", cfg.MachineType, "memory_mib", cfg.MemoryMiB, "vcpus", cfg.VCPUs, "state_dir", cfg.StateDir)
	log.Debug("qemu command line", "cmd", shellQuote(append([]string{qemuBin}, args...)))

	started := make(chan error, 1)
	begin := time.Now()
	go v.run(cmd, started)
	err = <-started
	qlog.Close()
	if err != nil {
		close(v.done)
		return fail(fmt.Errorf("start vm %s: exec %s: %w", cfg.ID, qemuBin, err))
	}
	if err := v.connectQMP(ctx); err != nil {
		return fail(err)
	}
	log.Info("qemu started", "pid", v.pid, "accel", accel, "qmp_ready_after", time.Since(begin).Round(time.Millisecond))
	return v, nil
}

// chooseAccel decides the VM's accelerator (opts.Requested, else
// $COFFER_ACCEL, else detection: see hypervisor.DetectAccel) and logs the
// choice with its reason at Info, once per VM: `coffer --log-level info`
// shows it, the default (errors only) does not.
func chooseAccel(ctx context.Context, opts hypervisor.DetectOptions, log *slog.Logger) (hypervisor.Accel, error) {
	a, reason, err := hypervisor.DetectAccel(ctx, opts)
	if err != nil {
		return hypervisor.AccelAuto, err
	}
	log.Info("accelerator chosen", "accel", a, "reason", reason)
	return a, nil
}

// prepareStateDir creates dir, or accepts it when it exists empty.
func prepareStateDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case err == nil:
		if len(entries) > 0 {
			return fmt.Errorf("state directory %s is not empty (another VM, or left over from a crash?): remove it or pick a new one", dir)
		}
		return os.Chmod(dir, 0o700)
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create state directory: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
}

// run starts and reaps qemu. It runs on its own goroutine locked to its OS
// thread for the child's whole life: Pdeathsig fires when the thread that
// forked the child exits, and a locked goroutine keeps its thread alive. The
// thread exits with the goroutine (it is never unlocked), after the reap.
func (v *VM) run(cmd *exec.Cmd, started chan<- error) {
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		started <- err
		return
	}
	v.proc, v.pid = cmd.Process, cmd.Process.Pid
	started <- nil
	werr := cmd.Wait()

	// Let the QMP reader drain what qemu wrote before exiting (the
	// SHUTDOWN event says why it stopped).
	v.mu.Lock()
	q := v.qmp
	v.mu.Unlock()
	if q != nil {
		select {
		case <-q.readerDone:
		case <-time.After(time.Second):
			q.close()
		}
	}
	v.exitErr = v.exitError(werr)
	if v.exitErr != nil {
		v.log.Warn("qemu exited", "pid", v.pid, "err", v.exitErr)
	} else {
		v.log.Info("qemu exited", "pid", v.pid)
	}
	close(v.done)
}

// connectQMP waits for qemu's QMP socket to answer, qemu to exit, or ctx.
func (v *VM) connectQMP(ctx context.Context) error {
	onEvent := func(name string, data json.RawMessage) {
		v.log.Debug("qmp event", "event", name, "data", string(data))
		if name == "DEVICE_DELETED" {
			v.deviceDeleted(data)
		}
		if name == "SHUTDOWN" {
			var d struct {
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal(data, &d)
			v.mu.Lock()
			v.shutdownReason = d.Reason
			v.mu.Unlock()
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if _, err := os.Stat(v.layout.qmp); err == nil {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			q, err := dialQMP(dctx, v.layout.qmp, onEvent)
			cancel()
			if err == nil {
				v.mu.Lock()
				v.qmp = q
				v.mu.Unlock()
				// qemu may have died between the handshake and now; then
				// the reaper missed the client and the reader must end.
				select {
				case <-v.done:
					q.close()
				default:
				}
				return nil
			}
			lastErr = err
		}
		select {
		case <-v.done:
			status := "exit status 0"
			var xe *ExitError
			if errors.As(v.exitErr, &xe) {
				status = fmt.Sprintf("exit status %d", xe.ExitCode)
				if xe.Signal != 0 {
					status = "killed by signal " + xe.Signal.String()
				}
			}
			return fmt.Errorf("start vm %s: qemu exited during start-up (%s)%s", v.cfg.ID, status, v.diagnostics())
		case <-ctx.Done():
			v.Kill()
			v.waitDone(killWait)
			detail := ""
			if lastErr != nil {
				detail = fmt.Sprintf(" (last QMP error: %v)", lastErr)
			}
			return fmt.Errorf("start vm %s: QMP socket %s did not answer in time%s: %w%s", v.cfg.ID, v.layout.qmp, detail, ctx.Err(), v.diagnostics())
		case <-tick.C:
		}
	}
}

// diagnostics quotes qemu's log and the console tail for error messages.
func (v *VM) diagnostics() string {
	var b strings.Builder
	if out := strings.TrimSpace(tailFile(v.layout.qemuLog, 10)); out != "" {
		fmt.Fprintf(&b, "\nqemu says:\n%s", indent(out))
	}
	if con := strings.TrimSpace(v.ConsoleTail(10)); con != "" {
		fmt.Fprintf(&b, "\nlast console lines (%s):\n%s", v.layout.console, indent(con))
	}
	return b.String()
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// ExitError says why a VM ended other than by a clean guest poweroff or a
// QMP quit.
type ExitError struct {
	ID string
	// Reason is the QMP SHUTDOWN reason (guest-reset, guest-panic,
	// host-signal, ...) or "" when qemu did not report one.
	Reason string
	// ExitCode is qemu's exit status, -1 when a signal killed it.
	ExitCode int
	// Signal is the signal that killed qemu, if any.
	Signal syscall.Signal
	// Detail is the relevant output: qemu's log or the guest's panic line.
	Detail string
}

func (e *ExitError) Error() string {
	var msg string
	switch {
	case e.Signal != 0:
		msg = fmt.Sprintf("qemu was killed by signal %v", e.Signal)
	case e.ExitCode != 0:
		msg = fmt.Sprintf("qemu exited with status %d", e.ExitCode)
	case e.Reason == "guest-reset":
		msg = "the guest rebooted, which ends the VM (-no-reboot): usually a guest kernel panic with panic=-1, or init exiting"
	case e.Reason == "guest-panic":
		msg = "the guest kernel panicked"
	case e.Reason == "host-signal":
		msg = "qemu was told to terminate by a signal from the host"
	default:
		msg = "qemu shut down: " + e.Reason
	}
	msg = "vm " + e.ID + ": " + msg
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// exitError turns qemu's wait status and shutdown reason into ExitErr.
func (v *VM) exitError(werr error) error {
	v.mu.Lock()
	reason := v.shutdownReason
	v.mu.Unlock()
	e := &ExitError{ID: v.cfg.ID, Reason: reason}
	var xe *exec.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &xe):
		if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.ExitCode, e.Signal = -1, ws.Signal()
			return e
		}
		e.ExitCode = xe.ExitCode()
		e.Detail = strings.Join(strings.Fields(tailFile(v.layout.qemuLog, 3)), " ")
		return e
	default:
		e.ExitCode = -1
		e.Detail = werr.Error()
		return e
	}
	switch reason {
	case "", "guest-shutdown", "host-qmp-quit":
		return nil
	}
	if line := panicLine(v.ConsoleTail(200)); line != "" {
		e.Detail = line
	}
	return e
}

// panicLine returns the guest's "Kernel panic" console line, if any.
func panicLine(console string) string {
	for _, line := range strings.Split(console, "\n") {
		if i := strings.Index(line, "Kernel panic"); i >= 0 {
			return strings.TrimSpace(line[i:])
		}
	}
	return ""
}

// PID is the qemu process id.
func (v *VM) PID() int { return v.pid }

// Accel is the accelerator the VM runs with.
func (v *VM) Accel() hypervisor.Accel { return v.accel }

// Done is closed when the qemu process has exited and been reaped.
func (v *VM) Done() <-chan struct{} { return v.done }

// ExitErr says why qemu exited, once Done is closed (nil before): nil for a
// guest poweroff or a QMP quit, an *ExitError otherwise (kill, crash, guest
// reboot/panic).
func (v *VM) ExitErr() error {
	select {
	case <-v.done:
		return v.exitErr
	default:
		return nil
	}
}

// ShutdownReason is the reason of qemu's QMP SHUTDOWN event once Done is
// closed ("guest-shutdown", "host-qmp-quit", ...), "" if it sent none or
// is still running.
func (v *VM) ShutdownReason() string {
	select {
	case <-v.done:
	default:
		return ""
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.shutdownReason
}

// ConsoleLogPath is the file receiving the guest serial console.
func (v *VM) ConsoleLogPath() string { return v.layout.console }

// QMPSocketPath is qemu's QMP socket. The VM holds the one connection QEMU
// accepts; use VM.QMP rather than connecting to it.
func (v *VM) QMPSocketPath() string { return v.layout.qmp }

// PortPath returns the host socket or file of the virtio-serial port called
// name, or "" when there is no such port.
func (v *VM) PortPath(name string) string {
	for i, p := range v.cfg.Ports {
		if p.Name == name {
			return v.layout.ports[i]
		}
	}
	return ""
}

// QMP runs one QMP command (args may be nil) and returns its "return" value.
// QMP error answers come back as *QMPError.
func (v *VM) QMP(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	ret, err := v.qmpExec(ctx, cmd, args)
	if err != nil {
		return nil, fmt.Errorf("vm %s: %w", v.cfg.ID, err)
	}
	return ret, nil
}

// qmpExec is QMP without the "vm <id>:" prefix on errors, for callers that
// add their own.
func (v *VM) qmpExec(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	v.mu.Lock()
	q := v.qmp
	v.mu.Unlock()
	if q == nil {
		return nil, fmt.Errorf("qmp %s: not connected", cmd)
	}
	return q.execute(ctx, cmd, args)
}

// Stop shuts the VM down: QMP "quit", then SIGKILL if qemu has not exited
// within 2 s or by ctx's deadline, whichever is sooner; then Cleanup. It is
// idempotent and returns nil once qemu is gone and the state is removed,
// even when the kill was needed.
func (v *VM) Stop(ctx context.Context) error {
	select {
	case <-v.done:
		return v.Cleanup()
	default:
	}
	grace, cancel := context.WithTimeout(ctx, stopGrace)
	defer cancel()
	if _, err := v.QMP(grace, "quit", nil); err != nil && !errors.Is(err, errQMPClosed) {
		v.log.Debug("qmp quit failed; waiting, then killing", "err", err)
	}
	select {
	case <-v.done:
	case <-grace.Done():
		v.log.Warn("qemu did not quit in time; killing it", "pid", v.pid, "grace", stopGrace)
		v.Kill()
	}
	return v.Cleanup()
}

// Kill sends SIGKILL to qemu (and its process group) now, without waiting;
// Done closes once it is reaped. Killing an exited VM is a no-op.
func (v *VM) Kill() error {
	if v.proc == nil {
		return nil
	}
	select {
	case <-v.done:
		return nil
	default:
	}
	// The pidfd-backed Kill cannot hit a recycled pid; the group kill
	// catches any helper qemu spawned.
	err := v.proc.Kill()
	_ = syscall.Kill(-v.pid, syscall.SIGKILL)
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("vm %s: kill qemu pid %d: %w", v.cfg.ID, v.pid, err)
	}
	return nil
}

func (v *VM) waitDone(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-v.done:
		return true
	case <-t.C:
		return false
	}
}

// Cleanup removes the state directory (all of it, or everything but the
// logs with KeepLogs) and socket ports placed outside it. A VM still running
// is killed first. Cleanup is idempotent.
func (v *VM) Cleanup() error {
	select {
	case <-v.done:
	default:
		v.Kill()
		if !v.waitDone(killWait) {
			return fmt.Errorf("vm %s: qemu pid %d did not exit %s after SIGKILL; state directory %s left in place", v.cfg.ID, v.pid, killWait, v.cfg.StateDir)
		}
	}
	v.cleanupMu.Lock()
	defer v.cleanupMu.Unlock()
	v.mu.Lock()
	if v.qmp != nil {
		v.qmp.close()
	}
	v.mu.Unlock()

	var errs []error
	for i, p := range v.cfg.Ports {
		path := v.layout.ports[i]
		if p.Kind == hypervisor.PortSocket && !within(v.cfg.StateDir, path) {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if v.cfg.KeepLogs {
		entries, err := os.ReadDir(v.cfg.StateDir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		for _, e := range entries {
			p := filepath.Join(v.cfg.StateDir, e.Name())
			if p == v.layout.qemuLog || p == v.layout.console {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	} else if err := os.RemoveAll(v.cfg.StateDir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vm %s: clean up %s: %w", v.cfg.ID, v.cfg.StateDir, err)
	}
	return nil
}

func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// ConsoleTail returns the last n lines of the guest console ("" when there
// is none yet), with carriage returns removed.
func (v *VM) ConsoleTail(n int) string { return tailFile(v.layout.console, n) }

// tailFile returns the last n lines of a file, reading at most its last
// 64 KiB (more when n asks for many lines).
func tailFile(path string, n int) string {
	if n <= 0 {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	window := max(int64(64*1024), int64(n)*512)
	off := max(st.Size()-window, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return ""
	}
	s := strings.ReplaceAll(string(b), "\r", "")
	if off > 0 {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:] // drop the partial first line
		}
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

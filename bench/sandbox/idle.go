package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
	"github.com/coffer-project/coffer/bench/internal/floor"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/sandbox"
)

// idleResult is the host memory of one idle sandbox.
type idleResult struct {
	Name      string        `json:"name"`
	Accel     string        `json:"accel"`
	QEMUPID   int           `json:"qemu_pid"`
	OwnerPID  int           `json:"owner_pid"`
	QEMU      procMem       `json:"qemu"`
	QEMUSplit qemuMem       `json:"qemu_split"`
	Owner     procMem       `json:"owner"`
	Waited    time.Duration `json:"-"`
}

func (r *idleResult) totalPssMiB() float64 {
	return float64(r.QEMU.PssKiB+r.Owner.PssKiB) / 1024
}

// idleRow is one idle-memory measurement besides the main one: the
// coffer pod with transparent huge pages disabled for QEMU, and raw QEMU
// floors whose trivial init stays up (the memory the same kernel and VM
// size cost before coffer adds anything).
type idleRow struct {
	Case      string   `json:"case"`
	THPOff    bool     `json:"thp_disabled"`
	QEMU      procMem  `json:"qemu"`
	QEMUSplit qemuMem  `json:"qemu_split"`
	Owner     *procMem `json:"owner,omitempty"`
}

func (r *idleRow) totalPssMiB() float64 {
	t := r.QEMU.PssKiB
	if r.Owner != nil {
		t += r.Owner.PssKiB
	}
	return float64(t) / 1024
}

// withTHPDisabled runs f with transparent huge pages disabled for this
// process (PR_SET_THP_DISABLE), which every process it starts meanwhile
// inherits, QEMU included; the host-wide setting is left alone.
func withTHPDisabled(disabled bool, f func()) error {
	if !disabled {
		f()
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("disable transparent huge pages (prctl): %w", err)
	}
	defer func() { _ = unix.Prctl(unix.PR_SET_THP_DISABLE, 0, 0, 0, 0) }()
	f()
	return nil
}

const idleName = "bench-idle"

// idleMemory starts a detached pod running `sleep 600`, waits, reads the
// PSS of its QEMU and of its owner (the detached coffer process) and
// removes the pod.
func (b *bench) idleMemory(ctx context.Context) (*idleResult, error) {
	b.idleStarted = true
	cmd := exec.CommandContext(ctx, b.coffer, "run", "-d", "--name", idleName, "--guest-dir", b.guestDir,
		"--rootfs", b.busybox, "--", "sleep", "600")
	cmd.Env = b.env()
	out := benchutil.NewTail()
	cmd.Stdout, cmd.Stderr = out, out
	if _, _, err := benchutil.Timed(cmd, syscall.SIGTERM); err != nil {
		return nil, benchutil.CmdError("coffer run -d", err, out)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		b.removeIdle(rctx)
	}()
	dir := sandbox.PodDir(b.rt, idleName)
	st, err := sandbox.ReadState(dir)
	if err != nil {
		return nil, fmt.Errorf("read the idle pod's state: %w", err)
	}
	if st.Status != sandbox.StatusRunning || st.QEMUPID == 0 || st.OwnerPID == 0 {
		return nil, fmt.Errorf("the idle pod is %s (qemu_pid %d, owner_pid %d), want running", st.Status, st.QEMUPID, st.OwnerPID)
	}
	if err := sleepCtx(ctx, b.opts.idleWait); err != nil {
		return nil, err
	}
	if st2, err := sandbox.ReadState(dir); err != nil || st2.EffectiveStatus() != sandbox.StatusRunning {
		return nil, fmt.Errorf("the idle pod stopped during the wait (err %v)", err)
	}
	r := &idleResult{Name: idleName, Accel: st.Accel, QEMUPID: st.QEMUPID, OwnerPID: st.OwnerPID, Waited: b.opts.idleWait}
	if r.QEMU, r.QEMUSplit, err = readQEMUMem(st.QEMUPID, hypervisor.DefaultMemoryMiB); err != nil {
		return nil, err
	}
	if r.Owner, err = readRollup(st.OwnerPID); err != nil {
		return nil, err
	}
	return r, nil
}

// removeIdle removes the idle pod (coffer rm -f), once.
func (b *bench) removeIdle(ctx context.Context) {
	if !b.idleStarted {
		return
	}
	b.idleStarted = false
	cmd := exec.CommandContext(ctx, b.coffer, "rm", "-f", idleName)
	cmd.Env = b.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		if _, serr := os.Stat(sandbox.PodDir(b.rt, idleName)); serr == nil {
			b.logf("coffer rm -f %s: %v: %s", idleName, err, strings.TrimSpace(string(out)))
		}
	}
}

// rawIdle boots the raw floor VM with an init that stays up, waits as
// long as for the pod, reads QEMU's PSS and kills it.
func (b *bench) rawIdle(ctx context.Context, label, initrd string) (*idleRow, error) {
	dir, err := os.MkdirTemp(b.tmp, "raw-idle-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	console := filepath.Join(dir, "console.log")
	args := b.floorVM().Args(initrd, console)
	for i := range args {
		if i > 0 && args[i-1] == "-append" {
			args[i] += " benchidle=1"
		}
	}
	out := benchutil.NewTail()
	cmd := exec.Command(b.qemu, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start raw qemu: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	deadline := time.Now().Add(b.opts.runTimeout)
	for {
		con, _ := os.ReadFile(console)
		if _, ok := floor.ParseInitMarker(string(con)); ok {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			return nil, benchutil.CmdError("raw qemu (idle) exited before its init ran", errors.Join(err, errors.New("exited")), out)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("raw qemu (idle): the trivial init did not run within %s", b.opts.runTimeout)
		}
	}
	if err := sleepCtx(ctx, b.opts.idleWait); err != nil {
		return nil, err
	}
	r := &idleRow{Case: label}
	if r.QEMU, r.QEMUSplit, err = readQEMUMem(cmd.Process.Pid, hypervisor.DefaultMemoryMiB); err != nil {
		return nil, err
	}
	return r, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

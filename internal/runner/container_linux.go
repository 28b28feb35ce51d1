package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coffer-project/coffer/internal/runner/nsenter"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Runner creates containers below one cgroup parent.
type Runner struct {
	CgroupParent string
	// CgroupReady, if set, blocks until CgroupParent is set up (the agent
	// prepares it in the background while the host connects).
	CgroupReady func(ctx context.Context) error
	Reaper      *Reaper
	Log         *slog.Logger
	// Self is the binary to re-execute as the init stage
	// (default /proc/self/exe).
	Self string
	// GoStage starts containers through the Go init stage even where the
	// C stage could (for comparison and debugging).
	GoStage bool
}

// Stdio holds the child's ends of the stdio pipes of a non-terminal
// process; nil members become /dev/null.
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// Process is a started container or exec process.
type Process struct {
	Pid int
	// Console is the pty master of a terminal process (nil otherwise).
	Console *os.File
	// Stage is where the init/exec stage spent its time, for the log.
	Stage StageTimes

	done chan struct{}
	exit Exit

	// pidfd names the process for as long as it is not reaped (-1 after):
	// execs join the container's namespaces through a copy of the init's
	// (dupPidfd), never through its pid, which could be reused.
	pidfdMu sync.Mutex
	pidfd   int
}

// StageTimes splits a stage's start: spawn until its main runs (exec and
// Go runtime start), reading its config, preparing the rootfs (init only),
// and the rest until it reported ready. Zero when unknown. For the C stage
// (C set) Start is the fork, Rootfs the agent's preparation on its thread
// and Ready the stage's own work.
type StageTimes struct {
	Start, Config, Rootfs, Ready time.Duration
	C                            bool
}

func stageTimes(spawn int64, marks []int64) StageTimes {
	if spawn == 0 || len(marks) != 4 {
		return StageTimes{}
	}
	d := func(a, b int64) time.Duration { return time.Duration(b - a) }
	return StageTimes{Start: d(spawn, marks[0]), Config: d(marks[0], marks[1]), Rootfs: d(marks[1], marks[2]), Ready: d(marks[2], marks[3])}
}

// newProcess tracks a forked stage: pid, its pidfd (owned from now on,
// closed once the process is reaped) and the reaper's exit channel.
func newProcess(pid, pidfd int, exit <-chan Exit) *Process {
	p := &Process{Pid: pid, pidfd: pidfd, done: make(chan struct{})}
	go func() {
		p.exit = <-exit
		p.pidfdMu.Lock()
		if p.pidfd >= 0 {
			unix.Close(p.pidfd)
			p.pidfd = -1
		}
		p.pidfdMu.Unlock()
		close(p.done)
	}()
	return p
}

// signal sends sig through the process's pidfd: never to another process
// that reused its pid. Once the process was reaped it does nothing.
func (p *Process) signal(sig unix.Signal) error {
	p.pidfdMu.Lock()
	defer p.pidfdMu.Unlock()
	if p.pidfd < 0 {
		return nil
	}
	if err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0); err != nil && err != unix.ESRCH {
		return err
	}
	return nil
}

// errExited is dupPidfd's error once the process was reaped.
var errExited = errors.New("the process has exited")

// dupPidfd returns a new descriptor for the process's pidfd (the caller
// closes it), or errExited once it was reaped. The copy keeps naming this
// process even after it dies: a setns through it then fails.
func (p *Process) dupPidfd() (int, error) {
	p.pidfdMu.Lock()
	defer p.pidfdMu.Unlock()
	if p.pidfd < 0 {
		return -1, errExited
	}
	fd, err := unix.FcntlInt(uintptr(p.pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("duplicate a pidfd: %w", err)
	}
	return fd, nil
}

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitStatus is how the process ended; valid once Done is closed.
func (p *Process) ExitStatus() Exit {
	<-p.done
	return p.exit
}

// Container is a container created in the guest.
type Container struct {
	ID     string
	Spec   *specs.Spec
	Rootfs string
	Cgroup *Cgroup
	Init   *Process

	r    *Runner
	mu   sync.Mutex
	sync *syncConn // open between Create and Start
}

func (r *Runner) self() string {
	if r.Self != "" {
		return r.Self
	}
	return "/proc/self/exe"
}

func validateProcess(p *specs.Process) error {
	if p == nil {
		return errors.New("the spec has no process")
	}
	if len(p.Args) == 0 {
		return errors.New("the process has no command (args are empty)")
	}
	if err := validateCaps(p.Capabilities); err != nil {
		return err
	}
	return validateRlimits(p.Rlimits)
}

// Create starts the container's init stage with its namespaces, cgroup and
// rootfs ready, stopped just before exec. Start runs it. On error nothing
// is left behind (process, cgroup).
func (r *Runner) Create(ctx context.Context, id string, spec *specs.Spec, rootfs string, stdio Stdio) (_ *Container, err error) {
	if err := validateProcess(spec.Process); err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	var res *specs.LinuxResources
	if spec.Linux != nil {
		res = spec.Linux.Resources
	}
	if r.CgroupReady != nil {
		if err := r.CgroupReady(ctx); err != nil {
			return nil, fmt.Errorf("container %s: %w", id, err)
		}
	}
	cg, err := NewCgroup(r.CgroupParent, id, res)
	if err != nil {
		return nil, err
	}
	c := &Container{ID: id, Spec: spec, Rootfs: rootfs, Cgroup: cg, r: r}
	defer func() {
		if err != nil {
			c.destroy()
		}
	}()
	flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWCGROUP)
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace && ns.Path == "" {
				flags |= unix.CLONE_NEWNET
			}
		}
	}
	var proc *Process
	var sc *syncConn
	if r.cStageFits(spec) {
		proc, sc, err = r.spawnC(ctx, cg, stdio, flags, spec, rootfs)
	} else {
		proc, sc, err = r.spawn(ctx, cg, stdio, spec.Process.Terminal, flags, nil, &initConfig{Mode: "init", Spec: spec, Rootfs: rootfs})
	}
	if err != nil {
		return nil, err
	}
	c.Init = proc
	c.sync = sc
	return c, nil
}

// Start lets the init process exec the container command.
func (c *Container) Start(ctx context.Context) error {
	c.mu.Lock()
	sc := c.sync
	c.sync = nil
	c.mu.Unlock()
	if sc == nil {
		return fmt.Errorf("container %s was already started", c.ID)
	}
	defer sc.Close()
	if err := sc.send(syncMsg{Type: "start"}, -1); err != nil {
		return fmt.Errorf("start container %s: the init process is gone: %w", c.ID, err)
	}
	return waitExec(ctx, sc, c.ID)
}

// waitExec waits for the stage to exec (its end of the socket closes) or to
// report an error.
func waitExec(ctx context.Context, sc *syncConn, id string) error {
	var m syncMsg
	_, err := sc.recv(ctx, &m)
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("container %s: waiting for the process to start: %w", id, err)
	case m.Type == "error":
		return &errStage{msg: m.Error}
	default:
		return fmt.Errorf("container %s: unexpected %q from the init stage", id, m.Type)
	}
}

// Exec starts a new process inside the running container.
func (c *Container) Exec(ctx context.Context, p *specs.Process, stdio Stdio) (*Process, error) {
	if err := validateProcess(p); err != nil {
		return nil, fmt.Errorf("exec in container %s: %w", c.ID, err)
	}
	var proc *Process
	var sc *syncConn
	var err error
	if c.r.useCStage() {
		proc, sc, err = c.r.spawnCExec(ctx, c, p, stdio)
	} else {
		proc, sc, err = c.r.spawn(ctx, c.Cgroup, stdio, p.Terminal, 0, c.Init, &initConfig{Mode: "exec", Process: p})
	}
	if err != nil {
		return nil, err
	}
	defer sc.Close()
	if err := waitExec(ctx, sc, c.ID); err != nil {
		_ = proc.signal(unix.SIGKILL)
		<-proc.Done()
		if proc.Console != nil {
			proc.Console.Close()
		}
		return nil, err
	}
	return proc, nil
}

// forkStage forks a stage process with its sync socket on fd 3, stdio,
// clone flags and the container's cgroup; start does the fork with the
// attributes it is given (argv and environment are its choice; more
// inherited files go after the sync socket). The process keeps a pidfd of
// the child until it is reaped (Process.dupPidfd).
func (r *Runner) forkStage(cg *Cgroup, stdio Stdio, terminal bool, cloneflags uintptr, start func(attr *os.ProcAttr) (*os.Process, error)) (*Process, *syncConn, error) {
	sc, child, err := newSyncPair()
	if err != nil {
		return nil, nil, err
	}
	defer child.Close()
	cgfd, err := cg.Open()
	if err != nil {
		sc.Close()
		return nil, nil, err
	}
	defer cgfd.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		sc.Close()
		return nil, nil, err
	}
	defer devnull.Close()
	orNull := func(f *os.File) *os.File {
		if f == nil || terminal {
			return devnull
		}
		return f
	}
	attr := &os.ProcAttr{
		Dir:   "/",
		Env:   []string{},
		Files: []*os.File{orNull(stdio.Stdin), orNull(stdio.Stdout), orNull(stdio.Stderr), child},
		Sys: &syscall.SysProcAttr{
			Cloneflags:  cloneflags,
			Setsid:      !terminal, // a terminal process gets its session from the stage
			UseCgroupFD: true,
			CgroupFD:    int(cgfd.Fd()),
		},
	}
	pidfd := -1
	attr.Sys.PidFD = &pidfd
	pid, exit, err := r.Reaper.Start(func() (int, error) {
		proc, err := start(attr)
		if err != nil {
			return 0, err
		}
		pid := proc.Pid
		_ = proc.Release()
		return pid, nil
	})
	if err != nil {
		sc.Close()
		return nil, nil, err
	}
	if pidfd < 0 { // clone3, which CLONE_INTO_CGROUP needs, always gives one
		_ = unix.Kill(pid, unix.SIGKILL)
		<-exit
		sc.Close()
		return nil, nil, errors.New("start the container stage: the kernel returned no pidfd")
	}
	return newProcess(pid, pidfd, exit), sc, nil
}

// abort kills a stage that failed before it ran the command and releases
// what the agent holds for it; it returns err.
func (p *Process) abort(sc *syncConn, err error) (*Process, *syncConn, error) {
	_ = p.signal(unix.SIGKILL)
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
	}
	if p.Console != nil {
		p.Console.Close()
	}
	sc.Close()
	return nil, nil, err
}

// spawn forks the init/exec stage. With join set (an exec), the child is
// born in the pid namespace of join's process and the nsenter constructor
// joins the rest.
func (r *Runner) spawn(ctx context.Context, cg *Cgroup, stdio Stdio, terminal bool, cloneflags uintptr, join *Process, cfg *initConfig) (*Process, *syncConn, error) {
	spawn := monoNow()
	p, sc, err := r.forkStage(cg, stdio, terminal, cloneflags, func(attr *os.ProcAttr) (*os.Process, error) {
		if join != nil {
			return startJoined(join, r.self(), []string{"coffer-agent", InitArg, "exec"}, attr)
		}
		return os.StartProcess(r.self(), []string{"coffer-agent", InitArg, cfg.Mode}, attr)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("start container %s stage: %w", cfg.Mode, err)
	}
	fail := func(err error) (*Process, *syncConn, error) { return p.abort(sc, err) }
	if err := sc.send(cfg, -1); err != nil {
		return fail(fmt.Errorf("send config to the container %s stage: %w", cfg.Mode, err))
	}
	for {
		var m syncMsg
		fd, err := sc.recv(ctx, &m)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the init stage exited before it was ready (see the agent log)")
			}
			return fail(fmt.Errorf("prepare container %s: %w", cfg.Mode, err))
		}
		switch m.Type {
		case "console":
			if fd == nil {
				return fail(errors.New("the init stage sent no pty master"))
			}
			p.Console = fd
		case "ready":
			if terminal && p.Console == nil {
				return fail(errors.New("the init stage sent no pty master"))
			}
			p.Stage = stageTimes(spawn, m.Marks)
			return p, sc, nil
		case "error":
			return fail(&errStage{msg: m.Error})
		default:
			return fail(fmt.Errorf("unexpected %q from the init stage", m.Type))
		}
	}
}

// startJoined starts a stage in the namespaces of process join (the
// container's init) through a copy of its pidfd: the child is forked
// from a thread that joined join's pid namespace, and inherits the pidfd
// for the nsenter constructor, which joins the other namespaces before
// anything else runs. If join has exited, nothing starts.
func startJoined(join *Process, self string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	fd, err := join.dupPidfd()
	if err != nil {
		return nil, fmt.Errorf("join the container: its init: %w", err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	attr.Files = append(attr.Files, pidfd)
	attr.Env = append(attr.Env, nsenter.EnvFD+"="+strconv.Itoa(len(attr.Files)-1))
	type result struct {
		p   *os.Process
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Setns(fd, unix.CLONE_NEWPID); err != nil {
			ch <- result{err: fmt.Errorf("join the pid namespace of the container's init: %w", err)}
			return
		}
		p, err := os.StartProcess(self, argv, attr)
		ch <- result{p, err}
	}()
	res := <-ch
	return res.p, res.err
}

// Signal sends sig to the init process, or with all to every process of
// the container.
func (c *Container) Signal(sig unix.Signal, all bool) error {
	if !all {
		if err := c.Init.signal(sig); err != nil {
			return fmt.Errorf("signal %v to container %s: %w", sig, c.ID, err)
		}
		return nil
	}
	if sig == unix.SIGKILL {
		return c.Cgroup.Kill()
	}
	pids, err := c.Cgroup.Pids()
	if err != nil {
		return err
	}
	for _, p := range pids {
		_ = unix.Kill(p, sig)
	}
	return nil
}

// Destroy kills everything in the container and removes its cgroup.
func (c *Container) Destroy(ctx context.Context) error {
	c.mu.Lock()
	if c.sync != nil {
		c.sync.Close()
		c.sync = nil
	}
	c.mu.Unlock()
	_ = c.Cgroup.Kill()
	if c.Init != nil {
		select {
		case <-c.Init.Done():
		case <-ctx.Done():
		}
		if c.Init.Console != nil {
			c.Init.Console.Close()
		}
	}
	return c.Cgroup.Remove(ctx)
}

// destroy is Destroy for a half-created container.
func (c *Container) destroy() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Destroy(ctx); err != nil && c.r.Log != nil {
		c.r.Log.Warn("clean up failed container", "id", c.ID, "err", err)
	}
}

package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-project/coffer/internal/runner/cstage"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The C init stage (package cstage) starts a container without a second Go
// runtime. The agent forks the stage into the container's new namespaces
// and cgroup; the stage's C constructor blocks on the sync socket before Go
// would start. A goroutine of the agent, locked to an OS thread that then
// joins the child's mount, ipc, uts, cgroup (and net) namespaces, prepares
// everything a pid-1 of the container does not have to do itself: hostname,
// sysctls, the spec's mounts, /dev, pivot_root (which moves the waiting
// child's root too: it is in that mount namespace), masked and read-only
// paths, the terminal, the command's path and working directory. The
// stage mounts the proc filesystems (a procfs belongs to the pid namespace
// of its mounter), then sets up its terminal, rlimits, credentials and
// capabilities and execs. The thread never returns to the Go scheduler's
// pool: its goroutine exits locked, so the runtime discards it.

// maxCList bounds the args, env entries and groups of a C stage process
// (MAX_LIST in the C code), maxCRlimits its rlimits (MAX_RLIMITS).
const (
	maxCList    = 4096
	maxCRlimits = 64
)

// procMount is a proc filesystem the C stage mounts; Dest is the path in
// the container (after pivot_root).
type procMount struct {
	Dest  string
	Flags uintptr
	Data  string
}

// useCStage reports whether this agent starts processes through the C
// stage at all: it needs cgo, and GoStage turns it off.
func (r *Runner) useCStage() bool { return cstage.Available && !r.GoStage }

// cStageFits reports whether spec can use the C stage: it needs cgo in the
// agent, and proc mounts that nothing else is mounted below or over (they
// are mounted after every other mount, by the stage).
func (r *Runner) cStageFits(spec *specs.Spec) bool {
	if !r.useCStage() {
		return false
	}
	var procs []string
	within := func(path, dir string) bool {
		return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
	}
	for _, m := range spec.Mounts {
		dest := filepath.Clean("/" + m.Destination)
		for _, p := range procs {
			// A later mount below, over or above a proc mount would
			// stack differently once proc is mounted last.
			if within(dest, p) || within(p, dest) {
				return false
			}
		}
		if m.Type == "proc" {
			if _, prop, _ := parseMountOptions(m.Options); len(prop) > 0 {
				return false
			}
			procs = append(procs, dest)
		}
	}
	return true
}

// appendStrings adds NUL-terminated strings to a C stage message; what
// names them in the error for a string that holds a NUL itself.
func appendStrings(b []byte, what string, ss ...string) ([]byte, error) {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return nil, fmt.Errorf("%s %q contains a NUL byte", what, s)
		}
		b = append(append(b, s...), 0)
	}
	return b, nil
}

// encodeProcMounts is the "P" message: destination, flags, data per mount.
func encodeProcMounts(ms []procMount) ([]byte, error) {
	b := []byte{'P'}
	var err error
	for _, m := range ms {
		if b, err = appendStrings(b, "proc mount", m.Dest, strconv.FormatUint(uint64(m.Flags), 10), m.Data); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// cProcess is what the "F" message tells the stage beyond the spec's
// process: the resolved command path and whether to wait for "start".
type cProcess struct {
	Path, Cwd string
	Wait, TTY bool
}

// encodeCProcess is the "F" message for p.
func encodeCProcess(p *specs.Process, cp cProcess) ([]byte, error) {
	if len(p.Args) > maxCList || len(p.Env) > maxCList || len(p.User.AdditionalGids) > maxCList {
		return nil, fmt.Errorf("the process has more than %d args, environment variables or groups", maxCList)
	}
	if len(p.Rlimits) > maxCRlimits {
		return nil, fmt.Errorf("the process has %d rlimits; at most %d are supported", len(p.Rlimits), maxCRlimits)
	}
	if p.User.UID == ^uint32(0) || p.User.GID == ^uint32(0) {
		return nil, errors.New("uid and gid 4294967295 are not valid users")
	}
	b := []byte{'F'}
	var err error
	add := func(tag, v string) {
		if err == nil {
			b, err = appendStrings(b, tag, tag, v)
		}
	}
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	add("path", cp.Path)
	for _, a := range p.Args {
		add("arg", a)
	}
	for _, e := range p.Env {
		add("env", e)
	}
	add("cwd", cp.Cwd)
	add("uid", u(uint64(p.User.UID)))
	add("gid", u(uint64(p.User.GID)))
	for _, g := range p.User.AdditionalGids {
		add("group", u(uint64(g)))
	}
	for _, rl := range p.Rlimits {
		res, ok := rlimitNames[rl.Type]
		if !ok {
			return nil, fmt.Errorf("unknown rlimit %q", rl.Type)
		}
		add("rlimit", u(uint64(res))+" "+u(rl.Soft)+" "+u(rl.Hard))
	}
	if c := p.Capabilities; c != nil {
		for _, s := range []struct {
			tag   string
			names []string
		}{{"capb", c.Bounding}, {"cape", c.Effective}, {"capp", c.Permitted}, {"capi", c.Inheritable}, {"capa", c.Ambient}} {
			set, perr := parseCaps(s.names)
			if perr != nil {
				return nil, perr
			}
			add(s.tag, u(uint64(set)))
		}
	}
	if p.OOMScoreAdj != nil {
		add("oom", strconv.Itoa(*p.OOMScoreAdj))
	}
	if p.NoNewPrivileges {
		add("nnp", "1")
	}
	if cp.Wait {
		add("wait", "1")
	}
	if cp.TTY {
		add("tty", "1")
	}
	if err != nil {
		return nil, err
	}
	if len(b) >= maxSyncMsg {
		return nil, fmt.Errorf("the process (args and environment) is over %d bytes", maxSyncMsg)
	}
	return b, nil
}

// spawnC starts a container's init through the C stage: the counterpart
// of spawn for mode "init".
func (r *Runner) spawnC(ctx context.Context, cg *Cgroup, stdio Stdio, cloneflags uintptr, spec *specs.Spec, rootfs string) (*Process, *syncConn, error) {
	return r.spawnCStage(ctx, cg, stdio, spec.Process.Terminal, cloneflags,
		func(attr *os.ProcAttr) (*os.Process, error) {
			return os.StartProcess(r.self(), []string{"coffer-agent", cstage.Arg}, attr)
		},
		func(pidfd int, sc *syncConn) (*os.File, error) {
			// The thread gets its own copy: it may outlive this call
			// (ctx) and must not setns through a closed, reused number.
			dup, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("duplicate the stage's pidfd: %w", err)
			}
			return onLockedThread(ctx, func() (*os.File, error) {
				defer unix.Close(dup)
				return prepareOnThread(ctx, dup, cloneflags, spec, rootfs, sc)
			})
		})
}

// spawnCExec starts an exec process in container c through the C stage:
// the child is born in the container's pid namespace and joins the rest
// in the nsenter constructor, which runs before the C stage's; all
// through the init's pidfd (startJoined).
func (r *Runner) spawnCExec(ctx context.Context, c *Container, p *specs.Process, stdio Stdio) (*Process, *syncConn, error) {
	return r.spawnCStage(ctx, c.Cgroup, stdio, p.Terminal, 0,
		func(attr *os.ProcAttr) (*os.Process, error) {
			return startJoined(c.Init, r.self(), []string{"coffer-agent", cstage.Arg}, attr)
		},
		func(_ int, sc *syncConn) (*os.File, error) {
			fd, err := c.Init.dupPidfd()
			if err != nil {
				return nil, fmt.Errorf("join the container: its init: %w", err)
			}
			return onLockedThread(ctx, func() (*os.File, error) {
				defer unix.Close(fd)
				return prepareExecOnThread(fd, p, sc)
			})
		})
}

// spawnCStage forks a C stage with start, lets prepare (the agent's part,
// given the child's pidfd) send it its messages, and waits for "ready".
func (r *Runner) spawnCStage(ctx context.Context, cg *Cgroup, stdio Stdio, terminal bool, cloneflags uintptr,
	start func(attr *os.ProcAttr) (*os.Process, error), prepare func(pidfd int, sc *syncConn) (*os.File, error)) (*Process, *syncConn, error) {
	spawn := time.Now()
	p, sc, err := r.forkStage(cg, stdio, terminal, cloneflags, start)
	if err != nil {
		return nil, nil, fmt.Errorf("start the container stage: %w", err)
	}
	fail := func(err error) (*Process, *syncConn, error) { return p.abort(sc, err) }
	pidfd, err := p.dupPidfd()
	if err != nil {
		return fail(fmt.Errorf("start the container stage: %w", err))
	}
	defer unix.Close(pidfd)
	forked := time.Now()
	// Nothing is resolved in the container before the stage is in all of
	// its namespaces (see the C code).
	if err := expect(ctx, sc, "joined"); err != nil {
		return fail(err)
	}
	master, err := prepare(pidfd, sc)
	if master != nil {
		p.Console = master
	}
	if err != nil {
		return fail(err)
	}
	prepared := time.Now()
	if err := expect(ctx, sc, "ready"); err != nil {
		return fail(err)
	}
	p.Stage = StageTimes{Start: forked.Sub(spawn), Rootfs: prepared.Sub(forked), Ready: time.Since(prepared), C: true}
	return p, sc, nil
}

// joinStageNamespaces moves the calling thread into the stage's ipc, uts,
// cgroup, (net) and mount namespaces in one setns, through the stage's
// pidfd: it cannot name another process even if the stage died and its
// pid was reused.
func joinStageNamespaces(pidfd int, cloneflags uintptr) error {
	flags := unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWNS
	if cloneflags&unix.CLONE_NEWNET != 0 {
		flags |= unix.CLONE_NEWNET
	}
	if err := unix.Setns(pidfd, flags); err != nil {
		return fmt.Errorf("join the namespaces of the init stage: %w", err)
	}
	return nil
}

// expect reads the stage's next message, which must be of type want; an
// "error" message becomes a stage error.
func expect(ctx context.Context, sc *syncConn, want string) error {
	var m syncMsg
	if _, err := sc.recv(ctx, &m); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("the container stage exited before it was ready (see the agent log)")
		}
		return fmt.Errorf("prepare the container process: %w", err)
	}
	switch m.Type {
	case want:
		return nil
	case "error":
		return &errStage{msg: m.Error}
	default:
		return fmt.Errorf("unexpected %q from the container stage (want %q)", m.Type, want)
	}
}

// onLockedThread runs f on a goroutine locked to a thread that is never
// unlocked: f changes the thread's namespaces and root, so the thread
// must die with the goroutine rather than run other goroutines.
//
// If ctx ends first (a filesystem in the container that hangs), the caller
// gets ctx's error and kills the stage; the thread finishes on its own and
// closes the terminal it may have opened.
func onLockedThread(ctx context.Context, f func() (*os.File, error)) (*os.File, error) {
	type result struct {
		master *os.File
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		master, err := f()
		ch <- result{master, err}
	}()
	select {
	case res := <-ch:
		return res.master, res.err
	case <-ctx.Done():
		go func() {
			if res := <-ch; res.master != nil {
				res.master.Close()
			}
		}()
		return nil, fmt.Errorf("prepare the container process: %w", ctx.Err())
	}
}

// prepareExecOnThread is the agent's part of an exec through the C stage,
// on a locked thread in the container's mount namespace: the terminal in
// the container's devpts, the command's path and the working directory.
func prepareExecOnThread(initPidfd int, p *specs.Process, sc *syncConn) (master *os.File, err error) {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("unshare the filesystem context: %w", err)
	}
	if err := unix.Setns(initPidfd, unix.CLONE_NEWNS); err != nil {
		return nil, fmt.Errorf("join the mount namespace of the container's init: %w", err)
	}
	return sendProcess(p, sc, false)
}

// prepareOnThread does the agent's part of a container start through the
// C stage on a locked OS thread that joins the child's namespaces (see
// above) and sends the stage its two messages. It returns the pty master
// of a terminal process.
func prepareOnThread(ctx context.Context, pidfd int, cloneflags uintptr, spec *specs.Spec, rootfs string, sc *syncConn) (master *os.File, err error) {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("unshare the filesystem context: %w", err)
	}
	if err := joinStageNamespaces(pidfd, cloneflags); err != nil {
		return nil, err
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return nil, &errStage{msg: fmt.Sprintf("set hostname %q: %v", spec.Hostname, err)}
		}
	}
	if spec.Linux != nil {
		if err := applySysctls(spec.Linux.Sysctl); err != nil {
			return nil, &errStage{msg: err.Error()}
		}
	}
	procs, err := mountAndPivot(spec, rootfs, true)
	if err != nil {
		return nil, &errStage{msg: err.Error()}
	}
	if len(procs) > 0 {
		msg, err := encodeProcMounts(procs)
		if err != nil {
			return nil, err
		}
		if err := sc.sendRaw(msg, -1); err != nil {
			return nil, fmt.Errorf("send proc mounts to the init stage: %w", err)
		}
		if err := expect(ctx, sc, "mounted"); err != nil {
			return nil, err
		}
	}
	if err := finishRootfs(spec); err != nil {
		return nil, &errStage{msg: err.Error()}
	}
	return sendProcess(spec.Process, sc, true)
}

// sendProcess opens the terminal (in the caller's mount namespace),
// resolves the command and creates the working directory as the container
// sees them, and sends the "F" message. init: the container's init (wait
// for "start"; its terminal becomes /dev/console).
func sendProcess(p *specs.Process, sc *syncConn, init bool) (master *os.File, err error) {
	var slave *os.File
	if p.Terminal {
		master, slave, err = openConsole(init, p.ConsoleSize)
		if err != nil {
			return nil, &errStage{msg: err.Error()}
		}
		defer slave.Close()
	}
	path, cwd, err := resolveCommand(p)
	if err != nil {
		return master, &errStage{msg: err.Error()}
	}
	msg, err := encodeCProcess(p, cProcess{Path: path, Cwd: cwd, Wait: init, TTY: p.Terminal})
	if err != nil {
		return master, &errStage{msg: err.Error()}
	}
	fd := -1
	if slave != nil {
		fd = int(slave.Fd())
	}
	if err := sc.sendRaw(msg, fd); err != nil {
		return master, fmt.Errorf("send the process to the container stage: %w", err)
	}
	return master, nil
}

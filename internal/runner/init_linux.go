package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/coffer-project/coffer/internal/runner/nsenter"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func init() {
	// The init stage changes per-thread state (capabilities, credentials)
	// and then execve()s from the same thread: keep main on one thread.
	if IsInit() {
		runtime.LockOSThread()
	}
}

// IsInit reports whether this process was started as the init/exec stage.
func IsInit() bool { return len(os.Args) > 1 && os.Args[1] == InitArg }

// RunInit is the body of the init / exec stage. It never returns: it either
// execs the container process or exits non-zero after reporting the error
// to the agent over fd 3.
func RunInit() {
	marks := []int64{monoNow()}
	sync, err := fileSyncConn(os.NewFile(3, "sync"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "coffer-init: %v\n", err)
		os.Exit(120)
	}
	var cfg initConfig
	if _, err := sync.recv(context.Background(), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "coffer-init: read config: %v\n", err)
		os.Exit(120)
	}
	marks = append(marks, monoNow())
	err = runStage(sync, &cfg, marks)
	// Only reached on failure.
	_ = sync.send(syncMsg{Type: "error", Error: err.Error()}, -1)
	os.Exit(127)
}

func runStage(sync *syncConn, cfg *initConfig, marks []int64) error {
	if os.Getenv(nsenter.EnvFD) != "" {
		// The nsenter constructor should have joined the container and
		// cleared it: never run an exec outside the container.
		return errors.New("the container's namespaces were not joined (the nsenter constructor did not run)")
	}
	p := cfg.Process
	if cfg.Mode == "init" && cfg.Spec != nil {
		p = cfg.Spec.Process // sent once, inside the spec
	}
	if p == nil || len(p.Args) == 0 {
		return errors.New("no process to run: the process args are empty")
	}
	if cfg.Mode == "init" {
		spec := cfg.Spec
		if spec.Hostname != "" {
			if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
				return fmt.Errorf("set hostname %q: %w", spec.Hostname, err)
			}
		}
		if spec.Linux != nil {
			if err := applySysctls(spec.Linux.Sysctl); err != nil {
				return err
			}
		}
		if err := prepareRootfs(spec, cfg.Rootfs); err != nil {
			return err
		}
	}
	marks = append(marks, monoNow())
	if p.Terminal {
		if err := setupConsole(sync, cfg.Mode == "init", p.ConsoleSize); err != nil {
			return err
		}
	}
	if p.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*p.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("set oom_score_adj: %w", err)
		}
	}
	path, cwd, err := resolveCommand(p)
	if err != nil {
		return err
	}
	if err := unix.Chdir(cwd); err != nil {
		return fmt.Errorf("chdir to working directory %s: %w", cwd, err)
	}
	for _, rl := range p.Rlimits {
		if err := setRlimit(rl); err != nil {
			return err
		}
	}
	if err := sync.send(syncMsg{Type: "ready", Marks: append(marks, monoNow())}, -1); err != nil {
		return fmt.Errorf("report ready: %w", err)
	}
	if cfg.Mode == "init" {
		var m syncMsg
		if _, err := sync.recv(context.Background(), &m); err != nil || m.Type != "start" {
			// The agent gave up on this container.
			os.Exit(120)
		}
	}
	if err := setUserAndCaps(p); err != nil {
		return err
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	// On success the sync socket closes with the exec, which tells the
	// agent the process is running.
	unix.CloseOnExec(3)
	err = unix.Exec(path, p.Args, p.Env)
	return fmt.Errorf("exec %s: %w", p.Args[0], err)
}

func applySysctls(sysctls map[string]string) error {
	for k, v := range sysctls {
		if k == "" || strings.Contains(k, "..") || strings.ContainsAny(k, "/\x00") {
			return fmt.Errorf("bad sysctl name %q", k)
		}
		path := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(path, []byte(v), 0); err != nil {
			return fmt.Errorf("set sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}

// resolveCommand finds p's executable in the container's PATH and
// creates its working directory (default /), as the container sees them:
// the caller is in the container's mount namespace.
func resolveCommand(p *specs.Process) (path, cwd string, err error) {
	if path, err = lookPath(p.Args[0], p.Env); err != nil {
		return "", "", err
	}
	cwd = p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return "", "", fmt.Errorf("create working directory %s: %w", cwd, err)
	}
	return path, cwd, nil
}

// lookPath finds the executable the way execvp would, with the
// container's PATH.
func lookPath(file string, env []string) (string, error) {
	isExec := func(p string) error {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return fmt.Errorf("%s is a directory", p)
		}
		if fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s: permission denied (not executable)", p)
		}
		return nil
	}
	if strings.Contains(file, "/") {
		if err := isExec(file); err != nil {
			return "", fmt.Errorf("executable %q in the container: %w", file, err)
		}
		return file, nil
	}
	pathEnv := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if isExec(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable file %q not found in $PATH (%s) of the container", file, pathEnv)
}

var rlimitNames = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC,
	"RLIMIT_RSS": unix.RLIMIT_RSS, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

func validateRlimits(rls []specs.POSIXRlimit) error {
	for _, rl := range rls {
		if _, ok := rlimitNames[rl.Type]; !ok {
			return fmt.Errorf("unknown rlimit %q", rl.Type)
		}
		if rl.Soft > rl.Hard {
			return fmt.Errorf("rlimit %s: soft limit %d is above hard limit %d", rl.Type, rl.Soft, rl.Hard)
		}
	}
	return nil
}

func setRlimit(rl specs.POSIXRlimit) error {
	r, ok := rlimitNames[rl.Type]
	if !ok {
		return fmt.Errorf("unknown rlimit %q", rl.Type)
	}
	if err := unix.Prlimit(0, r, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}, nil); err != nil {
		return fmt.Errorf("set %s to %d/%d: %w", rl.Type, rl.Soft, rl.Hard, err)
	}
	return nil
}

// setUserAndCaps switches to the process's user on this thread only (the
// exec that follows uses this thread's credentials) and applies the
// capability sets.
func setUserAndCaps(p *specs.Process) error {
	caps := p.Capabilities
	if caps != nil {
		bounding, _ := parseCaps(caps.Bounding)
		if err := dropBounding(bounding); err != nil {
			return err
		}
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set keepcaps: %w", err)
	}
	groups := make([]uint32, 0, len(p.User.AdditionalGids)+1)
	groups = append(groups, p.User.AdditionalGids...)
	var gp uintptr
	if len(groups) > 0 {
		gp = uintptr(unsafe.Pointer(&groups[0]))
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), gp, 0); e != 0 {
		return fmt.Errorf("setgroups %v: %w", groups, e)
	}
	gid, uid := uintptr(p.User.GID), uintptr(p.User.UID)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, gid, gid, gid); e != 0 {
		return fmt.Errorf("setgid %d: %w", gid, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uid, uid, uid); e != 0 {
		return fmt.Errorf("setuid %d: %w", uid, e)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("clear keepcaps: %w", err)
	}
	if caps != nil {
		if err := applyCaps(caps); err != nil {
			return err
		}
	}
	return nil
}

// setupConsole opens a pseudo-terminal in the container's own devpts,
// makes its slave side the process's stdio and controlling terminal, and
// sends the master to the agent.
func setupConsole(sync *syncConn, bindConsole bool, size *specs.Box) error {
	master, slave, err := openConsole(bindConsole, size)
	if err != nil {
		return err
	}
	defer master.Close()
	defer slave.Close()
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("setsid: %w", err)
	}
	if err := unix.IoctlSetInt(int(slave.Fd()), unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("set controlling terminal: %w", err)
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(int(slave.Fd()), fd, 0); err != nil {
			return fmt.Errorf("dup pty to fd %d: %w", fd, err)
		}
	}
	if err := sync.send(syncMsg{Type: "console"}, int(master.Fd())); err != nil {
		return fmt.Errorf("send pty master to the agent: %w", err)
	}
	return nil
}

// openConsole opens a pseudo-terminal in the devpts of the caller's mount
// namespace (the container's), sized to size, and with bindConsole makes
// its slave the container's /dev/console.
func openConsole(bindConsole bool, size *specs.Box) (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx in the container (is devpts mounted with newinstance?): %w", err)
	}
	defer func() {
		if err != nil {
			master.Close()
		}
	}()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		return nil, nil, fmt.Errorf("get pty number: %w", err)
	}
	slavePath := "/dev/pts/" + strconv.Itoa(int(n))
	// The slave from the master itself, not by a path a container
	// process could redirect.
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, master.Fd(), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		return nil, nil, fmt.Errorf("open the terminal's slave %s: %w", slavePath, errno)
	}
	sfd := int(r)
	slave = os.NewFile(uintptr(sfd), slavePath)
	if size != nil && size.Height > 0 && size.Width > 0 && size.Height <= 0xffff && size.Width <= 0xffff {
		ws := &unix.Winsize{Row: uint16(size.Height), Col: uint16(size.Width)}
		if err := unix.IoctlSetWinsize(sfd, unix.TIOCSWINSZ, ws); err != nil {
			slave.Close()
			return nil, nil, fmt.Errorf("set the terminal size to %dx%d: %w", size.Width, size.Height, err)
		}
	}
	// Best effort, as runc does: /dev/console is the container's terminal
	// (its init's; an exec's terminal must not replace it).
	if bindConsole {
		if f, err := os.OpenFile("/dev/console", os.O_CREATE|os.O_RDONLY, 0o600); err == nil {
			f.Close()
			_ = unix.Mount(slavePath, "/dev/console", "", unix.MS_BIND, "")
		}
	}
	return master, slave, nil
}

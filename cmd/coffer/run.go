package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/guest"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/sandbox"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

type runOpts struct {
	rm, detach, interactive, tty bool
	env                          []string
	workdir, user                string
	memory                       string
	cpus                         float64
	pids                         int64
	name, hostname               string
	sysctls                      []string
	rootfs, rootfsType           string
	privileged, readOnly         bool
	vmMemory                     string
	vcpus                        int
	accel                        string
	transport                    string
	guestDir                     string
	bootTimeout                  time.Duration
	volumes                      []string
	image                        imageFlags // `coffer run IMAGE`
	releaseImage                 func()     // the unpacked image is no longer needed (the rootfs disk is built)
}

func newRunCmd(g *globalOpts) *cobra.Command {
	o := &runOpts{}
	cmd := &cobra.Command{
		Use:   "run [flags] (--rootfs DIR -- CMD [ARGS...] | IMAGE [CMD [ARGS...]])",
		Short: "Run a command in a new container inside its own VM",
		Long: `Run a command in a new container inside its own lightweight VM, with its own
guest kernel. The host directory given by --rootfs becomes the container's
root filesystem; the container writes to a copy-on-write layer in the guest
and never to the host directory. Instead of --rootfs, an IMAGE (registry
reference or oci:DIR[:TAG]) is pulled, unpacked once into the image cache
and used with its config's entrypoint, cmd, env, workdir and user.

The exit code is the container's: 128+N when killed by signal N, 137 for an
out-of-memory kill. Coffer's own failures exit 125; 126 means the command
could not be executed and 127 that it was not found.

The host talks to the guest agent over a virtio-serial port. --transport
vsock uses vsock instead (the host needs /dev/vhost-vsock); it is opt-in
because any host process can connect to a guest's vsock port and the agent
does not authenticate its peer yet.

--log-level info shows which accelerator (kvm or tcg) was chosen and why;
coffer ps shows it in its ACCEL column.`,
		Example: `  coffer run --rm --rootfs ./busybox -- uname -a
  coffer run --rm -it --rootfs ./busybox -- sh
  coffer run -d --name web --memory 128m --rootfs ./rootfs -- httpd -f
  coffer run --rm -v $PWD/data:/data -v /etc/hosts:/etc/hosts:ro --rootfs ./busybox -- ls /data
  coffer run --rm 127.0.0.1:5000/busybox:latest echo hi`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Ctrl-C while an image is pulled or unpacked must still run the
			// cleanup (a decrypted copy is removed there).
			ictx, stopSignals := signal.NotifyContext(cmd.Context(), unix.SIGINT, unix.SIGTERM)
			args, cleanup, err := imageArgs(ictx, cmd, g, o, args) // `coffer run IMAGE [CMD...]`: see image.go
			stopSignals()
			if err != nil {
				return err
			}
			o.releaseImage = sync.OnceFunc(cleanup)
			defer o.releaseImage()
			return runRun(cmd.Context(), g, o, args)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVar(&o.rm, "rm", false, "remove the pod's record when it exits")
	f.BoolVarP(&o.detach, "detach", "d", false, "run in the background and print the pod name")
	f.BoolVarP(&o.interactive, "interactive", "i", false, "keep stdin open and send it to the container")
	f.BoolVarP(&o.tty, "tty", "t", false, "allocate a terminal for the container")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	f.StringVarP(&o.workdir, "workdir", "w", "", "working directory inside the container")
	f.StringVarP(&o.user, "user", "u", "", "UID[:GID] to run as")
	f.StringVar(&o.memory, "memory", "", "memory limit of the container (e.g. 256m)")
	f.Float64Var(&o.cpus, "cpus", 0, "CPU limit of the container (e.g. 1.5)")
	f.Int64Var(&o.pids, "pids-limit", 0, "maximum number of processes in the container")
	f.StringVar(&o.name, "name", "", "pod name (default: generated)")
	f.StringVar(&o.hostname, "hostname", "", "container hostname (default: the pod name)")
	f.StringArrayVarP(&o.volumes, "volume", "v", nil, "share a host directory or file: HOSTPATH:CTRPATH[:ro|rw] (absolute paths; repeatable)")
	f.StringArrayVar(&o.sysctls, "sysctl", nil, "set a sysctl inside the guest (name=value); the host is never touched")
	f.StringVar(&o.rootfs, "rootfs", "", "host directory to use as the container's root filesystem (required)")
	f.StringVar(&o.rootfsType, "rootfs-type", sandbox.FSErofs, "filesystem of the read-only rootfs disk: erofs or ext4")
	f.BoolVar(&o.privileged, "privileged", false, "give the container every capability and a writable /sys (inside the VM only)")
	f.BoolVar(&o.readOnly, "read-only", false, "mount the container's root filesystem read-only")
	f.StringVar(&o.vmMemory, "vm-memory", "", "guest RAM (default: 256m, or the memory limit plus 128m)")
	f.IntVar(&o.vcpus, "vcpus", 0, "guest vCPUs (default: the CPU limit rounded up, at least 1)")
	f.StringVar(&o.accel, "accel", "", "accelerator: kvm, tcg or auto (default auto, or $COFFER_ACCEL)")
	f.StringVar(&o.transport, "transport", "auto", "how the host reaches the guest agent: serial, vsock (needs /dev/vhost-vsock; any host process can connect to the guest's vsock port) or auto (serial)")
	f.StringVar(&o.guestDir, "guest-dir", "", "directory of the guest image built by `coffer guest build` (default: the cache dir)")
	f.DurationVar(&o.bootTimeout, "boot-timeout", sandbox.DefaultBootTimeout, "how long to wait for the VM to boot")
	o.image.addRunFlags(cmd)
	return cmd
}

func randomName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "coffer-" + hex.EncodeToString(b)
}

// buildRequest validates every flag and turns them into a pod request.
func buildRequest(g *globalOpts, o *runOpts, args []string) (*sandbox.PodRequest, error) {
	if o.name == "" {
		o.name = randomName()
	}
	if err := sandbox.CheckName(o.name); err != nil {
		return nil, fmt.Errorf("--name: %w", err)
	}
	if err := sandbox.CheckRootfsDir(o.rootfs); err != nil {
		return nil, err
	}
	rootfs, err := filepath.Abs(o.rootfs)
	if err != nil {
		return nil, err
	}
	if o.rootfsType != sandbox.FSErofs && o.rootfsType != sandbox.FSExt4 {
		return nil, fmt.Errorf("bad --rootfs-type %q: use erofs or ext4", o.rootfsType)
	}
	so := sandbox.SpecOptions{
		Args: args, Env: o.env, Cwd: o.workdir, Terminal: o.tty, Hostname: o.hostname,
		Privileged: o.privileged, ReadOnly: o.readOnly, PidsMax: o.pids,
	}
	if so.Hostname == "" {
		so.Hostname = o.name
	}
	if so.UID, so.GID, err = checkProcessFlags(o.env, o.workdir, o.user); err != nil {
		return nil, err
	}
	if o.memory != "" {
		if so.MemoryMax, err = sandbox.ParseMemory(o.memory); err != nil {
			return nil, fmt.Errorf("--memory: %w", err)
		}
		if so.MemoryMax < 4<<20 {
			return nil, fmt.Errorf("--memory %s is too small: use at least 4m", o.memory)
		}
	}
	if o.cpus < 0 || math.IsNaN(o.cpus) || o.cpus > 256 {
		return nil, fmt.Errorf("bad --cpus %v: use a positive number of CPUs, at most 256", o.cpus)
	}
	so.CPUs = o.cpus
	if o.pids < 0 {
		return nil, fmt.Errorf("bad --pids-limit %d: use a positive number", o.pids)
	}
	if so.Sysctls, err = sandbox.ParseSysctls(o.sysctls); err != nil {
		return nil, err
	}
	spec, err := sandbox.BuildSpec(so)
	if err != nil {
		return nil, err
	}
	var volumes []sandbox.Volume
	for _, s := range o.volumes {
		v, err := sandbox.ParseVolume(s)
		if err != nil {
			return nil, fmt.Errorf("-v: %w", err)
		}
		if err := sandbox.CheckVolumeTarget(rootfs, v.Destination); err != nil {
			return nil, fmt.Errorf("-v %s: %w", s, err)
		}
		volumes = append(volumes, v)
	}
	if o.tty {
		// The process starts with its creation: give its terminal our
		// size from the start (SIGWINCH follows changes).
		if w, h, err := term.GetSize(int(os.Stdin.Fd())); err == nil && w > 0 && h > 0 {
			spec.Process.ConsoleSize = &specs.Box{Width: uint(w), Height: uint(h)}
		}
	}
	accel, err := hypervisor.ParseAccel(o.accel)
	if err != nil {
		return nil, fmt.Errorf("--accel: %w", err)
	}
	transport, err := sandbox.ParseTransport(o.transport)
	if err == nil {
		_, err = sandbox.CheckTransport(transport)
	}
	if err != nil {
		return nil, fmt.Errorf("--transport: %w", err)
	}
	vmMiB := 256
	if so.MemoryMax > 0 {
		vmMiB = max(vmMiB, int(so.MemoryMax>>20)+128)
	}
	if o.vmMemory != "" {
		b, err := sandbox.ParseMemory(o.vmMemory)
		if err != nil {
			return nil, fmt.Errorf("--vm-memory: %w", err)
		}
		if b < 128<<20 {
			return nil, fmt.Errorf("--vm-memory %s is too small: the guest needs at least 128m", o.vmMemory)
		}
		vmMiB = int(b >> 20)
	}
	vcpus := o.vcpus
	if vcpus == 0 {
		vcpus = max(1, int(math.Ceil(o.cpus)))
		if vcpus > 64 {
			return nil, fmt.Errorf("--cpus %v needs %d vCPUs and a pod VM has at most 64: lower --cpus or set --vcpus", o.cpus, vcpus)
		}
	}
	if vcpus < 1 || vcpus > 64 {
		return nil, fmt.Errorf("bad --vcpus %d: use 1 to 64", vcpus)
	}
	dir := o.guestDir
	if dir == "" {
		dir = guest.DefaultCacheDir()
	}
	m, err := guest.Load(dir)
	if err != nil {
		return nil, err
	}
	return &sandbox.PodRequest{
		Name: o.name, Rootfs: rootfs, RootfsType: o.rootfsType, Spec: spec,
		Kernel: m.KernelPath(), Initrd: m.InitrdPath(), Cmdline: m.Cmdline,
		MemoryMiB: vmMiB, VCPUs: vcpus, Accel: accel, Transport: transport, AgentDebug: g.debug, BootTimeout: o.bootTimeout,
		StartNow: true, Volumes: volumes,
	}, nil
}

// checkProcessFlags validates the process flags of `coffer run` and
// `coffer exec` (-e, -w, -u), naming the flag at fault, and returns the
// UID and GID of -u (0 without it).
func checkProcessFlags(env []string, workdir, user string) (uid, gid uint32, err error) {
	for _, e := range env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return 0, 0, fmt.Errorf("bad -e/--env %q: use KEY=VALUE", e)
		}
	}
	if workdir != "" && !strings.HasPrefix(workdir, "/") {
		return 0, 0, fmt.Errorf("bad -w/--workdir %q: use an absolute path inside the container", workdir)
	}
	if user != "" {
		if uid, gid, err = sandbox.ParseUser(user); err != nil {
			return 0, 0, fmt.Errorf("-u/--user: %w", err)
		}
	}
	return uid, gid, nil
}

// startError turns a pod start failure into the right exit code.
func startError(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "not found in $PATH"), strings.Contains(msg, "no such file or directory") && strings.Contains(msg, "executable"):
		return &exitError{code: exitNotFound, err: err}
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "is a directory"):
		return &exitError{code: exitCannotInvoke, err: err}
	}
	return &exitError{code: exitCofferError, err: err}
}

func runRun(ctx context.Context, g *globalOpts, o *runOpts, args []string) error {
	log := g.logger()
	if o.detach && (o.interactive || o.tty) {
		return &exitError{code: exitCofferError, err: errors.New("-d cannot be combined with -i or -t: attach with `coffer exec -it NAME sh` instead")}
	}
	req, err := buildRequest(g, o, args)
	if err != nil {
		return &exitError{code: exitCofferError, err: err}
	}
	rt := sandbox.RuntimeDir()
	sweepStale(rt, log)
	dir, err := sandbox.CreatePodDir(rt, req.Name)
	if err != nil {
		return &exitError{code: exitCofferError, err: err}
	}
	if o.detach {
		return runDetached(ctx, dir, req)
	}
	return runForeground(ctx, log, o, dir, req)
}

// sweepStale removes records of foreground pods whose coffer process died
// (crash, kill -9): their VM died with them (parent-death signal).
func sweepStale(rt string, log *slog.Logger) {
	pods, err := sandbox.ListPods(rt)
	if err != nil {
		return
	}
	for _, st := range pods {
		if st.EffectiveStatus() == sandbox.StatusDead && !st.Detached && st.OwnerPID != 0 {
			log.Info("removing stale pod", "name", st.Name)
			_ = sandbox.RemovePodDir(sandbox.PodDir(rt, st.Name))
		}
	}
}

func runForeground(ctx context.Context, log *slog.Logger, o *runOpts, dir string, req *sandbox.PodRequest) error {
	// Signals that arrive while the VM boots must not leave it behind.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH)
	defer signal.Stop(sigs)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			select {
			case s := <-sigs:
				switch s {
				case unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT:
					cancel()
					return
				}
				// SIGWINCH, SIGUSR1/2 while booting: nothing to do yet.
			case <-sctx.Done():
				return
			}
		}
	}()
	pod, err := sandbox.StartPod(sctx, dir, req, false, log)
	if o.releaseImage != nil {
		o.releaseImage()
	}
	if err != nil {
		if sctx.Err() != nil && ctx.Err() == nil {
			return &exitError{code: 130, err: errors.New("interrupted while starting the pod")}
		}
		return startError(err)
	}
	cancel()
	code, err := attachAndWait(ctx, log, pod, o, sigs)
	pod.Close(&code, !o.rm)
	if err != nil {
		return startError(err)
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// attachAndWait connects the terminal or stdio to the container, starts
// it, forwards signals and returns its exit code.
func attachAndWait(ctx context.Context, log *slog.Logger, pod *sandbox.Pod, o *runOpts, sigs chan os.Signal) (int, error) {
	res, err := attach(ctx, log, pod.Sandbox.Agent, sandbox.ContainerID, "", o.tty, o.interactive, sigs,
		func() error { return pod.Start(ctx) }, func() (*api.WaitProcessResponse, error) { return pod.Wait(ctx) })
	if err != nil {
		return exitCofferError, err
	}
	if res.OomKilled {
		fmt.Fprintf(os.Stderr, "coffer: container %s was killed: out of memory (limit %s)\n", pod.State.Name, o.memory)
	}
	return int(res.ExitStatus), nil
}

// attach connects this terminal (raw mode and size with tty) or stdio to
// a process in the guest, calls start (if any), forwards signals until
// wait returns, and drains the process's output.
func attach(ctx context.Context, log *slog.Logger, agent api.AgentService, cid, execID string, tty, interactive bool,
	sigs chan os.Signal, start func() error, wait func() (*api.WaitProcessResponse, error)) (*api.WaitProcessResponse, error) {
	restore := func() {}
	if tty && term.IsTerminal(int(os.Stdin.Fd())) {
		st, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err == nil {
			restore = func() { _ = term.Restore(int(os.Stdin.Fd()), st) }
		}
		resizeTTY(ctx, agent, cid, execID)
	}
	defer restore()
	var outputs sync.WaitGroup
	for _, out := range []struct {
		stderr bool
		w      io.Writer
	}{{false, os.Stdout}, {true, os.Stderr}} {
		outputs.Add(1)
		go func() {
			defer outputs.Done()
			if err := sandbox.CopyOutput(ctx, agent, cid, execID, out.stderr, out.w); err != nil {
				log.Debug("output copy ended", "stderr", out.stderr, "err", err)
			}
		}()
	}
	if start != nil {
		if err := start(); err != nil {
			return nil, err
		}
	}
	if interactive {
		go func() {
			if err := sandbox.CopyInput(ctx, agent, cid, execID, os.Stdin); err != nil {
				log.Debug("stdin copy ended", "err", err)
			}
		}()
	} else if !tty {
		_, _ = agent.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: cid, ExecId: execID})
	}
	wctx, stopSignals := context.WithCancel(ctx)
	defer stopSignals()
	go forwardSignals(wctx, log, agent, cid, execID, sigs, tty)
	res, err := wait()
	stopSignals()
	if err != nil {
		return nil, err
	}
	drained := make(chan struct{})
	go func() { outputs.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		log.Warn("process output did not end in time")
	}
	return res, nil
}

// forwardSignals sends the signals coffer receives to the container
// process. SIGWINCH resizes the container's terminal instead.
func forwardSignals(ctx context.Context, log *slog.Logger, agent api.AgentService, cid, execID string, sigs chan os.Signal, tty bool) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sigs:
			sig := s.(unix.Signal)
			if sig == unix.SIGWINCH {
				if tty {
					resizeTTY(ctx, agent, cid, execID)
				}
				continue
			}
			if _, err := agent.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: cid, ExecId: execID, Signal: uint32(sig)}); err != nil {
				log.Debug("forward signal", "signal", sig, "err", err)
			}
		}
	}
}

func resizeTTY(ctx context.Context, agent api.AgentService, cid, execID string) {
	w, h, err := term.GetSize(int(os.Stdin.Fd()))
	if err != nil {
		return
	}
	_, _ = agent.TtyWinResize(ctx, &api.TtyWinResizeRequest{ContainerId: cid, ExecId: execID, Rows: uint32(h), Columns: uint32(w)})
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
	"github.com/coffer-project/coffer/bench/internal/floor"
	"github.com/coffer-project/coffer/internal/guest"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/testimage"
)

// image is the name the busybox image is imported under.
const image = "coffer.bench/busybox:1"

// bench is one run's set-up: a private containerd and the rootfs the
// image was made of.
type bench struct {
	opts     options
	progress io.Writer
	tmp      string
	rootfs   string
	sock     string
	runtime  string // COFFER_RUNTIME_DIR of every pod
	daemon   *exec.Cmd
	daemonCh chan struct{}
	log      bytes.Buffer
	seq      int
	floor    floor.VM
	initrd   string // the floor's trivial initrd
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "bench: "+format+"\n", args...)
}

// newBench builds the rootfs and its image, starts a private containerd
// that finds the shim on its PATH, and imports the image.
func newBench(ctx context.Context, opts options, progress io.Writer) (*bench, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("run as root: containerd, runc and the VMs need it")
	}
	for _, p := range []*string{&opts.coffer, &opts.shim} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("%s: %w (run make build)", abs, err)
		}
		*p = abs
	}
	for _, tool := range []string{opts.containerd, opts.ctr, "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is needed (apt-get install containerd runc): %w", tool, err)
		}
	}
	tmp, err := os.MkdirTemp("", "coffer-bench-containerd-")
	if err != nil {
		return nil, err
	}
	b := &bench{opts: opts, progress: progress, tmp: tmp, rootfs: filepath.Join(tmp, "rootfs"),
		sock: filepath.Join(tmp, "containerd.sock"), runtime: filepath.Join(tmp, "run")}
	if err := testimage.BusyboxRootfs(b.rootfs); err != nil {
		return b, fmt.Errorf("build the busybox rootfs: %w", err)
	}
	tarPath := filepath.Join(tmp, "busybox-oci.tar")
	if err := testimage.WriteOCIImage(b.rootfs, image, []string{"sh"}, tarPath); err != nil {
		return b, fmt.Errorf("build the busybox image: %w", err)
	}
	if err := b.setupFloor(ctx); err != nil {
		return b, err
	}
	if err := b.startContainerd(ctx); err != nil {
		return b, err
	}
	if out, err := b.ctr(ctx, "images", "import", tarPath); err != nil {
		return b, fmt.Errorf("import the image: %w\n%s", err, out)
	}
	return b, nil
}

// setupFloor prepares bench/sandbox's raw boot floor with the guest image
// coffer uses here: the same kernel, command line, QEMU and accelerator.
func (b *bench) setupFloor(ctx context.Context) error {
	m, err := guest.Load(b.opts.guestDir)
	if err != nil {
		return fmt.Errorf("load the guest image (coffer guest build): %w", err)
	}
	b.floor = floor.VM{Kernel: m.KernelPath(), Cmdline: m.Cmdline}
	if b.floor.QEMU, err = exec.LookPath(hypervisor.DefaultQEMU); err != nil {
		return fmt.Errorf("QEMU: %w (install qemu-system-x86)", err)
	}
	// The same decision the driver makes for coffer (honours COFFER_ACCEL).
	if b.floor.Accel, _, err = hypervisor.DetectAccel(ctx, hypervisor.DetectOptions{Kernel: b.floor.Kernel, QEMUPath: b.floor.QEMU}); err != nil {
		return err
	}
	initBin := b.opts.initPath
	if initBin == "" {
		b.logf("building the trivial init (%s)", floor.TinyInitPkg)
		if initBin, err = floor.BuildTinyInit(ctx, b.tmp); err != nil {
			return err
		}
	}
	b.initrd = filepath.Join(b.tmp, "tiny-initrd.img")
	return floor.WriteInitrd(b.initrd, initBin)
}

// env is the environment of containerd (and so of the shim) and of
// coffer run: the same guest image and an isolated runtime dir.
func (b *bench) env() []string {
	return append(os.Environ(), "COFFER_GUEST_DIR="+b.opts.guestDir, "COFFER_RUNTIME_DIR="+b.runtime,
		"PATH="+filepath.Dir(b.opts.shim)+":"+os.Getenv("PATH"))
}

func (b *bench) startContainerd(ctx context.Context) error {
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(b.tmp, "root"), filepath.Join(b.tmp, "state"), b.sock)
	cfgPath := filepath.Join(b.tmp, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	b.daemon = exec.Command(b.opts.containerd, "--config", cfgPath)
	b.daemon.Env = b.env()
	b.daemon.Stdout, b.daemon.Stderr = &b.log, &b.log
	b.daemon.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.daemon.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	b.daemonCh = make(chan struct{})
	go func() { _ = b.daemon.Wait(); close(b.daemonCh) }()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("unix", b.sock); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-b.daemonCh:
			return fmt.Errorf("containerd exited:\n%s", b.log.String())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not come up in 30s:\n%s", b.log.String())
		}
	}
}

func (b *bench) ctr(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, b.opts.ctr, append([]string{"--address", b.sock}, args...)...)
	return cmd.CombinedOutput()
}

// cleanup stops containerd (its shims and VMs are gone after each --rm
// run) and removes the temp dir.
func (b *bench) cleanup() {
	if b.daemon != nil && b.daemon.Process != nil {
		_ = b.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.daemonCh:
		case <-time.After(10 * time.Second):
			_ = b.daemon.Process.Kill()
			<-b.daemonCh
		}
	}
	_ = os.RemoveAll(b.tmp)
}

// benchCase is one way of running `true` in the busybox image (or, for
// the floor, a raw VM boot).
type benchCase struct {
	id, label string
	argv      func(name string) (prog string, args []string)
	run       func(ctx context.Context) (time.Duration, error) // instead of argv
}

func (b *bench) cases() []benchCase {
	ctrRun := func(runtime string) func(string) (string, []string) {
		return func(name string) (string, []string) {
			return b.opts.ctr, []string{"--address", b.sock, "run", "--rm", "--runtime", runtime, image, name, "true"}
		}
	}
	return []benchCase{
		{id: "runc", label: "ctr run --rm --runtime io.containerd.runc.v2 (host container)", argv: ctrRun("io.containerd.runc.v2")},
		{id: "coffer-shim", label: "ctr run --rm --runtime io.containerd.coffer.v2 (Coffer VM)", argv: ctrRun("io.containerd.coffer.v2")},
		{id: "coffer-run", label: "coffer run --rm --rootfs <same rootfs> -- true", argv: func(string) (string, []string) {
			return b.opts.coffer, []string{"run", "--rm", "--rootfs", b.rootfs, "--", "true"}
		}},
		{id: "floor", label: "raw QEMU boot floor: same kernel, trivial init, power off (bench/sandbox case (a))", run: func(ctx context.Context) (time.Duration, error) {
			r, err := b.floor.Boot(ctx, b.tmp, b.initrd)
			return r.Wall, err
		}},
	}
}

// series collects one case's wall times.
type series struct {
	ID, Label string
	Wall      []time.Duration
	Round     []int // the round of each Wall entry
	Warmup    time.Duration
	Failures  []string
}

// run measures every case n times after one warm-up round, in a new
// shuffled order each round.
func (b *bench) run(ctx context.Context) (*report, error) {
	cases := b.cases()
	all := make([]*series, len(cases))
	for i, c := range cases {
		all[i] = &series{ID: c.id, Label: c.label}
	}
	seed := b.opts.seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	rep := &report{N: b.opts.n, Seed: seed, Machine: describeMachine(ctx, b.opts), LoadBefore: benchutil.LoadAvg(), Started: time.Now().UTC(), Series: all}
	b.logf("temp dir %s; %d cases × (%d + 1 warm-up); seed %d", b.tmp, len(cases), b.opts.n, seed)
	failed := 0
	for round := 0; round <= b.opts.n; round++ {
		for _, i := range rng.Perm(len(cases)) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			c, s := cases[i], all[i]
			d, err := b.measure(ctx, c)
			switch {
			case err != nil:
				failed++
				s.Failures = append(s.Failures, err.Error())
				b.logf("round %d %s: FAILED: %v", round, c.id, err)
			case round == 0:
				s.Warmup = d
			default:
				s.Wall = append(s.Wall, d)
				s.Round = append(s.Round, round)
			}
			b.logf("round %d/%d %-12s %s", round, b.opts.n, c.id, d.Round(time.Millisecond))
		}
	}
	rep.LoadAfter, rep.Finished = benchutil.LoadAvg(), time.Now().UTC()
	if failed > 0 {
		return rep, fmt.Errorf("%d runs failed (see the report)", failed)
	}
	return rep, nil
}

// measure times one run of c; a non-zero exit is a failure.
func (b *bench) measure(ctx context.Context, c benchCase) (time.Duration, error) {
	b.seq++
	ctx, cancel := context.WithTimeout(ctx, b.opts.runTimeout)
	defer cancel()
	if c.run != nil {
		return c.run(ctx)
	}
	prog, args := c.argv(fmt.Sprintf("bench-%d", b.seq))
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = b.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s %s: %w: %s", filepath.Base(prog), strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return d, nil
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-project/coffer/internal/sandbox"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
	"github.com/coffer-project/coffer/bench/internal/floor"
)

// result is one measured run.
type result struct {
	wall, cpu time.Duration
	// uptime is the guest uptime when the trivial init ran (raw boots).
	uptime time.Duration
	// size is the rootfs image size (mkfs cases).
	size   int64
	phases *phaseSample
}

type benchCase struct {
	id, label string
	run       func(ctx context.Context) (result, error)
}

// series collects one case's measurements.
type series struct {
	ID, Label string
	Wall, CPU []time.Duration
	Uptime    []time.Duration
	Warmup    time.Duration
	Size      int64
	Failures  []string
	// Others is the number of QEMU processes not ours seen before each
	// run, Busy the host's CPU use just before it (0..1), Disturb the CPUs
	// that everything else used during it.
	Others  []int
	Busy    []float64
	Disturb []float64
	Phases  []*phaseSample
}

func (b *bench) cases() []benchCase {
	cs := []benchCase{
		{"raw-boot", "(a) raw QEMU boot floor: same kernel, trivial initrd, power off", func(ctx context.Context) (result, error) {
			return b.rawBoot(ctx, b.tinyInitrd)
		}},
		{"raw-boot-coffer-initrd", "(a2) raw boot with coffer's initrd, its /init replaced by the trivial one", func(ctx context.Context) (result, error) {
			return b.rawBoot(ctx, b.cofferInitrd)
		}},
		{"coffer-run", "(b) coffer run --rm -- true (erofs rootfs, the default)", func(ctx context.Context) (result, error) {
			return b.cofferRun(ctx, b.busybox, "", false)
		}},
		{"coffer-run-ext4", "(b-ext4) coffer run --rm --rootfs-type ext4 -- true, instrumented", func(ctx context.Context) (result, error) {
			return b.cofferRun(ctx, b.busybox, sandbox.FSExt4, true)
		}},
		{"coffer-run-phases", "(d) coffer run, instrumented (--log-level debug + agent log)", func(ctx context.Context) (result, error) {
			return b.cofferRun(ctx, b.busybox, "", true)
		}},
		{"runc-run", "(c) runc run -- true on the host, same rootfs", b.runcRun},
		{"mkfs-erofs-busybox", "(e) rootfs image build, erofs, busybox rootfs", func(ctx context.Context) (result, error) {
			return b.mkfs(ctx, b.busybox, sandbox.FSErofs)
		}},
		{"mkfs-ext4-busybox", "(e) rootfs image build, ext4, busybox rootfs", func(ctx context.Context) (result, error) {
			return b.mkfs(ctx, b.busybox, sandbox.FSExt4)
		}},
		{"mkfs-erofs-big", "(e) rootfs image build, erofs, big rootfs", func(ctx context.Context) (result, error) {
			return b.mkfs(ctx, b.big, sandbox.FSErofs)
		}},
		{"mkfs-ext4-big", "(e) rootfs image build, ext4, big rootfs", func(ctx context.Context) (result, error) {
			return b.mkfs(ctx, b.big, sandbox.FSExt4)
		}},
	}
	if b.opts.bigRun {
		cs = append(cs,
			benchCase{"coffer-run-big", "(e) coffer run --rm -- true, big rootfs, erofs, instrumented", func(ctx context.Context) (result, error) {
				return b.cofferRun(ctx, b.big, "", true)
			}},
			benchCase{"coffer-run-big-ext4", "(e) coffer run --rm -- true, big rootfs, ext4, instrumented", func(ctx context.Context) (result, error) {
				return b.cofferRun(ctx, b.big, sandbox.FSExt4, true)
			}},
		)
	}
	return cs
}

// run measures every case n times after one warm-up. Iterations are
// interleaved (every case once, in a new shuffled order, then again) so
// that a burst of load on the machine, or a case's after-effects (page
// cache writeback), hit every case alike.
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
	rep := &report{Machine: b.machine, N: b.opts.n, Seed: seed, LoadBefore: benchutil.LoadAvg(), Started: time.Now().UTC()}
	b.logf("temp dir %s; accel %s; %d cases × (%d + 1 warm-up)", b.tmp, b.accel, len(cases), b.opts.n)
	var failed int
	for iter := 0; iter <= b.opts.n; iter++ {
		for _, i := range rng.Perm(len(cases)) {
			c := cases[i]
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s := all[i]
			busy, waited := b.waitQuiet(ctx, b.opts.quietWait)
			rep.QuietWaited += waited
			others := len(qemuPIDs())
			rctx, cancel := context.WithTimeout(ctx, b.opts.runTimeout)
			host0, _ := cpuTimes()
			our0 := ownCPU()
			r, err := c.run(rctx)
			cancel()
			host1, _ := cpuTimes()
			// The CPU time everything else on the host used during the run,
			// in CPUs: a disturbed run shows up here even when the machine
			// was quiet when it started.
			othersCPU := time.Duration(host1-host0)*time.Second/userHZ - (ownCPU() - our0)
			disturb := max(0, float64(othersCPU)/float64(max(r.wall, time.Millisecond)))
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			tag := "warm-up"
			if iter > 0 {
				tag = fmt.Sprintf("%d/%d", iter, b.opts.n)
			}
			if err != nil {
				failed++
				s.Failures = append(s.Failures, err.Error())
				b.logf("[%s] %s FAILED: %v", tag, c.id, err)
				continue
			}
			b.logf("[%s] %-24s %s (cpu %s; host %.0f%% busy before it; others used %.2f CPUs during it; %d other qemu)",
				tag, c.id, fmtDur(r.wall), fmtDur(r.cpu), 100*busy, disturb, others)
			if r.size > 0 {
				s.Size = r.size
			}
			if iter == 0 {
				s.Warmup = r.wall
				continue
			}
			s.Wall = append(s.Wall, r.wall)
			s.CPU = append(s.CPU, r.cpu)
			s.Others = append(s.Others, others)
			s.Busy = append(s.Busy, busy)
			s.Disturb = append(s.Disturb, disturb)
			if r.uptime > 0 {
				s.Uptime = append(s.Uptime, r.uptime)
			}
			if r.phases != nil {
				s.Phases = append(s.Phases, r.phases)
			}
		}
	}
	rep.Series = all

	b.logf("idle memory: coffer run -d --name bench-idle -- sleep 600, waiting %s", b.opts.idleWait)
	idle, err := b.idleMemory(ctx)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		failed++
		rep.IdleError = err.Error()
		b.logf("idle memory FAILED: %v", err)
	}
	rep.Idle = idle
	for _, v := range []struct {
		label, initrd string
		thpOff        bool
	}{
		{"coffer pod", "", true},
		{"raw-boot", b.tinyInitrd, false},
		{"raw-boot", b.tinyInitrd, true},
		{"raw-boot-coffer-initrd", b.cofferInitrd, false},
	} {
		var row *idleRow
		var err error
		b.logf("idle memory: %s (THP disabled: %v), waiting %s", v.label, v.thpOff, b.opts.idleWait)
		if perr := withTHPDisabled(v.thpOff, func() {
			if v.initrd == "" {
				var ir *idleResult
				if ir, err = b.idleMemory(ctx); err == nil {
					row = &idleRow{QEMU: ir.QEMU, QEMUSplit: ir.QEMUSplit, Owner: &ir.Owner}
				}
			} else {
				row, err = b.rawIdle(ctx, v.label, v.initrd)
			}
		}); perr != nil {
			err = perr
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			failed++
			b.logf("idle memory (%s) FAILED: %v", v.label, err)
			continue
		}
		row.Case, row.THPOff = v.label, v.thpOff
		rep.IdleRows = append(rep.IdleRows, row)
	}
	rep.LoadAfter = benchutil.LoadAvg()
	rep.Finished = time.Now().UTC()
	if failed > 0 {
		return rep, fmt.Errorf("%d measurement(s) failed; see the progress lines above", failed)
	}
	return rep, nil
}

// quietBusy is the host CPU use below which the machine counts as quiet.
const quietBusy = 0.15

// waitQuiet samples the host's CPU use (nothing of this bench runs between
// two cases) and, with a limit, waits up to limit for it to drop below
// quietBusy. It returns the last sample and how long it waited.
func (b *bench) waitQuiet(ctx context.Context, limit time.Duration) (busy float64, waited time.Duration) {
	start := time.Now()
	logged := false
	for {
		busy = cpuBusy(ctx, 200*time.Millisecond)
		if busy < quietBusy || time.Since(start) >= limit || ctx.Err() != nil {
			return busy, time.Since(start)
		}
		if !logged {
			b.logf("host CPU %.0f%% busy (%d other QEMU processes): waiting up to %s for quiet", 100*busy, len(qemuPIDs()), limit)
			logged = true
		}
	}
}

// cpuBusy is the fraction of all CPUs' time spent busy (not idle or
// waiting for I/O) during window.
func cpuBusy(ctx context.Context, window time.Duration) float64 {
	b0, t0 := cpuTimes()
	if sleepCtx(ctx, window) != nil {
		return 0
	}
	b1, t1 := cpuTimes()
	if t1 <= t0 {
		return 0
	}
	return float64(b1-b0) / float64(t1-t0)
}

// cpuTimes returns busy and total jiffies from /proc/stat's "cpu" line.
func cpuTimes() (busy, total uint64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	// guest and guest_nice (fields 9, 10) are already in user and nice.
	if len(f) > 9 {
		for _, v := range f[9:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			total -= n
			busy -= n
		}
	}
	return busy, total
}

// userHZ is the unit of /proc/stat (USER_HZ, 100 on every Linux
// architecture coffer runs on).
const userHZ = 100

// ownCPU is the CPU time of this process and of its waited-for
// descendants.
func ownCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return benchutil.ChildCPU()
	}
	return time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) + benchutil.ChildCPU()
}

// rawBoot times one boot of the floor with initrd.
func (b *bench) rawBoot(ctx context.Context, initrd string) (result, error) {
	r, err := b.floorVM().Boot(ctx, b.tmp, initrd)
	return result{wall: r.Wall, cpu: r.CPU, uptime: r.Uptime}, err
}

// floorVM is the floor with the bench's QEMU, accelerator and guest image.
func (b *bench) floorVM() floor.VM {
	return floor.VM{QEMU: b.qemu, Accel: b.accel, Kernel: b.manifest.KernelPath(), Cmdline: b.manifest.Cmdline}
}

// cofferRun times `coffer run --rm ... -- true`. Instrumented runs add
// --log-level debug (host log only; the guest agent is not switched to
// debug) and read the agent's log port file, to split the run in phases.
func (b *bench) cofferRun(ctx context.Context, rootfs, fstype string, instrumented bool) (result, error) {
	b.seq++
	name := fmt.Sprintf("bench-%d", b.seq)
	var args []string
	if instrumented {
		args = append(args, "--log-level", "debug")
	}
	args = append(args, "run", "--rm", "--guest-dir", b.guestDir, "--rootfs", rootfs)
	if instrumented {
		args = append(args, "--name", name)
	}
	if fstype != "" {
		args = append(args, "--rootfs-type", fstype)
	}
	args = append(args, "--", "true")
	cmd := exec.CommandContext(ctx, b.coffer, args...)
	cmd.Env = b.env()
	out := benchutil.NewTail()
	var hostLog bytes.Buffer
	cmd.Stdout = out
	if instrumented {
		cmd.Stderr = io.MultiWriter(out, &hostLog)
	} else {
		cmd.Stderr = out
	}

	var agentLog chan *os.File
	stopWatch := func() {}
	if instrumented {
		agentLog = make(chan *os.File, 1)
		wctx, cancel := context.WithCancel(ctx)
		stopWatch = cancel
		go watchFile(wctx, filepath.Join(sandbox.VMDir(sandbox.PodDir(b.rt, name)), "agent.log"), agentLog)
	}
	start := time.Now()
	wall, cpu, err := benchutil.Timed(cmd, syscall.SIGTERM)
	end := start.Add(wall)
	stopWatch()
	var alog []byte
	if instrumented {
		// The watcher always sends once, an open file or nil.
		if f := <-agentLog; f != nil {
			alog, _ = io.ReadAll(f)
			f.Close()
		}
	}
	if err != nil {
		return result{}, benchutil.CmdError("coffer run", err, out)
	}
	r := result{wall: wall, cpu: cpu}
	if instrumented {
		ps, err := splitRun(start, end, hostLog.String(), string(alog))
		if err != nil {
			return result{}, fmt.Errorf("split the coffer run into phases: %w", err)
		}
		r.phases = ps
	}
	return r, nil
}

// watchFile opens path as soon as it exists and sends the open file (nil
// if ctx ends first). The open file keeps its content readable after the
// pod directory is removed.
func watchFile(ctx context.Context, path string, ch chan<- *os.File) {
	for {
		if f, err := os.Open(path); err == nil {
			ch <- f
			return
		}
		select {
		case <-ctx.Done():
			ch <- nil
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (b *bench) runcRun(ctx context.Context) (result, error) {
	b.seq++
	id := fmt.Sprintf("coffer-bench-%d-%d", os.Getpid(), b.seq)
	b.runcID = id
	out := benchutil.NewTail()
	cmd := exec.CommandContext(ctx, "runc", "--root", b.runcRoot, "run", "--bundle", b.bundle, id)
	cmd.Stdout, cmd.Stderr = out, out
	wall, cpu, err := benchutil.Timed(cmd, syscall.SIGKILL)
	// runc run removes the container when it exits; delete -f covers a
	// failed run. Not timed.
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_ = exec.CommandContext(dctx, "runc", "--root", b.runcRoot, "delete", "-f", id).Run()
	cancel()
	b.runcID = ""
	if err != nil {
		return result{}, benchutil.CmdError("runc run", err, out)
	}
	return result{wall: wall, cpu: cpu}, nil
}

// mkfs times the rootfs image build exactly as coffer does it.
func (b *bench) mkfs(ctx context.Context, dir, fstype string) (result, error) {
	b.seq++
	img := filepath.Join(b.images, fmt.Sprintf("rootfs-%d.img", b.seq))
	defer os.Remove(img)
	cpu0 := benchutil.ChildCPU()
	t0 := time.Now()
	err := sandbox.BuildRootfsImage(ctx, dir, img, fstype)
	wall := time.Since(t0)
	cpu := benchutil.ChildCPU() - cpu0
	if err != nil {
		return result{}, err
	}
	fi, err := os.Stat(img)
	if err != nil {
		return result{}, err
	}
	return result{wall: wall, cpu: cpu, size: fi.Size()}, nil
}

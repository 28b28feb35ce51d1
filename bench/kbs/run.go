package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/coffer-project/coffer/internal/tee/sim"
	"golang.org/x/sys/unix"
)

// machineInfo describes where the benchmark ran.
type machineInfo struct {
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model"`
	Kernel     string `json:"kernel"`
	GoVersion  string `json:"go"`
	KBS        string `json:"coffer_kbs"`
	KBSVersion string `json:"coffer_kbs_version"`
	DataDisk   string `json:"data_dir_filesystem"`
}

func machine(kbs string) machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), KBS: kbs}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if out, err := exec.Command(kbs, "--version").Output(); err == nil {
		m.KBSVersion = strings.TrimSpace(string(out))
	}
	var st unix.Statfs_t
	if unix.Statfs(os.TempDir(), &st) == nil {
		m.DataDisk = fmt.Sprintf("%s on filesystem type 0x%x", os.TempDir(), st.Type)
		switch st.Type {
		case unix.TMPFS_MAGIC:
			m.DataDisk = os.TempDir() + " on tmpfs (fsync is free: set TMPDIR to a disk)"
		case unix.EXT4_SUPER_MAGIC:
			m.DataDisk = os.TempDir() + " on ext4"
		case unix.XFS_SUPER_MAGIC:
			m.DataDisk = os.TempDir() + " on xfs"
		case unix.BTRFS_SUPER_MAGIC:
			m.DataDisk = os.TempDir() + " on btrfs"
		}
	}
	return m
}

// floorParallelism is the goroutine counts of the crypto floor: 1 and the
// number of CPUs.
func floorParallelism() []int {
	if n := runtime.NumCPU(); n > 1 {
		return []int{1, n}
	}
	return []int{1}
}

// run does the whole benchmark: the handshake cases against the real
// binary, the crypto floor and, with -cpuprofile, the profiled in-process
// server. A partial report is returned with an error.
func run(ctx context.Context, opts options, progress io.Writer) (*report, error) {
	kbs, err := filepath.Abs(opts.kbs)
	if err != nil {
		return nil, err
	}
	rep := &report{Machine: machine(kbs), Opts: opts, Started: time.Now()}
	rep.LoadWaited = waitForQuiet(ctx, opts.maxLoad, opts.loadWait, progress)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep.LoadBefore, _ = loadAvg()

	resource := make([]byte, opts.resourceSize)
	if _, err := rand.Read(resource); err != nil {
		return nil, err
	}

	fmt.Fprintf(progress, "starting %s --dev --insecure-http (fresh data dir, free loopback port)\n", kbs)
	p, err := startKBS(ctx, kbs, opts.sessionsMax)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			p.kill()
			os.RemoveAll(p.tmp)
		}
	}()
	var chip *sim.Processor
	for _, t := range opts.tees {
		if t == teeSNP {
			// The server generated its simulated chip at start-up (--dev).
			if chip, err = sim.Load(filepath.Join(p.dataDir, "sim-snp")); err != nil {
				return nil, fmt.Errorf("load the server's simulated SNP chip: %w", err)
			}
		}
	}
	if err := setUpServer(ctx, opts, p.url, chip, resource); err != nil {
		return nil, err
	}

	kits := map[string]*floorKit{} // per TEE, for the bracketing and the separate floors
	for _, t := range opts.tees {
		att, err := attesterFactory(t, chip)
		if err != nil {
			return nil, err
		}
		kit, err := newFloorKit(t, chip, resource)
		if err != nil {
			return rep, err
		}
		kit.freshKey, kit.verifyToken = opts.freshClient, opts.floorTokenVerify
		kits[t] = kit
		for _, n := range opts.clients {
			label := fmt.Sprintf("coffer-kbs binary, %s, %d clients: %s warm-up + %s", t, n, opts.warmup, opts.dur)
			res, err := measureCase(ctx, opts, progress, kit, n, label, func() (*caseResult, error) {
				res, err := runLoad(ctx, loadConfig{tee: t, clients: n, warmup: opts.warmup, dur: opts.dur,
					url: p.url, path: benchResourcePath, want: resource, attester: att, freshClient: opts.freshClient, netHTTP: opts.netHTTP, addr: hostPort(p.url), serverCPU: p.cpuTime})
				if err != nil {
					return nil, fmt.Errorf("%w\n%s", err, p.logTail(1500))
				}
				return res, nil
			})
			if err != nil {
				return rep, err
			}
			rep.Cases = append(rep.Cases, res)
		}
	}
	stopped = true
	if err := p.stop(); err != nil {
		return rep, err
	}

	if k := kits[teeSample]; opts.transportFloors && k != nil {
		n := rep.maxClients()
		for _, mode := range []string{transportTCP, transportHTTP} {
			label := fmt.Sprintf("transport floor %s, %s, %d clients: %s warm-up + %s", mode, k.tee, n, opts.warmup, opts.dur)
			res, err := measureCase(ctx, opts, progress, k, n, label, func() (*caseResult, error) {
				return runTransportFloor(ctx, k, mode, n, opts.warmup, opts.dur)
			})
			if err != nil {
				return rep, err
			}
			rep.Transport = append(rep.Transport, res)
		}
	}

	for _, t := range opts.tees {
		k := kits[t]
		for _, g := range floorParallelism() {
			label := fmt.Sprintf("crypto floor, %s, %d goroutine(s): %s warm-up + %s", t, g, opts.warmup, opts.floorDur)
			f, err := measureFloor(ctx, opts, progress, label, k, g, opts.warmup, opts.floorDur)
			if err != nil {
				return rep, err
			}
			rep.Floors = append(rep.Floors, f)
		}
	}

	if opts.cpuprofile != "" {
		n := 0
		for _, c := range opts.clients {
			n = max(n, c)
		}
		prof, err := runProfiled(ctx, opts, n, resource, progress)
		rep.Profiled = prof
		if err != nil {
			return rep, fmt.Errorf("profiled in-process run: %w", err)
		}
	}
	rep.LoadAfter, _ = loadAvg()
	rep.Finished = time.Now()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	if fails := rep.failedCases(); len(fails) > 0 {
		return rep, errors.New("handshakes failed in: " + strings.Join(fails, ", "))
	}
	return rep, nil
}

// measureCase runs a case with n clients (run), repeated like the floors
// while other processes disturb it, bracketed by crypto floors of kit
// measured right before and after it. The bracketing floors are repeated
// when disturbed as well: one disturbed floor moves the ratio as much as a
// disturbed case.
func measureCase(ctx context.Context, opts options, progress io.Writer, kit *floorKit, n int, label string, run func() (*caseResult, error)) (*caseResult, error) {
	before, err := bracketFloor(ctx, opts, progress, kit, n, "before")
	if err != nil {
		return nil, err
	}
	var res *caseResult
	q, err := repeatUntilQuiet(ctx, opts, progress, label, func() (float64, error) {
		var err error
		if res, err = run(); err != nil {
			return 0, err
		}
		return res.otherCores(), nil
	})
	if err != nil {
		return nil, err
	}
	res.Quiet = q
	after, err := bracketFloor(ctx, opts, progress, kit, n, "after")
	if err != nil {
		return nil, err
	}
	if before != nil && after != nil {
		res.Bracket = []*floorResult{before, after}
	}
	return res, nil
}

// bracketFloor measures the crypto floor right before or after (when) a
// case with n clients, with min(n, CPUs) goroutines for -bracket-d; nil
// when bracketing is off.
func bracketFloor(ctx context.Context, opts options, progress io.Writer, kit *floorKit, n int, when string) (*floorResult, error) {
	if opts.bracketDur <= 0 {
		return nil, nil
	}
	g := min(n, runtime.NumCPU())
	label := fmt.Sprintf("crypto floor %s the case, %s, %d goroutine(s): %s", when, kit.tee, g, opts.bracketDur)
	return measureFloor(ctx, opts, progress, label, kit, g, 0, opts.bracketDur)
}

// measureFloor runs the crypto floor with g goroutines, repeated like the
// handshake cases while other processes disturb it.
func measureFloor(ctx context.Context, opts options, progress io.Writer, label string, kit *floorKit, g int, warmup, dur time.Duration) (*floorResult, error) {
	var f *floorResult
	q, err := repeatUntilQuiet(ctx, opts, progress, label, func() (float64, error) {
		var err error
		if f, err = runFloor(ctx, kit, g, warmup, dur); err != nil {
			return 0, err
		}
		return f.otherCores(), nil
	})
	if err != nil {
		return nil, err
	}
	f.Quiet = q
	return f, nil
}

// quietStats records how quiet the host was around a measurement.
type quietStats struct {
	// BusyBefore is the host CPU share busy in the second before the
	// last attempt (the benchmark idle).
	BusyBefore float64
	// Waited is the time spent waiting for quiet (-quiet-wait), in all.
	Waited time.Duration
	// Attempts counts the measurements; more than one means earlier ones
	// were disturbed by other processes and repeated.
	Attempts int
}

// repeatUntilQuiet waits for a quiet host and runs measure, which returns
// the CPU cores other processes used during its window; a measurement
// disturbed by more than -max-other cores is repeated, up to -retries
// times (the last one is kept either way, and the report flags it).
func repeatUntilQuiet(ctx context.Context, opts options, progress io.Writer, label string, measure func() (float64, error)) (quietStats, error) {
	var q quietStats
	for {
		q.Attempts++
		busy, waited := waitQuietCPU(ctx, opts.quietWait, progress)
		q.BusyBefore = busy
		q.Waited += waited
		if q.Attempts == 1 {
			fmt.Fprintln(progress, label)
		} else {
			fmt.Fprintf(progress, "%s (attempt %d)\n", label, q.Attempts)
		}
		others, err := measure()
		if err != nil {
			return q, err
		}
		if others <= opts.maxOther {
			return q, nil
		}
		if q.Attempts > opts.retries {
			fmt.Fprintf(progress, "  other processes used %.2f CPU cores during the measurement; keeping it, flagged as disturbed\n", others)
			return q, nil
		}
		fmt.Fprintf(progress, "  other processes used %.2f CPU cores during the measurement (> %.2f): repeating it\n", others, opts.maxOther)
	}
}

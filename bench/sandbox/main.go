package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/coffer-project/coffer/bench/internal/benchutil"

	"github.com/coffer-project/coffer/internal/guest"
)

// options are the command-line flags.
type options struct {
	n          int
	json       bool
	jsonFile   string
	coffer     string
	guestDir   string
	bigTree    string
	bigRun     bool
	initPath   string
	idleWait   time.Duration
	runTimeout time.Duration
	quietWait  time.Duration
	quiet      bool
	seed       uint64
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sandbox [flags]\n\nBenchmarks coffer run against a raw QEMU boot of the same kernel and runc (see docs/benchmarks.md).\n\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&o.n, "n", 10, "measured iterations per case (plus 1 warm-up)")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&o.jsonFile, "json-file", "", "also write the results as JSON to this file")
	fs.StringVar(&o.coffer, "coffer", "bin/coffer", "coffer binary to benchmark")
	fs.StringVar(&o.guestDir, "guest-dir", guest.DefaultCacheDir(), "guest image directory (from `coffer guest build`); copied so the run cannot see a rebuild")
	fs.StringVar(&o.bigTree, "big-tree", "", "directory copied into the big rootfs for the erofs/ext4 comparison (default /usr/lib/python3.11, else /usr/share/doc)")
	fs.BoolVar(&o.bigRun, "big-run", true, "also time coffer run with the big rootfs (erofs and ext4)")
	fs.StringVar(&o.initPath, "init", "", "static build of ./bench/sandbox/tinyinit for the trivial initrd (default: built with go build)")
	fs.DurationVar(&o.quietWait, "quiet-wait", 0, "before each run, wait up to this long for the host CPU to be less than 15% busy (others' VMs and builds); 0: only record it")
	fs.DurationVar(&o.idleWait, "idle-wait", 5*time.Second, "how long the idle sandbox runs before its memory is read")
	fs.DurationVar(&o.runTimeout, "run-timeout", 3*time.Minute, "timeout of a single measured run")
	fs.BoolVar(&o.quiet, "q", false, "no progress lines on stderr")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the per-iteration case order (0: random; printed, to repeat a run)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: this command takes only flags", fs.Args())
	}
	if o.n < 1 {
		return o, fmt.Errorf("-n %d: use at least 1 iteration", o.n)
	}
	return o, nil
}

func main() {
	os.Exit(benchutil.Main(os.Args[1:], parseFlags,
		func(o options) benchutil.Flags {
			return benchutil.Flags{Quiet: o.quiet, JSON: o.json, JSONFile: o.jsonFile}
		},
		func(ctx context.Context, o options, progress io.Writer) (*benchutil.Output, error) {
			b, err := newBench(ctx, o, progress)
			if b != nil {
				defer b.cleanup()
			}
			if err != nil {
				return nil, fmt.Errorf("set-up failed: %w", err)
			}
			rep, err := b.run(ctx)
			if rep == nil {
				return nil, err
			}
			return &benchutil.Output{JSON: func() any { return rep.toJSON() }, Table: rep.printTable}, err
		}))
}

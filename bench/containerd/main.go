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
	shim       string
	guestDir   string
	containerd string
	ctr        string
	runTimeout time.Duration
	quiet      bool
	seed       uint64
	initPath   string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("containerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: containerd [flags]\n\nBenchmarks ctr run with Coffer's shim against runc and coffer run (see docs/benchmarks.md).\n\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&o.n, "n", 10, "measured rounds (plus 1 warm-up); each round runs every case once")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&o.jsonFile, "json-file", "", "also write the results as JSON to this file")
	fs.StringVar(&o.coffer, "coffer", "bin/coffer", "coffer binary")
	fs.StringVar(&o.shim, "shim", "bin/containerd-shim-coffer-v2", "containerd-shim-coffer-v2 binary")
	fs.StringVar(&o.guestDir, "guest-dir", guest.DefaultCacheDir(), "guest image directory (from `coffer guest build`)")
	fs.StringVar(&o.containerd, "containerd", "containerd", "containerd binary (its own root, state and socket are private to the run)")
	fs.StringVar(&o.ctr, "ctr", "ctr", "ctr binary matching -containerd")
	fs.DurationVar(&o.runTimeout, "run-timeout", 3*time.Minute, "timeout of a single measured run")
	fs.BoolVar(&o.quiet, "q", false, "no progress lines on stderr")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the per-round case order (0: random; printed, to repeat a run)")
	fs.StringVar(&o.initPath, "init", "", "static build of bench/sandbox/tinyinit for the raw boot floor (run.sh builds it; empty: go build it)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: this command takes only flags", fs.Args())
	}
	if o.n < 1 {
		return o, fmt.Errorf("-n %d: use at least 1 round", o.n)
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
			return &benchutil.Output{JSON: rep.toJSON, Table: rep.printTable}, err
		}))
}

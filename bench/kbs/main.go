package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
)

// options are the command-line flags.
type options struct {
	dur          time.Duration
	warmup       time.Duration
	floorDur     time.Duration
	bracketDur   time.Duration
	clients      []int
	tees         []string
	kbs          string
	json         bool
	jsonFile     string
	cpuprofile   string
	profileDur   time.Duration
	sessionsMax  int
	resourceSize int
	// referenceValues registers reference values so that appraisals are
	// affirming, as in a deployment.
	referenceValues bool
	// freshClient makes every handshake use a new KBS client and TEE key
	// pair instead of one per client worker.
	freshClient bool
	// netHTTP makes the clients share a net/http Transport.
	netHTTP bool
	// gcPercent is GOGC of this process (load generator and floor alike).
	gcPercent int
	// floorTokenVerify adds the token's signature check to the floor.
	floorTokenVerify bool
	maxLoad          float64
	loadWait         time.Duration
	quietWait        time.Duration
	maxOther         float64
	retries          int
	quiet            bool
	// transportFloors measures the tcp and http transport floors.
	transportFloors bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var clients, tees string
	fs := flag.NewFlagSet("kbs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: kbs [flags]\n\nBenchmarks coffer-kbs handshakes against the in-process crypto floor (see docs/benchmarks.md).\n\n")
		fs.PrintDefaults()
	}
	fs.DurationVar(&o.dur, "d", 10*time.Second, "measured duration of each handshake case (after the warm-up)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warm-up before each case (handshakes not counted)")
	fs.DurationVar(&o.floorDur, "floor-d", 5*time.Second, "measured duration of each crypto-floor case")
	fs.DurationVar(&o.bracketDur, "bracket-d", 2*time.Second, "measure the crypto floor right before and right after each handshake case for this long, and compare the case with their mean (this VM's speed drifts within minutes); 0: compare with the separate floor cases only")
	fs.StringVar(&clients, "clients", "1,64", "comma-separated concurrent client counts")
	fs.StringVar(&tees, "tee", "sample,snp", "comma-separated TEEs: sample, snp (simulated SEV-SNP)")
	fs.StringVar(&o.kbs, "kbs", "bin/coffer-kbs", "coffer-kbs binary to benchmark (make build)")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&o.jsonFile, "json-file", "", "also write the results as JSON to this file")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "also run the server in-process under the highest client count and write its CPU profile per TEE to this file name with -<tee> before the extension (e.g. kbs.pprof -> kbs-sample.pprof)")
	fs.DurationVar(&o.profileDur, "profile-d", 0, "measured duration of each profiled in-process case (default -d)")
	fs.IntVar(&o.sessionsMax, "sessions-max", 1<<20, "the server's [sessions] max; 0 keeps coffer-kbs's default (10000 open sessions for 5 minutes each, which caps a sustained handshake rate at 33/s)")
	fs.BoolVar(&o.referenceValues, "reference-values", true, "register reference values matching the benchmark's guests, so appraisals are affirming as in a deployment; false measures a bare --dev server, where every appraisal is contraindicated and explained")
	fs.BoolVar(&o.freshClient, "fresh-client", false, "give every handshake a new KBS client and a new TEE key pair; by default each client worker keeps one client and one key pair across its handshakes, as a guest does for one boot (every handshake is still a full auth, attest and get-resource on a new session)")
	fs.IntVar(&o.gcPercent, "gc-percent", 800, "GOGC of this benchmark process: the load generator and the crypto floor alike (the coffer-kbs server keeps its own default). The load generator is not what is measured: collecting its garbage less often leaves more CPU to the server (+10-23% handshakes/s in A/B runs) and speeds the floor as much, so the ratio does not move; 100 is Go's default")
	fs.BoolVar(&o.netHTTP, "client-net-http", false, "the clients share one net/http Transport (as before), instead of each worker sending its requests on its own keep-alive connection from its own goroutine (a cheaper load generator; the server and the KBS client library are the same)")
	fs.BoolVar(&o.floorTokenVerify, "floor-token-verify", false, "include the ES256 check of the token in the crypto floor (the server makes it for Bearer-only requests; the benchmark's clients send their session cookie, whose token the server issued and kept, so it needs none)")
	fs.IntVar(&o.resourceSize, "resource-size", 256, "size in bytes of the resource each handshake fetches")
	fs.Float64Var(&o.maxLoad, "max-load", 1.5, "before starting, wait until the 1-minute load average is at most this (0: do not wait)")
	fs.DurationVar(&o.loadWait, "load-wait", 5*time.Minute, "how long to wait for -max-load before running anyway (the load is recorded)")
	fs.DurationVar(&o.quietWait, "quiet-wait", 2*time.Minute, "before each case, wait up to this long for the host CPUs to be less than 15% busy (others' VMs and builds); 0: only record it")
	fs.Float64Var(&o.maxOther, "max-other", 0.1, "repeat a measurement during which other processes used more than this many CPU cores")
	fs.IntVar(&o.retries, "retries", 3, "how many times a disturbed measurement is repeated (the last one is kept and flagged)")
	fs.BoolVar(&o.quiet, "q", false, "no progress lines on stderr")
	fs.BoolVar(&o.transportFloors, "transport-floors", true, "also measure the transport floors for sample at the highest client count: the crypto floor's handshake split between two processes over loopback TCP, as raw messages (tcp) and as net/http handlers (http), without the KBS's sessions, policy, store or audit")

	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: this command takes only flags", fs.Args())
	}
	if o.dur <= 0 || o.floorDur <= 0 || o.warmup < 0 {
		return o, errors.New("-d and -floor-d must be positive and -warmup not negative")
	}
	if o.gcPercent < 1 {
		return o, fmt.Errorf("-gc-percent %d: use a positive GOGC (100 is Go's default)", o.gcPercent)
	}
	if o.profileDur == 0 {
		o.profileDur = o.dur
	}
	if o.resourceSize < 1 || o.resourceSize > 1<<20 {
		return o, fmt.Errorf("-resource-size %d: use 1 byte to 1 MiB", o.resourceSize)
	}
	if o.sessionsMax < 0 {
		return o, fmt.Errorf("-sessions-max %d: use 0 (server default) or a positive count", o.sessionsMax)
	}
	for _, f := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 4096 {
			return o, fmt.Errorf("-clients %q: want comma-separated counts from 1 to 4096", clients)
		}
		o.clients = append(o.clients, n)
	}
	for _, f := range strings.Split(tees, ",") {
		t := strings.TrimSpace(f)
		if t != teeSample && t != teeSNP {
			return o, fmt.Errorf("-tee %q: want sample and/or snp", tees)
		}
		o.tees = append(o.tees, t)
	}
	return o, nil
}

func main() {
	os.Exit(realMain())
}

func realMain() int {
	if spec := os.Getenv(transportFloorEnv); spec != "" {
		return serveTransportFloor(spec)
	}
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	debug.SetGCPercent(opts.gcPercent)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	progress := io.Writer(os.Stderr)
	if opts.quiet {
		progress = io.Discard
	}
	rep, runErr := run(ctx, opts, progress)
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted; the server and temporary directories were removed")
		return 130
	}
	if rep != nil {
		if code := benchutil.Emit(func() any { return rep.toJSON() }, rep.printTable, opts.json, opts.jsonFile); code != 0 {
			return code
		}
	}
	if runErr != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", runErr)
		return 1
	}
	return 0
}

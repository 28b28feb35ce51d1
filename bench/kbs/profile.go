package main

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"

	"github.com/coffer-project/coffer/internal/kbs/client"
	"github.com/coffer-project/coffer/internal/kbs/server"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
)

// profiledCase is a handshake case against the in-process server, with the
// analysis of its CPU profile.
type profiledCase struct {
	Result  *caseResult
	Profile *profileSummary
}

// profileFile inserts -<tee> before the extension of the -cpuprofile name.
func profileFile(base, teeName string) string {
	ext := filepath.Ext(base)
	return strings.TrimSuffix(base, ext) + "-" + teeName + ext
}

// runProfiled runs the server in the benchmark process (server.Open with
// the configuration coffer-kbs --dev --insecure-http would use, behind a
// loopback listener), and for each TEE runs the load with a CPU profile
// written to profileFile(opts.cpuprofile, tee). The server's goroutines
// carry the pprof label side=server, the clients' side=client.
func runProfiled(ctx context.Context, opts options, clients int, resource []byte, progress io.Writer) ([]*profiledCase, error) {
	// The server runs in this process here: give it Go's default GOGC,
	// as the coffer-kbs binary has, whatever -gc-percent set.
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tmp, err := os.MkdirTemp("", "coffer-bench-kbs-inproc-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	cfg := server.DefaultConfig()
	cfg.Dev, cfg.InsecureHTTP = true, true
	cfg.DataDir = filepath.Join(tmp, "data")
	cfg.Listen = "127.0.0.1:0"
	if opts.sessionsMax > 0 {
		cfg.Sessions.Max = opts.sessionsMax
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("in-process server configuration: %w", err)
	}
	// The binary logs text to stderr at info level; log the same to a file.
	logf, err := os.Create(filepath.Join(tmp, "coffer-kbs.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	log := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Some server packages log through the default logger, which the
	// binary points at the same stderr; keep their lines out of the report.
	prevDefault := slog.Default()
	slog.SetDefault(log)
	defer slog.SetDefault(prevDefault)
	d, err := server.Open(ctx, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("open the in-process server: %w", err)
	}
	defer d.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the in-process server: %w", err)
	}
	// The settings of Daemon.Serve.
	hs := &http.Server{
		Handler:           d.Server,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    256 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	// Goroutines inherit labels: every connection goroutine is side=server.
	go pprof.Do(context.Background(), pprof.Labels("side", "server"), func(context.Context) {
		served <- hs.Serve(ln)
	})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go d.Server.RunSweeper(sctx, time.Minute)
	defer func() {
		shctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(shctx)
		<-served
	}()
	url := "http://" + ln.Addr().String()
	if err := setUpServer(ctx, opts, url, d.SimRoots, resource); err != nil {
		return nil, err
	}

	var out []*profiledCase
	for _, teeName := range opts.tees {
		att, err := attesterFactory(teeName, d.SimRoots)
		if err != nil {
			return out, err
		}
		file := profileFile(opts.cpuprofile, teeName)
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return out, fmt.Errorf("create the -cpuprofile directory: %w", err)
		}
		var res *caseResult
		label := fmt.Sprintf("in-process server, %s, %d clients, %s with a CPU profile -> %s", teeName, clients, opts.profileDur, file)
		q, err := repeatUntilQuiet(ctx, opts, progress, label, func() (float64, error) {
			f, err := os.Create(file)
			if err != nil {
				return 0, fmt.Errorf("create -cpuprofile file: %w", err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				return 0, fmt.Errorf("start the CPU profile: %w", err)
			}
			res, err = runLoad(ctx, loadConfig{tee: teeName, clients: clients, warmup: opts.warmup, dur: opts.profileDur,
				url: url, path: benchResourcePath, want: resource, attester: att, freshClient: opts.freshClient, netHTTP: opts.netHTTP, addr: hostPort(url), label: true})
			pprof.StopCPUProfile()
			if cerr := f.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("write the CPU profile: %w", cerr)
			}
			if err != nil {
				return 0, err
			}
			return res.otherCores(), nil
		})
		if err != nil {
			return out, err
		}
		res.Quiet = q
		ps, err := analyzeProfile(file, 25)
		if err != nil {
			return out, fmt.Errorf("analyze %s: %w", file, err)
		}
		out = append(out, &profiledCase{Result: res, Profile: ps})
	}
	return out, nil
}

// benchResourcePath is the resource every handshake fetches.
const benchResourcePath = "bench/key/secret"

// benchMeasurement is the launch measurement of the simulated SNP guest.
func benchMeasurement() [abi.MeasurementSize]byte {
	return sha512.Sum384([]byte("coffer bench/kbs simulated guest"))
}

// referenceValues are what the default_cpu appraisal policy needs to
// affirm the benchmark's guests: Trustee's sample values (the sample
// verifier's fixed claims) and the simulated guest's measurement and TCB.
func referenceValues(tees []string, chip *sim.Processor) []struct {
	name   string
	value  any
	single bool
} {
	type rv = struct {
		name   string
		value  any
		single bool
	}
	var out []rv
	for _, t := range tees {
		switch t {
		case teeSample:
			out = append(out, rv{"launch_digest", "abcde", false}, rv{"svn", "1", false},
				rv{"major_version", 1, true}, rv{"minimum_minor_version", 1, true})
		case teeSNP:
			m := benchMeasurement()
			tcb := chip.TCB()
			out = append(out, rv{"snp_launch_measurement", hex.EncodeToString(m[:]), false},
				rv{"snp_bootloader", tcb.Bootloader, true}, rv{"snp_tee_svn", tcb.TEE, true},
				rv{"snp_snp_svn", tcb.SNP, true}, rv{"snp_microcode", tcb.Microcode, true})
		}
	}
	return out
}

// setUpServer uploads the resource and, with -reference-values, registers
// the reference values, through the (dev, allow-all) admin API.
func setUpServer(ctx context.Context, opts options, url string, chip *sim.Processor, resource []byte) error {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer hc.CloseIdleConnections()
	admin := client.NewAdmin(url, hc, "")
	if err := admin.SetResource(ctx, benchResourcePath, resource); err != nil {
		return fmt.Errorf("upload the benchmark resource %s: %w", benchResourcePath, err)
	}
	if !opts.referenceValues {
		return nil
	}
	for _, rv := range referenceValues(opts.tees, chip) {
		if err := admin.SetSampleReferenceValue(ctx, rv.name, rv.value, rv.single); err != nil {
			return fmt.Errorf("register reference value %s: %w", rv.name, err)
		}
	}
	return nil
}

// attesterFactory returns a constructor of one client's attester. For snp
// every client is a report request to one guest launched on chip (the
// server's simulated SNP chip).
func attesterFactory(teeName string, chip *sim.Processor) (func() tee.Attester, error) {
	switch teeName {
	case teeSample:
		return func() tee.Attester { return tee.NewSample() }, nil
	case teeSNP:
		if chip == nil {
			return nil, errors.New("the server has no simulated SNP chip (is it in --dev mode?)")
		}
		g, err := chip.Launch(sim.LaunchConfig{Measurement: benchMeasurement()})
		if err != nil {
			return nil, fmt.Errorf("launch a simulated SNP guest: %w", err)
		}
		return func() tee.Attester { return tee.NewSimSNP(g) }, nil
	}
	return nil, fmt.Errorf("unknown TEE %q", teeName)
}

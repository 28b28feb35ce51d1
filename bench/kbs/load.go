package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/client"
	"github.com/coffer-project/coffer/internal/tee"
)

// TEE names the benchmark knows.
const (
	teeSample = "sample"
	teeSNP    = "snp"
)

// loadConfig is one handshake case.
type loadConfig struct {
	tee     string
	clients int
	warmup  time.Duration
	dur     time.Duration
	url     string
	path    string // resource path repo/type/tag
	want    []byte // the resource's content
	// attester returns the attester of one new client.
	attester func() tee.Attester
	// freshClient: a new client (and TEE key pair) per handshake rather
	// than one per worker.
	freshClient bool
	// netHTTP: the workers share one net/http Transport instead of each
	// using a connTransport; addr is the server's host:port.
	netHTTP bool
	addr    string
	// serverCPU returns the server process's CPU time; nil when the server
	// runs in the benchmark process.
	serverCPU func() (cpuTimes, error)
	// label sets the pprof label side=client on the client goroutines.
	label bool
}

// caseResult is the outcome of one handshake case.
type caseResult struct {
	TEE     string
	Clients int
	// Transport is the transport floor's kind (tcp, http); empty for a
	// coffer-kbs case.
	Transport string
	// Window is the measured time (after the warm-up).
	Window time.Duration
	// Handshakes completed successfully within the window.
	Handshakes int
	// Errors are failed handshakes started within the window.
	Errors       int
	ErrorSamples []string
	// Latencies of the successful handshakes started within the window.
	Latencies []time.Duration
	// CPU used within the window by the benchmark process (the clients,
	// plus the in-process server if there is one), by the server process,
	// and by the whole host.
	ClientCPU time.Duration
	ServerCPU time.Duration
	// ServerSys is the system (kernel) part of ServerCPU: syscalls,
	// network stack, fsync.
	ServerSys time.Duration
	Host      hostCPU
	// Dials is the number of TCP connections the clients opened
	// (keep-alive: about one per concurrent client).
	Dials int64
	// TokenBytes is the size of an attestation token the server issued,
	// Appraisal its EAR status.
	TokenBytes int
	Appraisal  string
	// Quiet says how quiet the host was.
	Quiet quietStats
	// Bracket are the crypto floors measured right before and right after
	// the case (-bracket-d), with min(clients, CPUs) goroutines.
	Bracket []*floorResult
}

// otherCores is the CPU (in cores) that neither the benchmark nor the
// server used during the window: other processes on the host.
func (c *caseResult) otherCores() float64 {
	return cores(max(0, c.Host.busy-c.ClientCPU-c.ServerCPU), c.Window)
}

func (c *caseResult) rate() float64 {
	if c.Window <= 0 {
		return 0
	}
	return float64(c.Handshakes) / c.Window.Seconds()
}

// perHandshake divides a CPU time by the handshake count.
func (c *caseResult) perHandshake(d time.Duration) time.Duration {
	if c.Handshakes == 0 {
		return 0
	}
	return d / time.Duration(c.Handshakes)
}

// newHTTPClient returns a keep-alive client for n concurrent users of one
// host, counting the connections it dials.
func newHTTPClient(n int, dials *atomic.Int64) (*http.Client, *http.Transport) {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy: nil, // loopback: never through an environment proxy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        0, // no overall limit
		MaxIdleConnsPerHost: n + 16,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, tr
}

// discardLog silences the KBS client.
var discardLog = slog.New(slog.DiscardHandler)

// newClient returns a KBS client with its own cookie jar, attester and
// TEE key pair.
func newClient(cfg *loadConfig, hc *http.Client) (*client.Client, error) {
	return client.New(cfg.url, cfg.attester(), client.Options{HTTPClient: hc, Log: discardLog})
}

// handshake is one full RCAR exchange on a new session: auth, attest,
// get-resource, and the check of the plaintext. c is nil for a fresh
// client (and TEE key).
func handshake(ctx context.Context, cfg *loadConfig, hc *http.Client, c *client.Client) (token string, err error) {
	if c == nil {
		if c, err = newClient(cfg, hc); err != nil {
			return "", err
		}
	}
	tok, err := c.Attest(ctx)
	if err != nil {
		return "", err
	}
	got, err := c.GetResource(ctx, cfg.path)
	if err != nil {
		return "", err
	}
	if !bytes.Equal(got, cfg.want) {
		return "", fmt.Errorf("resource %s decrypted to %d bytes that are not the uploaded %d bytes", cfg.path, len(got), len(cfg.want))
	}
	return tok, nil
}

// appraisalStatus reads the EAR status of the token's cpu0 submodule
// (without verifying the token: this is for the report).
func appraisalStatus(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "?"
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "?"
	}
	var claims struct {
		Submods map[string]map[string]any `json:"submods"`
	}
	if json.Unmarshal(b, &claims) != nil {
		return "?"
	}
	st, _ := claims.Submods["cpu0"]["ear.status"].(string)
	if st == "" {
		return "?"
	}
	return st
}

// workerResult is what one client goroutine measured.
type workerResult struct {
	lats       []time.Duration
	done       int
	errs       int
	errSamples []string
	tokenBytes int
}

// runLoad runs cfg.clients concurrent clients, each doing handshakes back
// to back for the warm-up plus the measured window.
func runLoad(ctx context.Context, cfg loadConfig) (*caseResult, error) {
	var dials atomic.Int64
	shared, closeShared := cfg.sharedClient(&dials)
	defer closeShared()

	// One handshake first, so a broken set-up fails fast and clearly.
	probe, closeProbe := cfg.clientTransport(shared, &dials)
	tok, err := handshake(ctx, &cfg, probe, nil)
	closeProbe()
	if err != nil {
		return nil, fmt.Errorf("%s handshake against %s failed before measuring: %w", cfg.tee, cfg.url, err)
	}
	res, err := measureWorkers(ctx, cfg.clients, cfg.warmup, cfg.dur, cfg.serverCPU, &dials, func(winStart, winEnd time.Time, r *workerResult) {
		hc, release := cfg.clientTransport(shared, &dials)
		defer release()
		work := func(ctx context.Context) { worker(ctx, &cfg, hc, winStart, winEnd, r) }
		if cfg.label {
			pprof.Do(ctx, pprof.Labels("side", "client", "tee", cfg.tee), work)
		} else {
			work(ctx)
		}
	})
	if err != nil {
		return nil, err
	}
	res.TEE, res.Appraisal = cfg.tee, appraisalStatus(tok)
	return res, nil
}

// measureWorkers runs n client workers (work: one worker's loop, told the
// measured window and where to record) for the warm-up plus dur, and
// returns their totals with the CPU of this process, of the server
// (serverCPU; nil when it runs in this process) and of the host within the
// window, and the connections counted in dials.
func measureWorkers(ctx context.Context, n int, warmup, dur time.Duration, serverCPU func() (cpuTimes, error), dials *atomic.Int64,
	work func(winStart, winEnd time.Time, r *workerResult)) (*caseResult, error) {
	start := time.Now()
	winStart := start.Add(warmup)
	winEnd := winStart.Add(dur)
	results := make([]workerResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(winStart, winEnd, &results[i])
		}()
	}
	type snap struct {
		self   time.Duration
		server cpuTimes
		host   hostCPU
	}
	var snapErr error
	take := func() snap {
		s := snap{self: selfCPUTime(), host: readHostCPU()}
		if serverCPU != nil {
			var err error
			if s.server, err = serverCPU(); err != nil && snapErr == nil {
				snapErr = err
			}
		}
		return s
	}
	sleepUntil(ctx, winStart)
	s0 := take()
	sleepUntil(ctx, winEnd)
	s1 := take()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if snapErr != nil {
		return nil, fmt.Errorf("the server's CPU time: %w", snapErr)
	}
	res := &caseResult{Clients: n, Window: dur, ClientCPU: s1.self - s0.self, Host: s1.host.sub(s0.host), Dials: dials.Load(),
		ServerCPU: s1.server.total() - s0.server.total(), ServerSys: s1.server.sys - s0.server.sys}
	for _, w := range results {
		res.Latencies = append(res.Latencies, w.lats...)
		res.Handshakes += w.done
		res.Errors += w.errs
		res.TokenBytes = max(res.TokenBytes, w.tokenBytes)
		for _, e := range w.errSamples {
			if len(res.ErrorSamples) < 5 {
				res.ErrorSamples = append(res.ErrorSamples, e)
			}
		}
	}
	return res, nil
}

func worker(ctx context.Context, cfg *loadConfig, hc *http.Client, winStart, winEnd time.Time, r *workerResult) {
	var c *client.Client // one per worker: a guest's client for one boot
	if !cfg.freshClient {
		var err error
		if c, err = newClient(cfg, hc); err != nil {
			r.fail(err)
			return
		}
	}
	r.loop(ctx, winStart, winEnd, func() (int, error) {
		tok, err := handshake(ctx, cfg, hc, c)
		return len(tok), err
	})
}

// fail records an error that stops a worker before its loop.
func (r *workerResult) fail(err error) {
	r.errs++
	r.errSamples = append(r.errSamples, err.Error())
}

// loop runs handshakes back to back until winEnd: it records the latency
// of those started in the window, counts those completed in it, and
// counts (and samples) the errors of those started in it, waiting 10 ms
// after one so as not to spin on a failing server. handshake returns the
// size of the token it obtained.
func (r *workerResult) loop(ctx context.Context, winStart, winEnd time.Time, handshake func() (int, error)) {
	r.lats = make([]time.Duration, 0, 1024)
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(winEnd) {
			return
		}
		tokenBytes, err := handshake()
		t1 := time.Now()
		inWindow := !t0.Before(winStart)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if inWindow {
				r.errs++
				if len(r.errSamples) < 2 {
					r.errSamples = append(r.errSamples, err.Error())
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		r.tokenBytes = tokenBytes
		if inWindow {
			r.lats = append(r.lats, t1.Sub(t0))
		}
		if !t1.Before(winStart) && !t1.After(winEnd) {
			r.done++
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}

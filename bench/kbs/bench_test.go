package main

import (
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain lets the test binary serve the transport floors, as the
// benchmark binary does when it starts itself.
func TestMain(m *testing.M) {
	if spec := os.Getenv(transportFloorEnv); spec != "" {
		os.Exit(serveTransportFloor(spec))
	}
	os.Exit(m.Run())
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := summarize(ds)
	if l.N != 100 || l.P50 != 50*time.Millisecond || l.P90 != 90*time.Millisecond || l.P99 != 99*time.Millisecond ||
		l.Max != 100*time.Millisecond || l.Avg != 50500*time.Microsecond {
		t.Fatalf("summarize(1..100 ms) = %+v", l)
	}
	if got := summarize([]time.Duration{7}); got.P50 != 7 || got.P99 != 7 {
		t.Fatalf("one sample: %+v", got)
	}
	if got := summarize(nil); got != (latency{}) {
		t.Fatalf("no samples: %+v", got)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-d", "3s", "-clients", "1, 8", "-tee", "snp"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.dur != 3*time.Second || o.profileDur != 3*time.Second || len(o.clients) != 2 || o.clients[1] != 8 ||
		len(o.tees) != 1 || o.tees[0] != teeSNP {
		t.Fatalf("parsed %+v", o)
	}
	for _, bad := range [][]string{{"-clients", "0"}, {"-tee", "tdx"}, {"-d", "0s"}, {"extra"}, {"-resource-size", "0"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestProfileFile(t *testing.T) {
	for in, want := range map[string]string{"kbs.pprof": "kbs-snp.pprof", "/x/y": "/x/y-snp", "a.b/c.prof": "a.b/c-snp.prof"} {
		if got := profileFile(in, "snp"); got != want {
			t.Errorf("profileFile(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProcCPUTime(t *testing.T) {
	spin(50 * time.Millisecond)
	c, err := procCPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Tick-based accounting may put the whole spin in sys: check the total.
	if d := c.total(); d <= 0 || d > selfCPUTime()+time.Second {
		t.Fatalf("procCPUTime(self) = %+v, rusage says %s", c, selfCPUTime())
	}
	if h := readHostCPU(); h.total <= 0 || h.busy <= 0 || h.busy > h.total {
		t.Fatalf("readHostCPU = %+v", h)
	}
}

// spin burns d of this process's CPU time (not wall time: on a busy host
// the goroutine gets only part of a CPU).
func spin(d time.Duration) {
	end := selfCPUTime() + d
	b := []byte("x")
	for selfCPUTime() < end {
		s := sha256.Sum256(b)
		b = s[:]
	}
}

//go:noinline
func labelledSpin(d time.Duration) { spin(d) }

// TestAnalyzeProfile writes a real CPU profile with the side labels and
// checks the decoder attributes the samples.
func TestAnalyzeProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Skipf("CPU profiling is already on (go test -cpuprofile?): %v", err)
	}
	pprof.Do(context.Background(), pprof.Labels("side", "server"), func(context.Context) { labelledSpin(300 * time.Millisecond) })
	pprof.Do(context.Background(), pprof.Labels("side", "client"), func(context.Context) { spin(100 * time.Millisecond) })
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ps, err := analyzeProfile(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Server < 150*time.Millisecond || ps.Client < 30*time.Millisecond || ps.Server <= ps.Client {
		t.Fatalf("server %s, client %s, unlabelled %s, total %s", ps.Server, ps.Client, ps.Unlabeled, ps.Total)
	}
	found := false
	for _, fc := range ps.TopCum {
		if strings.HasSuffix(fc.Name, ".labelledSpin") {
			found = fc.Cum > ps.Server/2
		}
	}
	if !found {
		t.Fatalf("labelledSpin is not the server's top function: %+v", ps.TopCum)
	}
}

// TestEndToEnd builds coffer-kbs, benchmarks it briefly (real binary and
// in-process with a profile) and checks the numbers hang together and
// that nothing is left behind.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds coffer-kbs and generates a simulated SNP chip (RSA-4096): not in -short")
	}
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir) // the benchmark's temporary directories
	bin := filepath.Join(dir, "coffer-kbs")
	build := exec.Command("go", "build", "-o", bin, "github.com/coffer-project/coffer/cmd/coffer-kbs")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build coffer-kbs: %v\n%s", err, out)
	}
	opts, err := parseFlags([]string{"-kbs", bin, "-d", "700ms", "-warmup", "200ms", "-floor-d", "300ms", "-clients", "1,4",
		"-max-load", "0", "-quiet-wait", "0", "-retries", "0", "-cpuprofile", filepath.Join(dir, "prof", "kbs.pprof"), "-profile-d", "700ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := run(context.Background(), opts, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Cases) != 4 || len(rep.Floors) != 2*len(floorParallelism()) || len(rep.Profiled) != 2 {
		t.Fatalf("%d cases, %d floors, %d profiles", len(rep.Cases), len(rep.Floors), len(rep.Profiled))
	}
	for _, c := range rep.Cases {
		l := summarize(c.Latencies)
		if c.Handshakes == 0 || c.Errors != 0 || l.P50 <= 0 || l.P99 < l.P50 || c.ServerCPU <= 0 || c.ClientCPU <= 0 || c.TokenBytes < 500 {
			t.Errorf("case %s/%d: %d handshakes, %d errors %v, latency %+v, server CPU %s, client CPU %s, token %d B",
				c.TEE, c.Clients, c.Handshakes, c.Errors, c.ErrorSamples, l, c.ServerCPU, c.ClientCPU, c.TokenBytes)
		}
		// Keep-alive: about one connection per client (Go's transport may
		// dial a few extra when a connection is returned late), not one
		// per request.
		if c.Dials > 2*int64(c.Clients)+2 {
			t.Errorf("case %s/%d dialled %d connections: keep-alive is not working", c.TEE, c.Clients, c.Dials)
		}
	}
	if len(rep.Transport) != 2 {
		t.Fatalf("%d transport floors, want tcp and http", len(rep.Transport))
	}
	for _, c := range rep.Transport {
		if c.Handshakes == 0 || c.Errors != 0 || c.ServerCPU <= 0 || c.ClientCPU <= 0 || c.Dials != int64(c.Clients) {
			t.Errorf("transport floor %s: %d handshakes, %d errors, server CPU %s, client CPU %s, %d connections for %d clients",
				c.Transport, c.Handshakes, c.Errors, c.ServerCPU, c.ClientCPU, c.Dials, c.Clients)
		}
	}
	for _, f := range rep.Floors {
		if f.Ops == 0 || f.stepPerOp(stepVerify) <= 0 || f.stepPerOp(stepEncrypt) <= 0 {
			t.Errorf("floor %s/%d: %d ops, verify %s", f.TEE, f.Goroutines, f.Ops, f.stepPerOp(stepVerify))
		}
	}
	for _, pc := range rep.Profiled {
		if pc.Result.Handshakes == 0 || pc.Profile.Server <= 0 || pc.Profile.Client <= 0 {
			t.Errorf("profiled %s: %d handshakes, server %s client %s", pc.Result.TEE, pc.Result.Handshakes, pc.Profile.Server, pc.Profile.Client)
		}
		if _, err := os.Stat(pc.Profile.File); err != nil {
			t.Error(err)
		}
	}
	var sb strings.Builder
	rep.printTable(&sb)
	for _, want := range []string{"sample", "snp", "crypto floor", "PASS", "in-process server", "transport floors", "http"} {
		if !strings.Contains(sb.String(), want) && !(want == "PASS" && strings.Contains(sb.String(), "MISS")) {
			t.Errorf("table lacks %q:\n%s", want, sb.String())
		}
	}
	// Everything the benchmark created under TMPDIR is gone (only the
	// binary and the profiles remain), and no coffer-kbs is left running.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "coffer-kbs" && e.Name() != "prof" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if runtime.GOOS == "linux" {
		out, _ := exec.Command("pgrep", "-f", bin).Output()
		if len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("coffer-kbs still running: pids %s", out)
		}
	}
}

// BenchmarkTransport compares the load generator's transports on a
// trivial loopback server (same server work in both: the difference is
// the client's).
func BenchmarkTransport(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer srv.Close()
	var dials atomic.Int64
	run := func(b *testing.B, hc *http.Client) {
		cpu0, n := selfCPUTime(), 0
		defer func() { b.ReportMetric(float64((selfCPUTime()-cpu0).Microseconds())/float64(n), "cpu-µs/op") }()
		for b.Loop() {
			n++
			resp, err := hc.Post(srv.URL+"/x", "application/json", strings.NewReader(`{"a":1}`))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
	}
	b.Run("conn", func(b *testing.B) {
		t := newConnTransport(hostPort(srv.URL), &dials)
		defer t.Close()
		run(b, &http.Client{Transport: t})
	})
	b.Run("net-http", func(b *testing.B) {
		hc, tr := newHTTPClient(1, &dials)
		defer tr.CloseIdleConnections()
		run(b, hc)
	})
}

// A case is compared with the floors measured around it when there are
// two, else with the separate floor case.
func TestFloorRatioBracket(t *testing.T) {
	fl := func(ops int) *floorResult {
		return &floorResult{TEE: teeSample, Goroutines: 2, Window: time.Second, Ops: ops}
	}
	c := &caseResult{TEE: teeSample, Clients: 64, Window: time.Second, Handshakes: 3000}
	r := &report{Machine: machineInfo{CPUs: 2}, Floors: []*floorResult{fl(10000)}, Cases: []*caseResult{c}}
	if got := r.floorRatio(c); got != 0.3 {
		t.Errorf("without a bracket: %v, want 3000/10000", got)
	}
	c.Bracket = []*floorResult{fl(5000), fl(7000)}
	if got := r.floorRatio(c); got != 0.5 {
		t.Errorf("with a bracket: %v, want 3000/mean(5000, 7000)", got)
	}
	c.Bracket = []*floorResult{fl(5000), fl(0)}
	if got := r.floorRatio(c); got != 0.3 {
		t.Errorf("with a broken bracket: %v, want the separate floor's 0.3", got)
	}
}

// A ratio is flagged when a floor it was computed from was disturbed: the
// bracketing floors when the case has them, else the separate one.
func TestDisturbedBracket(t *testing.T) {
	fl := func(busy time.Duration) *floorResult {
		return &floorResult{TEE: teeSample, Goroutines: 2, Window: time.Second, Ops: 5000, CPU: time.Second, Host: hostCPU{busy: time.Second + busy}}
	}
	c := &caseResult{TEE: teeSample, Clients: 64, Window: time.Second, Handshakes: 3000}
	r := &report{Machine: machineInfo{CPUs: 2}, Opts: options{maxOther: 0.1}, Floors: []*floorResult{fl(time.Second)}, Cases: []*caseResult{c}}
	if !r.disturbed(c) {
		t.Error("no bracket, disturbed separate floor: not flagged")
	}
	c.Bracket = []*floorResult{fl(0), fl(0)}
	if r.disturbed(c) {
		t.Error("quiet bracket flagged because of the separate floor it does not use")
	}
	c.Bracket = []*floorResult{fl(0), fl(500 * time.Millisecond)}
	if !r.disturbed(c) {
		t.Error("a disturbed floor after the case: not flagged")
	}
}

// The transport floors do what the floor they are compared with does: a
// TEE key per handshake with -fresh-client, the token's check with
// -floor-token-verify; both transports complete handshakes.
func TestTransportFloorOptions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two child processes and runs handshakes for seconds: not in -short")
	}
	k, err := newFloorKit(teeSample, nil, []byte("resource bytes"))
	if err != nil {
		t.Fatal(err)
	}
	k.freshKey, k.verifyToken = true, true
	for _, mode := range []string{transportTCP, transportHTTP} {
		res, err := runTransportFloor(context.Background(), k, mode, 2, 100*time.Millisecond, 400*time.Millisecond)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if res.Handshakes == 0 || res.ServerCPU <= 0 || res.Dials != 2 || res.Transport != mode {
			t.Errorf("%s: %d handshakes, server CPU %s, %d connections", mode, res.Handshakes, res.ServerCPU, res.Dials)
		}
	}
}

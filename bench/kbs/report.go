package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets from the issue (this 2-core machine, the highest client count).
const (
	targetSampleRate = 3000.0                // sample handshakes/s
	targetP99        = 50 * time.Millisecond // at 64 clients
	targetFloorRatio = 0.5                   // of the crypto floor's rate
)

type report struct {
	Machine machineInfo
	Opts    options
	Cases   []*caseResult
	// Transport are the transport floors (sample, highest client count).
	Transport  []*caseResult
	Floors     []*floorResult
	Profiled   []*profiledCase
	LoadBefore string
	LoadAfter  string
	LoadWaited time.Duration
	Started    time.Time
	Finished   time.Time
}

// floor returns the floor of tee at g goroutines (nil if not measured).
func (r *report) floor(tee string, g int) *floorResult {
	for _, f := range r.Floors {
		if f.TEE == tee && f.Goroutines == g {
			return f
		}
	}
	return nil
}

// floorFor is the floor a case is compared with: same TEE, as many
// goroutines as the case has clients, at most one per CPU.
func (r *report) floorFor(c *caseResult) *floorResult {
	g := min(c.Clients, r.Machine.CPUs)
	if f := r.floor(c.TEE, g); f != nil {
		return f
	}
	return r.floor(c.TEE, 1)
}

// floorRatio is the case's rate over the crypto floor's: the mean of the
// floors bracketing the case when they were measured (the host's speed
// drifts; a floor measured minutes apart can be 20 % off), else the
// separate floor case.
func (r *report) floorRatio(c *caseResult) float64 {
	if rate := c.bracketRate(); rate > 0 {
		return c.rate() / rate
	}
	f := r.floorFor(c)
	if f == nil || f.rate() == 0 {
		return math.NaN()
	}
	return c.rate() / f.rate()
}

// bracketRate is the mean rate of the floors measured right before and
// after c (0 without them).
func (c *caseResult) bracketRate() float64 {
	if len(c.Bracket) != 2 || c.Bracket[0].rate() == 0 || c.Bracket[1].rate() == 0 {
		return 0
	}
	return (c.Bracket[0].rate() + c.Bracket[1].rate()) / 2
}

func (r *report) maxClients() int {
	n := 0
	for _, c := range r.Opts.clients {
		n = max(n, c)
	}
	return n
}

func (r *report) failedCases() []string {
	var out []string
	for _, c := range r.Cases {
		if c.Errors > 0 {
			out = append(out, fmt.Sprintf("%s/%d (%d errors)", c.TEE, c.Clients, c.Errors))
		}
	}
	return out
}

// clientCrypto is the client side's crypto time per handshake (TEE key,
// runtime-data digest, evidence, decryption), from the 1-goroutine floor.
func (r *report) clientCrypto(tee string) time.Duration {
	return r.floor(tee, 1).sidePerOp(sideClient)
}

// targetRow is one PASS/MISS line.
type targetRow struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Target string  `json:"target"`
	Result string  `json:"result"`
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func (r *report) targets() []targetRow {
	var rows []targetRow
	n := r.maxClients()
	for _, c := range r.Cases {
		if c.Clients != n {
			continue
		}
		// A disturbed measurement makes its PASS/MISS unreliable: say so.
		caseNote, floorNote := "", ""
		if c.otherCores() > r.Opts.maxOther {
			caseNote = " (disturbed)"
		}
		if r.disturbed(c) {
			floorNote = " (disturbed)"
		}
		if c.TEE == teeSample {
			rows = append(rows, targetRow{Name: fmt.Sprintf("sample handshakes/s at %d clients", n), Value: math.Round(c.rate()),
				Unit: "/s", Target: fmt.Sprintf(">= %.0f", targetSampleRate), Result: passMiss(c.rate() >= targetSampleRate) + caseNote})
		}
		p99 := summarize(c.Latencies).P99
		rows = append(rows, targetRow{Name: fmt.Sprintf("%s p99 latency at %d clients", c.TEE, n), Value: ms(p99),
			Unit: "ms", Target: fmt.Sprintf("<= %s", fmtDur(targetP99)), Result: passMiss(c.Handshakes > 0 && p99 <= targetP99) + caseNote})
		ratio := r.floorRatio(c)
		rows = append(rows, targetRow{Name: fmt.Sprintf("%s rate / crypto floor (%d goroutines)", c.TEE, r.floorFor(c).goroutines()), Value: round3(ratio),
			Unit: "", Target: fmt.Sprintf(">= %.2f", targetFloorRatio), Result: passMiss(!math.IsNaN(ratio) && ratio >= targetFloorRatio) + floorNote})
	}
	return rows
}

func (f *floorResult) goroutines() int {
	if f == nil {
		return 0
	}
	return f.Goroutines
}

// cores is CPU time as a number of busy cores over the window.
func cores(cpu, window time.Duration) float64 {
	if window <= 0 {
		return 0
	}
	return cpu.Seconds() / window.Seconds()
}

// hostNote describes how quiet the host was during a measurement.
func (r *report) hostNote(others float64, q quietStats) string {
	note := "quiet"
	if others > r.Opts.maxOther {
		note = fmt.Sprintf("DISTURBED (%.2f cores)", others)
	}
	if q.Attempts > 1 {
		note += fmt.Sprintf(", try %d", q.Attempts)
	}
	return note
}

// disturbed reports whether any of the measurements a target uses was
// disturbed by other processes: the case and the floors it is compared
// with (the bracketing ones when it has them, else the separate one).
func (r *report) disturbed(c *caseResult) bool {
	if c.otherCores() > r.Opts.maxOther {
		return true
	}
	if c.bracketRate() > 0 {
		return slices.ContainsFunc(c.Bracket, func(f *floorResult) bool { return f.otherCores() > r.Opts.maxOther })
	}
	f := r.floorFor(c)
	return f != nil && f.otherCores() > r.Opts.maxOther
}

func (r *report) printTable(w io.Writer) {
	m := r.Machine
	o := r.Opts
	if o.freshClient {
		fmt.Fprintf(w, "coffer-kbs benchmark: full RCAR handshakes (auth + attest + get-resource; a fresh client, session and P-256 TEE key each)\n")
	} else {
		fmt.Fprintf(w, "coffer-kbs benchmark: full RCAR handshakes (auth + attest + get-resource on a new session each; one client and P-256 TEE key per client worker, as a guest keeps per boot)\n")
	}
	fmt.Fprintf(w, "machine:  %d CPUs, %s, kernel %s, %s; data dir %s\n", m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, m.DataDisk)
	fmt.Fprintf(w, "server:   %s (%s) --dev --insecure-http on loopback, fresh data dir; ", m.KBS, orDash(m.KBSVersion))
	if o.sessionsMax > 0 {
		fmt.Fprintf(w, "[sessions] max = %d (the default 10000 open sessions x 5 min caps a sustained rate at 33 handshakes/s)\n", o.sessionsMax)
	} else {
		fmt.Fprintf(w, "default [sessions] (max 10000 open for 5 min: a sustained rate above 33 handshakes/s fills the table)\n")
	}
	waited := "not waited for quiet"
	if o.maxLoad > 0 {
		waited = fmt.Sprintf("waited %s for <= %.2f", r.LoadWaited.Round(time.Second), o.maxLoad)
	}
	transport := "one keep-alive connection per client worker (bench connTransport)"
	if o.netHTTP {
		transport = "a shared net/http Transport (-client-net-http)"
	}
	transport += fmt.Sprintf(", benchmark process GOGC=%d (-gc-percent; the server keeps its default)", o.gcPercent)
	fmt.Fprintf(w, "load:     %s warm-up + %s per case, resource %d bytes, HTTP/1.1 keep-alive, %s; loadavg %s before, %s after (%s)\n",
		o.warmup, o.dur, o.resourceSize, transport, r.LoadBefore, orDash(r.LoadAfter), waited)
	fmt.Fprintf(w, "NOTE:     the clients (TEE key generation, evidence, JWE decryption, HTTP) run in this process on the SAME %d CPUs as the server;\n", m.CPUs)
	fmt.Fprintf(w, "          see the CPU split below. The crypto floor does the client's and the server's crypto, in-process, on the same CPUs.\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tclients\thandshakes/s\tp50\tp90\tp99\tmax\thandshakes\terrors\tvs floor\tappraisal\thost\t")
	for _, c := range r.Cases {
		l := summarize(c.Latencies)
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", c.TEE, c.Clients, c.rate(), fmtDur(l.P50), fmtDur(l.P90),
			fmtDur(l.P99), fmtDur(l.Max), c.Handshakes, c.Errors, fmtRatio(r.floorRatio(c), r.floorFor(c)), c.Appraisal, r.hostNote(c.otherCores(), c.Quiet))
	}
	tw.Flush()
	fmt.Fprintf(w, "  vs floor: the case's rate / the crypto floor's rate for the same TEE with min(clients, %d CPUs) goroutines", m.CPUs)
	if o.bracketDur > 0 {
		fmt.Fprintf(w, ",\n            measured for %s right before and right after the case (mean of the two; the host's speed drifts):", o.bracketDur)
		for _, c := range r.Cases {
			if len(c.Bracket) == 2 {
				note := func(f *floorResult) string {
					if f.otherCores() > o.maxOther {
						return fmt.Sprintf(" (DISTURBED: others used %.2f cores)", f.otherCores())
					}
					return ""
				}
				fmt.Fprintf(w, "\n            %s/%d: %.0f/s before%s, %.0f/s after%s", c.TEE, c.Clients,
					c.Bracket[0].rate(), note(c.Bracket[0]), c.Bracket[1].rate(), note(c.Bracket[1]))
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  host: quiet = other processes used at most %.2f CPU cores during the window, else DISTURBED (repeated up to %d times, last kept)\n", o.maxOther, o.retries)
	if o.referenceValues {
		fmt.Fprintf(w, "  appraisal: the tokens' EAR status; reference values matching the guests were registered (-reference-values), as in a deployment\n\n")
	} else {
		fmt.Fprintf(w, "  appraisal: the tokens' EAR status; no reference values registered (-reference-values=false): every appraisal is explained\n\n")
	}

	fmt.Fprintln(w, "where the CPU went (per handshake; cores = CPU seconds per second of the window):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tclients\tserver CPU\t(kernel)\tclient CPU\tof which client crypto\tserver cores\tclient cores\tother processes\tsteal\tbusy before\tTCP conns\ttoken\tserver alone (est.)\t")
	for _, c := range r.Cases {
		srv := c.perHandshake(c.ServerCPU)
		capacity := "-"
		if srv > 0 {
			capacity = fmt.Sprintf("%.0f/s", float64(m.CPUs)/srv.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f%%\t%d\t%d B\t%s\t\n", c.TEE, c.Clients, fmtDur(srv),
			fmtDur(c.perHandshake(c.ServerSys)), fmtDur(c.perHandshake(c.ClientCPU)),
			fmtDur(r.clientCrypto(c.TEE)), cores(c.ServerCPU, c.Window), cores(c.ClientCPU, c.Window),
			c.otherCores(), cores(c.Host.steal, c.Window), 100*c.Quiet.BusyBefore, c.Dials, c.TokenBytes, capacity)
	}
	tw.Flush()
	fmt.Fprintf(w, "  other processes: cores used by neither this process nor the server during the window (> %.2f: disturbed);\n", o.maxOther)
	fmt.Fprintf(w, "  busy before: host CPU share busy in the second before the case (waited up to -quiet-wait %s for < %.0f%%)\n", o.quietWait, 100*quietBusy)
	fmt.Fprintf(w, "  (kernel): the server's system time (syscalls, loopback TCP, fsync of the store)\n")
	fmt.Fprintf(w, "  client CPU: this process (KBS client library, HTTP client, evidence); client crypto: its TEE key + digest + evidence + decryption\n")
	fmt.Fprintf(w, "  from the 1-goroutine floor; server alone (est.): %d CPUs / server CPU per handshake, if the clients ran elsewhere\n\n", m.CPUs)

	r.printTransport(w)

	fmt.Fprintln(w, "crypto floor (in-process: no HTTP, sessions, policy or store; client and server crypto of each handshake):")
	keyNote := "one TEE key pair per goroutine"
	if o.freshClient {
		keyNote = "a new TEE key pair per handshake"
	}
	verifyNote := "no token signature check (the cookie session's token was issued and kept by the server)"
	if o.floorTokenVerify {
		verifyNote = "with the token's ES256 check (-floor-token-verify)"
	}
	fmt.Fprintf(w, "  (%s; %s)\n", keyNote, verifyNote)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tee\tgoroutines\thandshakes/s\tCPU/handshake\thandshakes\tcores used\thost\t")
	for _, f := range r.Floors {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%d\t%.2f\t%s\t\n", f.TEE, f.Goroutines, f.rate(), fmtDur(perOp(f.CPU, f.Ops)), f.Ops,
			cores(f.CPU, f.Window), r.hostNote(f.otherCores(), f.Quiet))
	}
	tw.Flush()
	var teeCols []string
	for _, t := range o.tees {
		if r.floor(t, 1) != nil {
			teeCols = append(teeCols, t)
		}
	}
	if len(teeCols) > 0 {
		fmt.Fprintln(w, "  per step, 1 goroutine (mean time per handshake):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  step\tside\t%s\twhat\n", strings.Join(teeCols, "\t"))
		for s := range numSteps {
			var vals []string
			for _, t := range teeCols {
				vals = append(vals, fmtDur(r.floor(t, 1).stepPerOp(s)))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", stepInfo[s].name, stepInfo[s].side, strings.Join(vals, "\t"), stepInfo[s].what)
		}
		for _, side := range []string{sideClient, sideServer} {
			var vals []string
			for _, t := range teeCols {
				vals = append(vals, fmtDur(r.floor(t, 1).sidePerOp(side)))
			}
			fmt.Fprintf(tw, "  total %s\t\t%s\t\n", side, strings.Join(vals, "\t"))
		}
		tw.Flush()
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tvalue\ttarget\tresult")
	for _, t := range r.targets() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.display(), t.Target, t.Result)
	}
	tw.Flush()

	for _, pc := range r.Profiled {
		r.printProfile(w, pc)
	}
	for _, c := range r.Cases {
		for _, e := range c.ErrorSamples {
			fmt.Fprintf(w, "FAILED %s/%d: %s\n", c.TEE, c.Clients, e)
		}
	}
}

// printTransport prints the transport floors next to the coffer-kbs case
// with the same TEE and client count.
func (r *report) printTransport(w io.Writer) {
	if len(r.Transport) == 0 {
		return
	}
	t0 := r.Transport[0]
	fmt.Fprintf(w, "transport floors (%s, %d clients): the crypto floor's handshake split between two processes, its 3 round trips over loopback TCP;\n", t0.TEE, t0.Clients)
	fmt.Fprintf(w, "no sessions, cookies, policy, store or audit (what is left of the crypto floor's rate for the KBS's own work):\n")
	rows := append([]*caseResult(nil), r.Transport...)
	for _, c := range r.Cases {
		if c.TEE == t0.TEE && c.Clients == t0.Clients {
			rows = append(rows, c)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport	handshakes/s	p99	vs floor	server CPU	(kernel)	client CPU	total CPU	host	")
	for _, c := range rows {
		name := c.Transport
		if name == "" {
			name = "coffer-kbs"
		}
		srv, cli := c.perHandshake(c.ServerCPU), c.perHandshake(c.ClientCPU)
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, c.rate(), fmtDur(summarize(c.Latencies).P99),
			fmtRatio(r.floorRatio(c), r.floorFor(c)), fmtDur(srv), fmtDur(c.perHandshake(c.ServerSys)), fmtDur(cli), fmtDur(srv+cli),
			r.hostNote(c.otherCores(), c.Quiet))
	}
	tw.Flush()
	clients := "the load's connTransport"
	if r.Opts.netHTTP {
		clients += " (the coffer-kbs case used a shared net/http Transport: -client-net-http)"
	}
	fmt.Fprintf(w, "  tcp: length-prefixed messages; http: net/http handlers, the clients on %s; coffer-kbs: the case above.\n", clients)
	fmt.Fprintf(w, "  vs floor: bracketed by crypto floors as the cases are; total CPU: server + client process per handshake\n\n")
}

func (r *report) printProfile(w io.Writer, pc *profiledCase) {
	c, p := pc.Result, pc.Profile
	l := summarize(c.Latencies)
	fmt.Fprintf(w, "\nin-process server (server.Open + loopback listener in this process), %s, %d clients: %.0f handshakes/s, p50 %s, p99 %s, %d errors; host %s\n",
		c.TEE, c.Clients, c.rate(), fmtDur(l.P50), fmtDur(l.P99), c.Errors, r.hostNote(c.otherCores(), c.Quiet))
	pct := func(d time.Duration) string { return fmt.Sprintf("%.1f%%", 100*d.Seconds()/p.Total.Seconds()) }
	fmt.Fprintf(w, "  CPU profile %s: %s in all; server goroutines %s (%s), clients %s (%s), unlabelled (GC workers, store writer, runtime) %s (%s)\n",
		p.File, p.Total.Round(time.Millisecond), p.Server.Round(time.Millisecond), pct(p.Server), p.Client.Round(time.Millisecond), pct(p.Client),
		p.Unlabeled.Round(time.Millisecond), pct(p.Unlabeled))
	perHS := func(d time.Duration) string {
		if c.Handshakes == 0 {
			return "-"
		}
		// The profile covers the warm-up too: scale by the whole run.
		total := float64(c.Handshakes) * (c.Window + r.Opts.warmup).Seconds() / c.Window.Seconds()
		return fmtDur(time.Duration(float64(d) / total))
	}
	fmt.Fprintf(w, "  server components (inclusive; %% of the server goroutines' CPU; per handshake). %.1f%% of the server's samples have stacks\n", 100*p.Truncated.Seconds()/p.Server.Seconds())
	fmt.Fprintln(w, "  cut at the profiler's depth limit (deep Rego evaluation): they count for OPA but not for the handler or policy call above them:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, comp := range p.Components {
		if comp.CPU == 0 {
			continue
		}
		fmt.Fprintf(tw, "    %s\t%.1f%%\t%s\t\n", comp.Name, 100*comp.CPU.Seconds()/p.Server.Seconds(), perHS(comp.CPU))
	}
	tw.Flush()
	fmt.Fprintln(w, "  server goroutines, top functions by cumulative CPU:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range p.TopCum {
		fmt.Fprintf(tw, "    %5.1f%%\tflat %5.1f%%\t%s\n", 100*f.Cum.Seconds()/p.Server.Seconds(), 100*f.Flat.Seconds()/p.Server.Seconds(), f.Name)
	}
	tw.Flush()
	fmt.Fprintln(w, "  server goroutines, top functions by own (flat) CPU:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range p.TopFlat {
		fmt.Fprintf(tw, "    %5.1f%%\tcum %5.1f%%\t%s\n", 100*f.Flat.Seconds()/p.Server.Seconds(), 100*f.Cum.Seconds()/p.Server.Seconds(), f.Name)
	}
	tw.Flush()
	fmt.Fprintln(w, "  unlabelled goroutines (inclusive; % of all CPU in the profile; per handshake):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, comp := range p.UnlabeledComponents {
		fmt.Fprintf(tw, "    %s\t%s\t%s\t\n", comp.Name, pct(comp.CPU), perHS(comp.CPU))
	}
	tw.Flush()
	fmt.Fprint(w, "  unlabelled goroutines, top leaf functions:")
	for _, f := range p.UnlabeledTop {
		fmt.Fprintf(w, " %s %s;", f.Name, pct(f.Flat))
	}
	fmt.Fprintf(w, "\n  (go tool pprof -top -tagfocus=side=server %s for more)\n", p.File)
}

func perOp(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

func fmtRatio(v float64, f *floorResult) string {
	if math.IsNaN(v) || f == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f (%d)", v, f.Goroutines)
}

// display formats the value for the table.
func (t targetRow) display() string {
	switch t.Unit {
	case "ms":
		return fmt.Sprintf("%.1f ms", t.Value)
	case "/s":
		return fmt.Sprintf("%.0f/s", t.Value)
	}
	return fmt.Sprintf("%.2f", t.Value)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// JSON form.

type jsonCase struct {
	TEE             string    `json:"tee"`
	Transport       string    `json:"transport_floor,omitempty"`
	Clients         int       `json:"clients"`
	WindowS         float64   `json:"window_s"`
	Handshakes      int       `json:"handshakes"`
	Errors          int       `json:"errors"`
	ErrorSamples    []string  `json:"error_samples,omitempty"`
	Rate            float64   `json:"handshakes_per_s"`
	P50Ms           float64   `json:"p50_ms"`
	P90Ms           float64   `json:"p90_ms"`
	P99Ms           float64   `json:"p99_ms"`
	MaxMs           float64   `json:"max_ms"`
	AvgMs           float64   `json:"mean_ms"`
	FloorRatio      float64   `json:"floor_ratio"`
	FloorGoroutines int       `json:"floor_goroutines"`
	FloorBracket    []float64 `json:"floor_bracket_rates,omitempty"` // floors right before and after the case
	ServerCPUUs     float64   `json:"server_cpu_us_per_handshake,omitempty"`
	ServerSysUs     float64   `json:"server_kernel_cpu_us_per_handshake,omitempty"`
	ClientCPUUs     float64   `json:"client_process_cpu_us_per_handshake"`
	ClientCryptoUs  float64   `json:"client_crypto_us_per_handshake"`
	ServerCores     float64   `json:"server_cores"`
	ClientCores     float64   `json:"client_cores"`
	OtherCores      float64   `json:"other_process_cores"`
	StealCores      float64   `json:"steal_cores"`
	TCPConns        int64     `json:"tcp_connections"`
	TokenBytes      int       `json:"token_bytes,omitempty"`      // coffer-kbs cases only
	Appraisal       string    `json:"appraisal_status,omitempty"` // coffer-kbs cases only
	BusyBefore      float64   `json:"host_busy_before"`
	QuietWaitedS    float64   `json:"quiet_waited_s"`
	Attempts        int       `json:"attempts"`
	Disturbed       bool      `json:"disturbed"`
}

type jsonFloor struct {
	TEE        string             `json:"tee"`
	Goroutines int                `json:"goroutines"`
	WindowS    float64            `json:"window_s"`
	Ops        int                `json:"handshakes"`
	Rate       float64            `json:"handshakes_per_s"`
	CPUUs      float64            `json:"cpu_us_per_handshake"`
	StepsUs    map[string]float64 `json:"step_us_per_handshake"`
	Cores      float64            `json:"cores"`
	OtherCores float64            `json:"other_process_cores"`
	BusyBefore float64            `json:"host_busy_before"`
	Attempts   int                `json:"attempts"`
	Disturbed  bool               `json:"disturbed"`
}

type jsonComponent struct {
	Name   string  `json:"name"`
	Share  float64 `json:"share_of_server_cpu"`
	CPUSec float64 `json:"cpu_s"`
}

type jsonFunc struct {
	Name      string  `json:"name"`
	FlatShare float64 `json:"flat_share"`
	CumShare  float64 `json:"cum_share"`
}

type jsonProfile struct {
	Case        jsonCase        `json:"case"`
	File        string          `json:"file"`
	TotalS      float64         `json:"total_cpu_s"`
	ServerS     float64         `json:"server_cpu_s"`
	ClientS     float64         `json:"client_cpu_s"`
	UnlabeledS  float64         `json:"unlabeled_cpu_s"`
	TruncatedS  float64         `json:"server_truncated_stacks_cpu_s"`
	Components  []jsonComponent `json:"server_components"`
	TopCum      []jsonFunc      `json:"server_top_cum"`
	TopFlat     []jsonFunc      `json:"server_top_flat"`
	UnlabeledTo []jsonFunc      `json:"unlabeled_top_flat"`
	UnlabeledC  []jsonComponent `json:"unlabeled_components"`
}

type jsonReport struct {
	Machine      machineInfo   `json:"machine"`
	Started      time.Time     `json:"started"`
	Finished     time.Time     `json:"finished"`
	DurationS    float64       `json:"case_duration_s"`
	WarmupS      float64       `json:"warmup_s"`
	FloorS       float64       `json:"floor_duration_s"`
	SessionsMax  int           `json:"server_sessions_max"`
	ResourceSize int           `json:"resource_bytes"`
	RefValues    bool          `json:"reference_values_registered"`
	FreshClient  bool          `json:"fresh_client_per_handshake"`
	FloorVerify  bool          `json:"floor_token_verify"`
	NetHTTP      bool          `json:"clients_net_http_transport"`
	LoadBefore   string        `json:"loadavg_before"`
	LoadAfter    string        `json:"loadavg_after"`
	LoadWaitedS  float64       `json:"load_waited_s"`
	Note         string        `json:"note"`
	Cases        []jsonCase    `json:"cases"`
	Transport    []jsonCase    `json:"transport_floors,omitempty"`
	Floors       []jsonFloor   `json:"crypto_floor"`
	Targets      []targetRow   `json:"targets"`
	Profiles     []jsonProfile `json:"profiles,omitempty"`
}

func (r *report) jsonCase(c *caseResult) jsonCase {
	l := summarize(c.Latencies)
	j := jsonCase{TEE: c.TEE, Transport: c.Transport, Clients: c.Clients, WindowS: c.Window.Seconds(), Handshakes: c.Handshakes, Errors: c.Errors,
		ErrorSamples: c.ErrorSamples, Rate: round3(c.rate()), P50Ms: ms(l.P50), P90Ms: ms(l.P90), P99Ms: ms(l.P99),
		MaxMs: ms(l.Max), AvgMs: ms(l.Avg), FloorRatio: round3(r.floorRatio(c)), FloorGoroutines: r.floorFor(c).goroutines(),
		ServerCPUUs: us(c.perHandshake(c.ServerCPU)), ServerSysUs: us(c.perHandshake(c.ServerSys)), ClientCPUUs: us(c.perHandshake(c.ClientCPU)),
		ClientCryptoUs: us(r.clientCrypto(c.TEE)), ServerCores: round3(cores(c.ServerCPU, c.Window)),
		ClientCores: round3(cores(c.ClientCPU, c.Window)), OtherCores: round3(c.otherCores()),
		StealCores: round3(cores(c.Host.steal, c.Window)), TCPConns: c.Dials, TokenBytes: c.TokenBytes, Appraisal: c.Appraisal,
		BusyBefore: round3(c.Quiet.BusyBefore), QuietWaitedS: round3(c.Quiet.Waited.Seconds()), Attempts: c.Quiet.Attempts,
		Disturbed: c.otherCores() > r.Opts.maxOther}
	for _, f := range c.Bracket {
		j.FloorBracket = append(j.FloorBracket, round3(f.rate()))
	}
	return j
}

func (r *report) toJSON() jsonReport {
	o := r.Opts
	j := jsonReport{Machine: r.Machine, Started: r.Started, Finished: r.Finished, DurationS: o.dur.Seconds(),
		WarmupS: o.warmup.Seconds(), FloorS: o.floorDur.Seconds(), SessionsMax: o.sessionsMax, ResourceSize: o.resourceSize, RefValues: o.referenceValues, FreshClient: o.freshClient, FloorVerify: o.floorTokenVerify, NetHTTP: o.netHTTP,
		LoadBefore: r.LoadBefore, LoadAfter: r.LoadAfter, LoadWaitedS: r.LoadWaited.Seconds(),
		Note:    fmt.Sprintf("the clients run in the benchmark process on the same %d CPUs as the server", r.Machine.CPUs),
		Targets: r.targets()}
	for _, c := range r.Cases {
		j.Cases = append(j.Cases, r.jsonCase(c))
	}
	for _, c := range r.Transport {
		j.Transport = append(j.Transport, r.jsonCase(c))
	}
	for _, f := range r.Floors {
		jf := jsonFloor{TEE: f.TEE, Goroutines: f.Goroutines, WindowS: f.Window.Seconds(), Ops: f.Ops, Rate: round3(f.rate()),
			CPUUs: us(perOp(f.CPU, f.Ops)), StepsUs: map[string]float64{}, Cores: round3(cores(f.CPU, f.Window)),
			OtherCores: round3(f.otherCores()), BusyBefore: round3(f.Quiet.BusyBefore), Attempts: f.Quiet.Attempts,
			Disturbed: f.otherCores() > r.Opts.maxOther}
		for s := range numSteps {
			jf.StepsUs[stepInfo[s].name] = us(f.stepPerOp(s))
		}
		j.Floors = append(j.Floors, jf)
	}
	for _, pc := range r.Profiled {
		p := pc.Profile
		share := func(d time.Duration) float64 { return round3(d.Seconds() / p.Server.Seconds()) }
		jp := jsonProfile{Case: r.jsonCase(pc.Result), File: p.File, TotalS: round3(p.Total.Seconds()), ServerS: round3(p.Server.Seconds()),
			ClientS: round3(p.Client.Seconds()), UnlabeledS: round3(p.Unlabeled.Seconds()), TruncatedS: round3(p.Truncated.Seconds())}
		for _, c := range p.Components {
			jp.Components = append(jp.Components, jsonComponent{Name: c.Name, Share: share(c.CPU), CPUSec: round3(c.CPU.Seconds())})
		}
		for _, f := range p.TopCum {
			jp.TopCum = append(jp.TopCum, jsonFunc{Name: f.Name, FlatShare: share(f.Flat), CumShare: share(f.Cum)})
		}
		for _, f := range p.TopFlat {
			jp.TopFlat = append(jp.TopFlat, jsonFunc{Name: f.Name, FlatShare: share(f.Flat), CumShare: share(f.Cum)})
		}
		for _, c := range p.UnlabeledComponents {
			jp.UnlabeledC = append(jp.UnlabeledC, jsonComponent{Name: c.Name, Share: round3(c.CPU.Seconds() / p.Total.Seconds()), CPUSec: round3(c.CPU.Seconds())})
		}
		for _, f := range p.UnlabeledTop {
			jp.UnlabeledTo = append(jp.UnlabeledTo, jsonFunc{Name: f.Name, FlatShare: round3(f.Flat.Seconds() / p.Total.Seconds())})
		}
		j.Profiles = append(j.Profiles, jp)
	}
	return j
}

package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
)

// targetShimRatio is the target: the shim adds at most 10% over
// `coffer run` for the same container.
const targetShimRatio = 1.10

type machineInfo struct {
	CPUs       int
	Containerd string
	Runc       string
	Coffer     string
	GuestDir   string
}

func describeMachine(ctx context.Context, o options) machineInfo {
	return machineInfo{CPUs: runtime.NumCPU(), Containerd: benchutil.FirstLine(ctx, o.containerd, "--version"),
		Runc: benchutil.FirstLine(ctx, "runc", "--version"), Coffer: benchutil.FirstLine(ctx, o.coffer, "--version"), GuestDir: o.guestDir}
}

type report struct {
	Machine    machineInfo
	N          int
	Seed       uint64
	Series     []*series
	LoadBefore string
	LoadAfter  string
	Started    time.Time
	Finished   time.Time
}

func (r *report) median(id string) time.Duration {
	for _, s := range r.Series {
		if s.ID == id {
			return benchutil.Summarize(s.Wall).Median
		}
	}
	return 0
}

// verdict compares the shim with coffer run: its overhead, the ratio and
// PASS/MISS against the target.
func (r *report) verdict() (overhead time.Duration, ratio float64, pass bool) {
	shim, run := r.median("coffer-shim"), r.median("coffer-run")
	ratio = benchutil.Ratio(shim, run)
	return shim - run, ratio, !math.IsNaN(ratio) && ratio <= targetShimRatio
}

func (r *report) printTable(w io.Writer) {
	fmt.Fprintf(w, "containerd shim benchmark: %d rounds (+1 warm-up), seed %d, %d CPUs, load %s -> %s\n",
		r.N, r.Seed, r.Machine.CPUs, r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(w, "%s; %s; %s\n\n", r.Machine.Containerd, r.Machine.Runc, r.Machine.Coffer)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\tmedian\tmin\tmax\tn\tfailed\t")
	for _, s := range r.Series {
		sum := benchutil.Summarize(s.Wall)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.ID, benchutil.FmtDur(sum.Median), benchutil.FmtDur(sum.Min),
			benchutil.FmtDur(sum.Max), sum.N, len(s.Failures), s.Label)
	}
	tw.Flush()
	overhead, ratio, pass := r.verdict()
	verdict := "MISS"
	if pass {
		verdict = "PASS"
	}
	fmt.Fprintf(w, "\nshim overhead (coffer-shim − coffer-run medians): %s\n", benchutil.FmtDur(overhead))
	fmt.Fprintf(w, "coffer-shim / coffer-run: %.3f (target ≤ %.2f) %s\n", ratio, targetShimRatio, verdict)
	fmt.Fprintf(w, "coffer-shim / runc:       %.2f\n", benchutil.Ratio(r.median("coffer-shim"), r.median("runc")))
}

type seriesJSON struct {
	ID       string    `json:"id"`
	Label    string    `json:"label"`
	MedianMs float64   `json:"median_ms"`
	MinMs    float64   `json:"min_ms"`
	MaxMs    float64   `json:"max_ms"`
	WallMs   []float64 `json:"wall_ms"`
	WarmupMs float64   `json:"warmup_ms"`
	Failures []string  `json:"failures,omitempty"`
}

func (r *report) toJSON() any {
	overhead, ratio, pass := r.verdict()
	out := struct {
		Machine         machineInfo  `json:"machine"`
		N               int          `json:"n"`
		Seed            uint64       `json:"seed"`
		LoadBefore      string       `json:"load_before"`
		LoadAfter       string       `json:"load_after"`
		Started         time.Time    `json:"started"`
		Finished        time.Time    `json:"finished"`
		Series          []seriesJSON `json:"series"`
		ShimOverheadMs  float64      `json:"shim_overhead_ms"`
		ShimRatio       *float64     `json:"shim_ratio"`
		ShimRatioTarget float64      `json:"shim_ratio_target"`
		Pass            bool         `json:"pass"`
	}{Machine: r.Machine, N: r.N, Seed: r.Seed, LoadBefore: r.LoadBefore, LoadAfter: r.LoadAfter, Started: r.Started,
		Finished: r.Finished, ShimOverheadMs: benchutil.Ms(overhead), ShimRatioTarget: targetShimRatio, Pass: pass}
	if !math.IsNaN(ratio) {
		out.ShimRatio = &ratio
	}
	for _, s := range r.Series {
		sum := benchutil.Summarize(s.Wall)
		wall := make([]float64, len(s.Wall))
		for i, d := range s.Wall {
			wall[i] = benchutil.Ms(d)
		}
		out.Series = append(out.Series, seriesJSON{ID: s.ID, Label: s.Label, MedianMs: benchutil.Ms(sum.Median),
			MinMs: benchutil.Ms(sum.Min), MaxMs: benchutil.Ms(sum.Max), WallMs: wall, WarmupMs: benchutil.Ms(s.Warmup), Failures: s.Failures})
	}
	return out
}

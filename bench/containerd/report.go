package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"sort"
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

func (r *report) series(id string) *series {
	for _, s := range r.Series {
		if s.ID == id {
			return s
		}
	}
	return &series{ID: id}
}

func (r *report) median(id string) time.Duration {
	return benchutil.Summarize(r.series(id).Wall).Median
}

// pairedRatio is the median over the rounds of a's time / b's time in the
// same round (NaN without a common round), and how many rounds it had.
// Every round runs each case once, back to back, so a change of the
// host's speed during the run (this VM's CPU drifts by 15-30 %) hits both
// sides of a round's ratio alike; a ratio of the two medians can land
// far off when the samples are bimodal.
func (r *report) pairedRatio(a, b string) (float64, int) {
	sa, sb := r.series(a), r.series(b)
	byRound := map[int]time.Duration{}
	for i, d := range sb.Wall {
		if i < len(sb.Round) {
			byRound[sb.Round[i]] = d
		}
	}
	var ratios []float64
	for i, d := range sa.Wall {
		if i < len(sa.Round) {
			if db, ok := byRound[sa.Round[i]]; ok && db > 0 {
				ratios = append(ratios, float64(d)/float64(db))
			}
		}
	}
	if len(ratios) == 0 {
		return math.NaN(), 0
	}
	sort.Float64s(ratios)
	m := len(ratios) / 2
	if len(ratios)%2 == 1 {
		return ratios[m], len(ratios)
	}
	return (ratios[m-1] + ratios[m]) / 2, len(ratios)
}

// verdict compares the shim with coffer run: its overhead (difference of
// the medians), the paired ratio, and PASS/MISS against the target.
func (r *report) verdict() (overhead time.Duration, ratio float64, pass bool) {
	overhead = r.median("coffer-shim") - r.median("coffer-run")
	ratio, _ = r.pairedRatio("coffer-shim", "coffer-run")
	return overhead, ratio, !math.IsNaN(ratio) && ratio <= targetShimRatio
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
	_, rounds := r.pairedRatio("coffer-shim", "coffer-run")
	floor := r.median("floor")
	fmt.Fprintf(w, "\nraw VM boot floor (median):                       %s\n", benchutil.FmtDur(floor))
	fmt.Fprintf(w, "coffer run's own time (coffer-run − floor):      %s\n", benchutil.FmtDur(r.median("coffer-run")-floor))
	fmt.Fprintf(w, "shim overhead (coffer-shim − coffer-run):        %s\n", benchutil.FmtDur(overhead))
	fmt.Fprintf(w, "coffer-shim / coffer-run, paired per round:      %.3f (median of %d rounds; target ≤ %.2f) %s\n", ratio, rounds, targetShimRatio, verdict)
	fmt.Fprintf(w, "coffer-shim / coffer-run, ratio of the medians:  %.3f\n", benchutil.Ratio(r.median("coffer-shim"), r.median("coffer-run")))
	fmt.Fprintf(w, "coffer-run / floor, coffer-shim / floor:         %.2f, %.2f (paired)\n", first(r.pairedRatio("coffer-run", "floor")), first(r.pairedRatio("coffer-shim", "floor")))
	fmt.Fprintf(w, "coffer-shim / runc:                              %.2f\n", benchutil.Ratio(r.median("coffer-shim"), r.median("runc")))
}

func first(v float64, _ int) float64 { return v }

type seriesJSON struct {
	ID       string    `json:"id"`
	Label    string    `json:"label"`
	MedianMs float64   `json:"median_ms"`
	MinMs    float64   `json:"min_ms"`
	MaxMs    float64   `json:"max_ms"`
	WallMs   []float64 `json:"wall_ms"`
	Rounds   []int     `json:"rounds"`
	WarmupMs float64   `json:"warmup_ms"`
	Failures []string  `json:"failures,omitempty"`
}

func (r *report) toJSON() any {
	overhead, ratio, pass := r.verdict()
	out := struct {
		Machine          machineInfo  `json:"machine"`
		N                int          `json:"n"`
		Seed             uint64       `json:"seed"`
		LoadBefore       string       `json:"load_before"`
		LoadAfter        string       `json:"load_after"`
		Started          time.Time    `json:"started"`
		Finished         time.Time    `json:"finished"`
		Series           []seriesJSON `json:"series"`
		ShimOverheadMs   float64      `json:"shim_overhead_ms"`
		FloorMs          float64      `json:"floor_ms"`
		ShimRatio        *float64     `json:"shim_ratio"`         // paired per round: the verdict's
		ShimMediansRatio *float64     `json:"shim_medians_ratio"` // shim median / coffer run median
		ShimRatioTarget  float64      `json:"shim_ratio_target"`
		Pass             bool         `json:"pass"`
	}{Machine: r.Machine, N: r.N, Seed: r.Seed, LoadBefore: r.LoadBefore, LoadAfter: r.LoadAfter, Started: r.Started,
		Finished: r.Finished, ShimOverheadMs: benchutil.Ms(overhead), FloorMs: benchutil.Ms(r.median("floor")), ShimRatioTarget: targetShimRatio, Pass: pass}
	if !math.IsNaN(ratio) {
		out.ShimRatio = &ratio
	}
	if m := benchutil.Ratio(r.median("coffer-shim"), r.median("coffer-run")); !math.IsNaN(m) {
		out.ShimMediansRatio = &m
	}
	for _, s := range r.Series {
		sum := benchutil.Summarize(s.Wall)
		wall := make([]float64, len(s.Wall))
		for i, d := range s.Wall {
			wall[i] = benchutil.Ms(d)
		}
		out.Series = append(out.Series, seriesJSON{ID: s.ID, Label: s.Label, MedianMs: benchutil.Ms(sum.Median),
			MinMs: benchutil.Ms(sum.Min), MaxMs: benchutil.Ms(sum.Max), WallMs: wall, Rounds: s.Round, WarmupMs: benchutil.Ms(s.Warmup), Failures: s.Failures})
	}
	return out
}

package main

import (
	"math"
	"slices"
	"time"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
)

// latency is the distribution of handshake latencies.
type latency struct {
	N                       int
	P50, P90, P99, Max, Avg time.Duration
}

// summarize returns nearest-rank percentiles of ds (the zero value for no
// samples).
func summarize(ds []time.Duration) latency {
	if len(ds) == 0 {
		return latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return latency{N: len(s), P50: percentile(s, 0.50), P90: percentile(s, 0.90), P99: percentile(s, 0.99),
		Max: s[len(s)-1], Avg: sum / time.Duration(len(s))}
}

// percentile is the nearest-rank p-quantile of sorted s: the smallest value
// with at least p of the samples at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ms is d in milliseconds rounded to microseconds, for JSON.
func ms(d time.Duration) float64 { return benchutil.Ms(d) }

// us is d in microseconds rounded to 0.1, for JSON.
func us(d time.Duration) float64 { return math.Round(float64(d)/100) / 10 }

// round3 rounds to three decimals (NaN and Inf become 0, for JSON).
func round3(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return math.Round(f*1000) / 1000
}

// fmtDur prints a duration for tables: µs below 1 ms, ms with two
// decimals below 10 ms, else ms or s.
func fmtDur(d time.Duration) string { return benchutil.FmtDur(d) }

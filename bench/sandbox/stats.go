package main

import (
	"github.com/coffer-project/coffer/bench/internal/benchutil"
	"math"
	"sort"
	"time"
)

// summary is the distribution of one series of measurements.
type summary struct {
	N      int
	Median time.Duration
	Min    time.Duration
	Max    time.Duration
}

// summarize returns the median (mean of the two middle values for an even
// count), minimum and maximum of ds; the zero summary for no samples.
func summarize(ds []time.Duration) summary {
	if len(ds) == 0 {
		return summary{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return summary{N: n, Median: med, Min: s[0], Max: s[n-1]}
}

// ratio is a/b, NaN when b is zero.
func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

func ms(d time.Duration) float64 { return benchutil.Ms(d) }

func msList(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = ms(d)
	}
	return out
}

// fmtDur prints a duration in ms below 10 s, else in s, for tables.
func fmtDur(d time.Duration) string { return benchutil.FmtDur(d) }

package main

import (
	"time"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
)

// summary is the distribution of one series of measurements.
type summary = benchutil.Summary

// summarize returns the median, minimum and maximum of ds.
func summarize(ds []time.Duration) summary { return benchutil.Summarize(ds) }

// ratio is a/b, NaN when b is zero.
func ratio(a, b time.Duration) float64 { return benchutil.Ratio(a, b) }

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

// Package benchutil holds what Coffer's benchmark programs share: report
// output (table or JSON, plus an optional JSON file) and duration
// formatting. Each benchmark owns its measurements and its report type.
package benchutil

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"time"
)

// Emit writes a report: JSON to jsonFile when set, then JSON or the table
// on stdout. It returns the process exit code (0, or 1 after printing why).
func Emit(toJSON func() any, printTable func(io.Writer), asJSON bool, jsonFile string) int {
	if jsonFile != "" {
		b, err := json.MarshalIndent(toJSON(), "", "  ")
		if err == nil {
			err = os.WriteFile(jsonFile, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: write -json-file: %v\n", err)
			return 1
		}
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(toJSON()); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}
	printTable(os.Stdout)
	return 0
}

// Ms is d in milliseconds, rounded to the microsecond (for JSON).
func Ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

// FmtDur prints a duration for tables: µs below 1 ms, ms with two decimals
// below 10 ms, whole ms below 10 s, else seconds.
func FmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 0:
		return "-" + FmtDur(-d)
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
	case d < 10*time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
	case d < 10*time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + " s"
}

// Summary is the distribution of one series of measurements.
type Summary struct {
	N      int
	Median time.Duration
	Min    time.Duration
	Max    time.Duration
}

// Summarize returns the median (mean of the two middle values for an even
// count), minimum and maximum of ds; the zero Summary for no samples.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Summary{N: n, Median: med, Min: s[0], Max: s[n-1]}
}

// Ratio is a/b, NaN when b is zero.
func Ratio(a, b time.Duration) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

package main

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-n", "5", "-json"}, io.Discard)
	if err != nil || o.n != 5 || !o.json || o.ctr != "ctr" {
		t.Fatalf("parseFlags = %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-n", "0"}, {"extra"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func testReport(shim time.Duration) *report {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	rounds := []int{1, 2, 3}
	return &report{N: 3, Series: []*series{
		{ID: "runc", Wall: ms(100, 120, 110), Round: rounds},
		{ID: "coffer-shim", Wall: []time.Duration{shim, shim, shim}, Round: rounds},
		{ID: "coffer-run", Wall: ms(3000, 3000, 3000), Round: rounds},
		{ID: "floor", Wall: ms(2000, 2100, 1900), Round: rounds},
	}}
}

// The verdict pairs the rounds: a host that slows down halfway through
// makes the medians' ratio wrong, not the per-round one.
func TestPairedRatio(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	r := &report{Series: []*series{
		// rounds 1-3 fast, 4-6 slow (x1.3); per round the shim is 3, 4,
		// 5, 5, 6 and 7 % slower. The shim's samples are stored out of
		// round order (as after a failed run): pairing by index instead of
		// by round would give other ratios.
		{ID: "coffer-shim", Wall: ms(4095, 4134, 4173, 3090, 3120, 3150), Round: []int{4, 5, 6, 1, 2, 3}},
		{ID: "coffer-run", Wall: ms(3000, 3000, 3000, 3900, 3900, 3900, 9999), Round: []int{1, 2, 3, 4, 5, 6, 7}},
	}}
	got, n := r.pairedRatio("coffer-shim", "coffer-run")
	if n != 6 || got < 1.0499 || got > 1.0501 {
		t.Errorf("pairedRatio = %v over %d rounds, want 1.05 over 6 (round 7 has no pair)", got, n)
	}
	if _, _, pass := r.verdict(); !pass {
		t.Error("a 5 % shim overhead missed the target")
	}
	if got, n := (&report{}).pairedRatio("a", "b"); n != 0 || !math.IsNaN(got) {
		t.Errorf("no samples: %v %d", got, n)
	}
}

func TestVerdict(t *testing.T) {
	overhead, ratio, pass := testReport(3150 * time.Millisecond).verdict()
	if overhead != 150*time.Millisecond || ratio != 1.05 || !pass {
		t.Errorf("verdict = %s %.3f %v, want 150ms 1.05 PASS", overhead, ratio, pass)
	}
	if _, _, pass := testReport(3600 * time.Millisecond).verdict(); pass {
		t.Error("a 1.2 ratio passed")
	}
	if _, _, pass := (&report{}).verdict(); pass {
		t.Error("no samples passed")
	}
}

func TestReportOutput(t *testing.T) {
	r := testReport(3150 * time.Millisecond)
	var buf bytes.Buffer
	r.printTable(&buf)
	for _, want := range []string{"paired per round:      1.050 (median of 3 rounds; target ≤ 1.10) PASS", "shim overhead", "runc",
		"raw VM boot floor (median):                       2000.0 ms", "coffer run's own time (coffer-run − floor):      1000.0 ms"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	b, err := json.Marshal(r.toJSON())
	if err != nil || !strings.Contains(string(b), `"shim_ratio":1.05`) || !strings.Contains(string(b), `"pass":true`) {
		t.Errorf("JSON = %s (%v)", b, err)
	}
	b, _ = json.Marshal((&report{}).toJSON())
	if !strings.Contains(string(b), `"shim_ratio":null`) {
		t.Errorf("JSON without samples = %s, want a null ratio", b)
	}
}

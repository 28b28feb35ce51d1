package main

import (
	"bytes"
	"encoding/json"
	"io"
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
	return &report{N: 3, Series: []*series{
		{ID: "runc", Wall: ms(100, 120, 110)},
		{ID: "coffer-shim", Wall: []time.Duration{shim, shim, shim}},
		{ID: "coffer-run", Wall: ms(3000, 3100, 2900)},
	}}
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
	for _, want := range []string{"coffer-shim / coffer-run: 1.050 (target ≤ 1.10) PASS", "shim overhead", "runc"} {
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

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		in             []time.Duration
		med, min, maxd time.Duration
	}{
		{nil, 0, 0, 0},
		{[]time.Duration{5 * ms}, 5 * ms, 5 * ms, 5 * ms},
		{[]time.Duration{9 * ms, 1 * ms, 5 * ms}, 5 * ms, 1 * ms, 9 * ms},
		{[]time.Duration{4 * ms, 1 * ms, 2 * ms, 10 * ms}, 3 * ms, 1 * ms, 10 * ms},
	} {
		in := append([]time.Duration(nil), tc.in...)
		s := summarize(tc.in)
		if s.Median != tc.med || s.Min != tc.min || s.Max != tc.maxd || s.N != len(tc.in) {
			t.Errorf("summarize(%v) = %+v, want median %v min %v max %v", tc.in, s, tc.med, tc.min, tc.maxd)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("summarize reordered its input: %v", tc.in)
			}
		}
	}
}

func TestParseLogfmt(t *testing.T) {
	kv := parseLogfmt(`time=2026-11-26T18:55:55.474Z level=DEBUG msg="qmp event" vm=x event=VSERPORT_CHANGE data="{\"open\": true, \"id\": \"vport0\"}" bare`)
	want := map[string]string{
		"time": "2026-11-26T18:55:55.474Z", "level": "DEBUG", "msg": "qmp event", "vm": "x",
		"event": "VSERPORT_CHANGE", "data": `{"open": true, "id": "vport0"}`,
	}
	for k, v := range want {
		if kv[k] != v {
			t.Errorf("%s = %q, want %q", k, kv[k], v)
		}
	}
	if !vserportOpen("vport0")(kv) || vserportOpen("vport1")(kv) {
		t.Error("vserportOpen does not match the event")
	}
}

// Logs in the formats coffer and its agent write (taken from real runs).
const (
	testHostLog = `time=2026-11-26T18:55:52.479Z level=DEBUG msg="rootfs image built" fstype=erofs took=9.911265ms
time=2026-11-26T18:55:52.480Z level=INFO msg="accelerator chosen" vm=p accel=tcg reason="tcg: no vmx"
time=2026-11-26T18:55:52.480Z level=INFO msg="starting qemu" vm=p accel=tcg machine=q35
time=2026-11-26T18:55:52.480Z level=DEBUG msg="qemu command line" vm=p cmd="/usr/bin/qemu-system-x86_64 -machine q35,accel=tcg"
time=2026-11-26T18:55:52.531Z level=INFO msg="qemu started" vm=p pid=30635 accel=tcg qmp_ready_after=51ms
time=2026-11-26T18:55:55.429Z level=DEBUG msg="qmp event" vm=p event=VSERPORT_CHANGE data="{\"open\": true, \"id\": \"vport1\"}"
time=2026-11-26T18:55:55.474Z level=DEBUG msg="qmp event" vm=p event=VSERPORT_CHANGE data="{\"open\": true, \"id\": \"vport0\"}"
time=2026-11-26T18:55:55.506Z level=INFO msg="pod VM ready" id=p accel=tcg boot=3.026s
time=2026-11-26T18:55:55.922Z level=DEBUG msg="qmp event" vm=p event=SHUTDOWN data="{\"guest\": true, \"reason\": \"guest-shutdown\"}"
time=2026-11-26T18:55:55.931Z level=INFO msg="qemu exited" vm=p pid=30635
`
	// Guest clock 1 s behind the host: aligned by "agent API ready" ==
	// vport0 open.
	testAgentLog = `time=2026-11-26T18:55:54.419Z level=INFO msg="coffer-agent starting" version=v kernel=6.1 uptime=2.500 modules=400ms
time=2026-11-26T18:55:54.474Z level=INFO msg="agent API ready" transport=serial addr=/dev/vport0p1
time=2026-11-26T18:55:54.520Z level=INFO msg="sandbox created" id=p hostname=p
time=2026-11-26T18:55:54.780Z level=INFO msg="container created" id=main pid=86 args="[true]"
time=2026-11-26T18:55:54.840Z level=INFO msg="container started" id=main
time=2026-11-26T18:55:54.870Z level=INFO msg="container removed" id=main
time=2026-11-26T18:55:54.880Z level=INFO msg="sandbox destroyed" id=p power_off=true
`
)

func TestSplitRun(t *testing.T) {
	start, _ := time.Parse(time.RFC3339Nano, "2026-11-26T18:55:52.400Z")
	end, _ := time.Parse(time.RFC3339Nano, "2026-11-26T18:55:55.950Z")
	ps, err := splitRun(start, end, testHostLog, testAgentLog)
	if err != nil {
		t.Fatal(err)
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	want := map[string]time.Duration{
		"rootfs":     ms(79),  // 52.400 → 52.479
		"qmp":        ms(52),  // → 52.531
		"kernel0":    ms(388), // agent start 55.419 (host) − 2.5 s = 52.919
		"agentexec":  ms(2100),
		"agentstart": ms(400),
		"agentready": ms(55),
		"podready":   ms(32),
		"sandbox":    ms(14), // 55.520 host
		"ccreated":   ms(260),
		"cstarted":   ms(60),
		"destroyed":  ms(40),
		"shutdown":   ms(42),
		"qemuexit":   ms(9),
		"exit":       ms(19),
	}
	var sum time.Duration
	for k, v := range want {
		if got := ps.Phases[k]; got != v {
			t.Errorf("phase %s = %v, want %v", k, got, v)
		}
	}
	for _, v := range ps.Phases {
		sum += v
	}
	if sum != end.Sub(start) {
		t.Errorf("phases sum to %v, want the total %v", sum, end.Sub(start))
	}
	if ps.Mkfs != 9911265*time.Nanosecond || ps.Modules != ms(400) || ps.GuestUptime != ms(2500) || ps.Accel != "tcg" {
		t.Errorf("details: %+v", ps)
	}
	if !strings.HasPrefix(ps.QEMUCmdline, "/usr/bin/qemu-system-x86_64 ") {
		t.Errorf("qemu cmdline %q", ps.QEMUCmdline)
	}

	// Without the agent log, the guest phases merge into "podready".
	ps, err = splitRun(start, end, testHostLog, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := ps.Phases["podready"]; got != ms(2975) {
		t.Errorf("podready without agent log = %v, want 2.975s", got)
	}
	if _, err := splitRun(start, end, "garbage\n", ""); err == nil {
		t.Error("a log without coffer lines was accepted")
	}
}

func TestClassifySmaps(t *testing.T) {
	smaps := `55d0c0000000-55d0c0100000 r-xp 00000000 fd:01 123 /usr/bin/qemu-system-x86_64
Size:               1024 kB
Pss:                 700 kB
7f0000000000-7f0010000000 rw-p 00000000 00:00 0 
Size:             262144 kB
Pss:              130000 kB
7f1000000000-7f1040000000 rwxp 00000000 00:00 0 
Size:            1048576 kB
Pss:               66000 kB
7f2000000000-7f2000e00000 rw-p 00000000 00:00 0 
Pss:               14000 kB
7f3000000000-7f3000001000 rw-p 00000000 00:00 0                          [heap]
Pss:                5000 kB
`
	m := classifySmaps(smaps, 256*1024)
	if m.GuestRAM != 130000 || m.TCG != 66000 || m.File != 700 || m.Other != 19000 {
		t.Errorf("classifySmaps = %+v", m)
	}
}

func TestReadRollupSelf(t *testing.T) {
	m, err := readRollup(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.PssKiB <= 0 || m.RssKiB < m.PssKiB {
		t.Errorf("own memory: %+v", m)
	}
	if _, err := readRollup(1 << 30); err == nil {
		t.Error("no error for a pid that cannot exist")
	}
}

func TestCPUBusy(t *testing.T) {
	busy, total := cpuTimes()
	if total == 0 || busy > total {
		t.Fatalf("cpuTimes = %d busy of %d", busy, total)
	}
	if b := cpuBusy(context.Background(), 50*time.Millisecond); b < 0 || b > 1 {
		t.Errorf("cpuBusy = %v, want 0..1", b)
	}
}

func TestReportJSON(t *testing.T) {
	ms := time.Millisecond
	r := &report{N: 2, Series: []*series{
		{ID: "raw-boot", Wall: []time.Duration{1000 * ms, 1200 * ms, 1000 * ms, 1000 * ms}, Busy: []float64{0.01, 0.5, 0, 0}, Disturb: []float64{0, 0.9, 0, 0}},
		{ID: "coffer-run", Wall: []time.Duration{1100 * ms, 1100 * ms, 1100 * ms}, Busy: []float64{0, 0, 0}, Disturb: []float64{0, 0, 0}},
		{ID: "runc-run", Wall: []time.Duration{50 * ms, 60 * ms}},
	}, Idle: &idleResult{QEMU: procMem{PssKiB: 80 * 1024}, Owner: procMem{PssKiB: 10 * 1024}}}
	j := r.toJSON()
	if j.Ratios[0].Value != 1.1 || j.Ratios[0].Quiet != 1.1 || j.Ratios[0].Result != "PASS" {
		t.Errorf("(b)/(a) = %+v", j.Ratios[0])
	}
	if j.Idle.TotalPssMiB != 90 || j.Idle.Result != "PASS" {
		t.Errorf("idle = %+v", j.Idle)
	}
	if r.busyStarts() != 1 || r.disturbedRuns() != 1 {
		t.Errorf("busy starts %d, disturbed runs %d, want 1 and 1", r.busyStarts(), r.disturbedRuns())
	}
	if q := r.get("raw-boot").quietWall(); len(q) != 3 {
		t.Errorf("quiet raw-boot runs = %v, want the 3 undisturbed ones", q)
	}
	if _, err := json.Marshal(j); err != nil {
		t.Fatalf("NaN ratios must not break JSON: %v", err)
	}
	var buf bytes.Buffer
	r.printTable(&buf)
	if !strings.Contains(buf.String(), "PASS") {
		t.Errorf("table without verdicts:\n%s", buf.String())
	}
}

func TestParseFlags(t *testing.T) {
	var errs bytes.Buffer
	o, err := parseFlags([]string{"-n", "3", "-json"}, &errs)
	if err != nil || o.n != 3 || !o.json || o.coffer != "bin/coffer" {
		t.Errorf("parseFlags = %+v, %v", o, err)
	}
	if _, err := parseFlags([]string{"-n", "0"}, &errs); err == nil {
		t.Error("-n 0 accepted")
	}
	if _, err := parseFlags([]string{"extra"}, &errs); err == nil {
		t.Error("a stray argument accepted")
	}
}

// Lines after the agent's clock step move back by the step.
func TestUnstep(t *testing.T) {
	lines := parseLog(`time=2026-11-27T00:00:01.000Z level=INFO msg="agent API ready"
time=2026-11-27T00:00:02.000Z level=INFO msg="guest clock set" step=500ms
time=2026-11-27T00:00:02.100Z level=INFO msg="sandbox created" id=p
`)
	got := unstep(lines)
	for i, want := range []string{"00:00:01.000", "00:00:01.500", "00:00:01.600"} {
		if s := got[i].t.Format("15:04:05.000"); s != want {
			t.Errorf("line %d at %s, want %s", i, s, want)
		}
	}
	if lines[2].t.Format("15:04:05.000") != "00:00:02.100" {
		t.Error("unstep changed its input")
	}
}

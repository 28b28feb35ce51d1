package main

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"
)

// Targets from the issue, and Kata Containers' published figure.
const (
	targetBootRatio = 1.15  // (b)/(a)
	targetIdleMiB   = 100.0 // idle sandbox PSS
	kataIdleMiB     = 120.0 // Kata Containers' published idle footprint
)

type report struct {
	Machine    machineInfo
	N          int
	Seed       uint64
	Series     []*series
	Idle       *idleResult
	IdleRows   []*idleRow
	IdleError  string
	LoadBefore string
	LoadAfter  string
	// QuietWaited is the time spent waiting for other QEMUs (-quiet-wait).
	QuietWaited time.Duration
	Started     time.Time
	Finished    time.Time
}

func (r *report) get(id string) *series {
	for _, s := range r.Series {
		if s.ID == id {
			return s
		}
	}
	return &series{ID: id}
}

func (r *report) median(id string) time.Duration { return summarize(r.get(id).Wall).Median }

// quietDisturb is the CPU use of everything else (in CPUs) during a run
// below which the run counts as undisturbed.
const quietDisturb = 0.2

// quietWall returns the wall times of the runs that others did not
// disturb (see quietDisturb).
func (s *series) quietWall() []time.Duration {
	var out []time.Duration
	for i, w := range s.Wall {
		if i < len(s.Disturb) && s.Disturb[i] < quietDisturb {
			out = append(out, w)
		}
	}
	return out
}

// minQuiet is how many undisturbed runs a case needs for a quiet ratio.
const minQuiet = 3

// ratioRow is one line of the ratios table.
type ratioRow struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	// Quiet is the same ratio over the undisturbed runs only (0 when a
	// case has fewer than minQuiet of them).
	Quiet  float64 `json:"quiet_value"`
	Target string  `json:"target,omitempty"`
	Result string  `json:"result,omitempty"` // PASS, MISS or empty (informational)
}

func (r *report) ratios() []ratioRow {
	row := func(name, a, b string) ratioRow {
		rr := ratioRow{Name: name, Value: ratio(r.median(a), r.median(b))}
		qa, qb := r.get(a).quietWall(), r.get(b).quietWall()
		if len(qa) >= minQuiet && len(qb) >= minQuiet {
			rr.Quiet = ratio(summarize(qa).Median, summarize(qb).Median)
		}
		return rr
	}
	boot := row("(b)/(a) coffer run vs raw boot floor", "coffer-run", "raw-boot")
	boot.Target = fmt.Sprintf("<= %.2f", targetBootRatio)
	boot.Result = passMiss(!math.IsNaN(boot.Value) && boot.Value <= targetBootRatio)
	rows := []ratioRow{
		boot,
		row("(b)/(a2) coffer run vs raw boot with coffer's initrd", "coffer-run", "raw-boot-coffer-initrd"),
		row("(a2)/(a) coffer's 8 MB initrd vs trivial initrd", "raw-boot-coffer-initrd", "raw-boot"),
		row("(b)/(c) coffer run vs runc run", "coffer-run", "runc-run"),
		row("(d)/(b) cost of the instrumentation", "coffer-run-phases", "coffer-run"),
		row("coffer run ext4 / erofs (busybox, instrumented)", "coffer-run-ext4", "coffer-run-phases"),
		row("image build ext4 / erofs (busybox)", "mkfs-ext4-busybox", "mkfs-erofs-busybox"),
		row("image build ext4 / erofs (big)", "mkfs-ext4-big", "mkfs-erofs-big"),
	}
	if len(r.get("coffer-run-big").Wall) > 0 {
		rows = append(rows, row("coffer run ext4 / erofs (big, instrumented)", "coffer-run-big-ext4", "coffer-run-big"))
	}
	return rows
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// phaseStat is the distribution of one phase over the instrumented runs.
type phaseStat struct {
	Key, Label string
	Summary    summary
}

// phaseSeries are the instrumented cases, main one first, with the
// column heads of the phase table.
var phaseSeries = []struct{ id, head string }{
	{"coffer-run-phases", "erofs (d)"},
	{"coffer-run-ext4", "ext4"},
	{"coffer-run-big", "big erofs"},
	{"coffer-run-big-ext4", "big ext4"},
}

// phaseStats summarizes the phases of one instrumented case.
func (r *report) phaseStats(id string) (stats []phaseStat, mkfs, modules, uptime summary) {
	runs := r.get(id).Phases
	for _, d := range phaseDefs {
		var ds []time.Duration
		for _, p := range runs {
			if v, ok := p.Phases[d.key]; ok {
				ds = append(ds, v)
			}
		}
		if len(ds) > 0 {
			stats = append(stats, phaseStat{Key: d.key, Label: d.label, Summary: summarize(ds)})
		}
	}
	var m, mod, up []time.Duration
	for _, p := range runs {
		m = append(m, p.Mkfs)
		mod = append(mod, p.Modules)
		up = append(up, p.GuestUptime)
	}
	return stats, summarize(m), summarize(mod), summarize(up)
}

// cofferAccel is the accelerator coffer reported in its instrumented runs.
func (r *report) cofferAccel() string {
	for _, p := range r.get("coffer-run-phases").Phases {
		if p.Accel != "" {
			return p.Accel
		}
	}
	if r.Idle != nil {
		return r.Idle.Accel
	}
	return ""
}

func (r *report) cofferQEMUCmdline() string {
	for _, p := range r.get("coffer-run-phases").Phases {
		if p.QEMUCmdline != "" {
			return p.QEMUCmdline
		}
	}
	return ""
}

func (r *report) maxOthers() int {
	m := 0
	for _, s := range r.Series {
		for _, o := range s.Others {
			m = max(m, o)
		}
	}
	return m
}

// busyStarts counts runs that started while the host was busy.
func (r *report) busyStarts() int {
	n := 0
	for _, s := range r.Series {
		for _, b := range s.Busy {
			if b >= quietBusy {
				n++
			}
		}
	}
	return n
}

// disturbedRuns counts runs during which others used quietDisturb CPUs
// or more.
func (r *report) disturbedRuns() int {
	n := 0
	for _, s := range r.Series {
		for _, d := range s.Disturb {
			if d >= quietDisturb {
				n++
			}
		}
	}
	return n
}

func (r *report) busyStats() (median, maxBusy float64) {
	var all []time.Duration
	for _, s := range r.Series {
		for _, b := range s.Busy {
			all = append(all, time.Duration(b*1e6))
			maxBusy = max(maxBusy, b)
		}
	}
	return float64(summarize(all).Median) / 1e6, maxBusy
}

func (r *report) totalRuns() int {
	n := 0
	for _, s := range r.Series {
		n += len(s.Others)
	}
	return n
}

func (m qemuMem) String() string {
	return fmt.Sprintf("guest RAM %.1f + TCG code %.1f + other anon %.1f + files %.1f MiB",
		float64(m.GuestRAM)/1024, float64(m.TCG)/1024, float64(m.Other)/1024, float64(m.File)/1024)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (r *report) printTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "coffer sandbox benchmark: n=%d (+1 warm-up) per case, interleaved in a shuffled order (-seed %d)\n", r.N, r.Seed)
	fmt.Fprintf(w, "machine:  %d CPUs, %s, host kernel %s, transparent huge pages %q\n", m.CPUs, m.CPUModel, m.HostKernel, m.THP)
	fmt.Fprintf(w, "accel:    %s (coffer used: %s) — %s\n", m.Accel, orDash(r.cofferAccel()), m.AccelReason)
	fmt.Fprintf(w, "qemu:     %s (%s), q35, -m 256, -smp 1\n", m.QEMU, m.QEMUVersion)
	fmt.Fprintf(w, "guest:    kernel %s, cmdline %q, initrd %s with %d modules, agent %s (trivial initrd %s)\n",
		m.GuestKernel, m.GuestCmdline, mib(m.GuestInitrd), m.GuestModules, m.GuestAgent, mib(m.TinyInitrd))
	fmt.Fprintf(w, "coffer:   %s (%s); %s\n", m.Coffer, m.CofferVersion, m.Runc)
	fmt.Fprintf(w, "rootfs:   busybox %s in %d entries; big = busybox + %s, %s in %d entries\n",
		mib(m.BusyboxBytes), m.BusyboxFiles, m.BigTree, mib(m.BigBytes), m.BigFiles)
	medBusy, maxBusy := r.busyStats()
	fmt.Fprintf(w, "load:     loadavg %s before, %s after; host CPU busy just before a run: median %.0f%%, max %.0f%%, >= %.0f%% before %d of %d runs;\n",
		r.LoadBefore, r.LoadAfter, 100*medBusy, 100*maxBusy, 100*quietBusy, r.busyStarts(), r.totalRuns())
	fmt.Fprintf(w, "          other processes used >= %.1f CPUs during %d of %d runs (those are left out of the 'quiet' columns);\n",
		quietDisturb, r.disturbedRuns(), r.totalRuns())
	fmt.Fprintf(w, "          other QEMU processes at a run's start: max %d; waited %s in total for quiet (-quiet-wait)\n\n",
		r.maxOthers(), r.QuietWaited.Round(time.Second))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tmedian\tmin\tmax\tcpu (median)\tn\tquiet median\tquiet n\t")
	for _, s := range r.Series {
		sm := summarize(s.Wall)
		label := s.Label
		if s.Size > 0 {
			label += fmt.Sprintf(" [image %s]", mib(s.Size))
		}
		fail := ""
		if len(s.Failures) > 0 {
			fail = fmt.Sprintf(" (%d failed)", len(s.Failures))
		}
		q := summarize(s.quietWall())
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d%s\t%s\t%d\t\n", label, fmtDur(sm.Median), fmtDur(sm.Min), fmtDur(sm.Max),
			fmtDur(summarize(s.CPU).Median), sm.N, fail, fmtDur(q.Median), q.N)
	}
	tw.Flush()
	for _, id := range []string{"raw-boot", "raw-boot-coffer-initrd"} {
		if up := summarize(r.get(id).Uptime); up.N > 0 {
			fmt.Fprintf(w, "  %s: guest uptime when the trivial init ran: median %s (min %s, max %s)\n",
				id, fmtDur(up.Median), fmtDur(up.Min), fmtDur(up.Max))
		}
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ratio (medians)\tall runs\tquiet runs\ttarget\tresult (all runs)")
	for _, row := range r.ratios() {
		quiet := "-"
		if row.Quiet > 0 {
			quiet = fmt.Sprintf("%.2f", row.Quiet)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\t%s\n", row.Name, row.Value, quiet, orDash(row.Target), orDash(row.Result))
	}
	tw.Flush()

	fmt.Fprintln(w)
	if r.Idle != nil {
		i := r.Idle
		total := i.totalPssMiB()
		fmt.Fprintf(w, "idle sandbox (coffer run -d -- sleep 600, 256 MiB guest, after %s):\n", i.Waited)
		fmt.Fprintf(w, "  qemu (pid %d)  PSS %.1f MiB (RSS %.1f MiB) = %s (THP as the host has it)\n",
			i.QEMUPID, float64(i.QEMU.PssKiB)/1024, float64(i.QEMU.RssKiB)/1024, i.QEMUSplit)
		fmt.Fprintf(w, "  owner (pid %d) PSS %.1f MiB (RSS %.1f MiB)\n", i.OwnerPID, float64(i.Owner.PssKiB)/1024, float64(i.Owner.RssKiB)/1024)
		fmt.Fprintf(w, "  total PSS %.1f MiB: target <= %.0f MiB %s; Kata's published ~%.0f MiB: %.2fx\n",
			total, targetIdleMiB, passMiss(total <= targetIdleMiB), kataIdleMiB, total/kataIdleMiB)
	} else {
		fmt.Fprintf(w, "idle sandbox: not measured: %s\n", r.IdleError)
	}
	if len(r.IdleRows) > 0 {
		fmt.Fprintln(w, "  compared with (raw-boot rows: the trivial init stays up instead of powering off):")
		for _, ri := range r.IdleRows {
			thp := ""
			if ri.THPOff {
				thp = ", THP disabled for QEMU"
			}
			owner := ""
			if ri.Owner != nil {
				owner = fmt.Sprintf(" + owner %.1f", float64(ri.Owner.PssKiB)/1024)
			}
			fmt.Fprintf(w, "  %-32s total %6.1f MiB: qemu %s%s\n", ri.Case+thp, ri.totalPssMiB(), ri.QEMUSplit, owner)
		}
	}

	r.printPhases(w)
	if cl := r.cofferQEMUCmdline(); cl != "" {
		fmt.Fprintf(w, "\ncoffer's QEMU command line: %s\n", cl)
	}
	for _, s := range r.Series {
		for _, f := range s.Failures {
			fmt.Fprintf(w, "FAILED %s: %s\n", s.ID, f)
		}
	}
}

// printPhases prints the split of the main instrumented case, with the
// medians of the other instrumented cases beside it.
func (r *report) printPhases(w io.Writer) {
	stats, mkfs, modules, uptime := r.phaseStats(phaseSeries[0].id)
	if len(stats) == 0 {
		return
	}
	fmt.Fprintln(w)
	total := summarize(r.get(phaseSeries[0].id).Wall)
	fmt.Fprintf(w, "where a coffer run's time goes (instrumented runs: --log-level debug + the agent's log; guest events moved onto the host clock):\n")
	type col struct {
		head    string
		med     map[string]time.Duration
		total   time.Duration
		sum     time.Duration
		mkfs    time.Duration
		modules time.Duration
	}
	var cols []col
	for _, ps := range phaseSeries[1:] {
		st, mk, mod, _ := r.phaseStats(ps.id)
		if len(st) == 0 {
			continue
		}
		c := col{head: ps.head, med: map[string]time.Duration{}, total: summarize(r.get(ps.id).Wall).Median, mkfs: mk.Median, modules: mod.Median}
		for _, p := range st {
			c.med[p.Key] = p.Summary.Median
			c.sum += p.Summary.Median
		}
		cols = append(cols, c)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "phase\t%s median\tmin\tmax\tshare\t", phaseSeries[0].head)
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", c.head)
	}
	fmt.Fprintln(tw)
	var sum time.Duration
	for _, p := range stats {
		sum += p.Summary.Median
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f%%\t", p.Label, fmtDur(p.Summary.Median), fmtDur(p.Summary.Min), fmtDur(p.Summary.Max),
			100*ratio(p.Summary.Median, total.Median))
		for _, c := range cols {
			fmt.Fprintf(tw, "%s\t", fmtDur(c.med[p.Key]))
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "sum of phase medians\t%s\t\t\t\t", fmtDur(sum))
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", fmtDur(c.sum))
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "median total (wall)\t%s\t\t\t\t", fmtDur(total.Median))
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", fmtDur(c.total))
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "  of which mkfs (coffer's 'took')\t%s\t\t\t\t", fmtDur(mkfs.Median))
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", fmtDur(c.mkfs))
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "  agent-reported module loading\t%s\t\t\t\t", fmtDur(modules.Median))
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", fmtDur(c.modules))
	}
	fmt.Fprintln(tw)
	tw.Flush()
	fmt.Fprintf(w, "  guest uptime when the agent started (after module loading): median %s\n", fmtDur(uptime.Median))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// JSON form.

type jsonSeries struct {
	ID         string    `json:"id"`
	Label      string    `json:"label"`
	N          int       `json:"n"`
	MedianMs   float64   `json:"median_ms"`
	MinMs      float64   `json:"min_ms"`
	MaxMs      float64   `json:"max_ms"`
	CPUMedMs   float64   `json:"cpu_median_ms"`
	WarmupMs   float64   `json:"warmup_ms"`
	SamplesMs  []float64 `json:"samples_ms"`
	CPUMs      []float64 `json:"cpu_ms"`
	UptimeMs   []float64 `json:"guest_uptime_at_init_ms,omitempty"`
	ImageBytes int64     `json:"image_bytes,omitempty"`
	Others     []int     `json:"other_qemu_at_start"`
	Busy       []float64 `json:"host_cpu_busy_at_start"`
	Disturb    []float64 `json:"others_cpus_during"`
	QuietMs    float64   `json:"quiet_median_ms"`
	QuietN     int       `json:"quiet_n"`
	Failures   []string  `json:"failures,omitempty"`
}

type jsonPhaseSet struct {
	Case      string      `json:"case"`
	Phases    []jsonPhase `json:"phases"`
	MkfsMs    float64     `json:"mkfs_median_ms"`
	ModulesMs float64     `json:"modules_median_ms"`
	UptimeMs  float64     `json:"guest_uptime_at_agent_median_ms"`
}

type jsonPhase struct {
	Key      string  `json:"key"`
	Label    string  `json:"label"`
	MedianMs float64 `json:"median_ms"`
	MinMs    float64 `json:"min_ms"`
	MaxMs    float64 `json:"max_ms"`
}

type jsonIdle struct {
	*idleResult
	WaitS       float64 `json:"wait_s"`
	TotalPssMiB float64 `json:"total_pss_mib"`
	TargetMiB   float64 `json:"target_mib"`
	Result      string  `json:"result"`
	KataMiB     float64 `json:"kata_published_mib"`
}

type jsonReport struct {
	Machine           machineInfo    `json:"machine"`
	CofferAccel       string         `json:"coffer_accel"`
	N                 int            `json:"n"`
	Seed              uint64         `json:"seed"`
	Started           time.Time      `json:"started"`
	Finished          time.Time      `json:"finished"`
	LoadBefore        string         `json:"loadavg_before"`
	LoadAfter         string         `json:"loadavg_after"`
	MaxOtherQEMU      int            `json:"max_other_qemu"`
	BusyStarts        int            `json:"runs_started_busy"`
	DisturbedRuns     int            `json:"runs_disturbed"`
	QuietWaitedS      float64        `json:"quiet_waited_s"`
	Cases             []jsonSeries   `json:"cases"`
	Ratios            []ratioRow     `json:"ratios"`
	Phases            []jsonPhaseSet `json:"phases"`
	CofferQEMUCmdline string         `json:"coffer_qemu_cmdline,omitempty"`
	Idle              *jsonIdle      `json:"idle,omitempty"`
	IdleRows          []*idleRow     `json:"idle_compared,omitempty"`
	IdleError         string         `json:"idle_error,omitempty"`
}

func (r *report) toJSON() jsonReport {
	j := jsonReport{
		Machine: r.Machine, CofferAccel: r.cofferAccel(), N: r.N, Seed: r.Seed, Started: r.Started, Finished: r.Finished,
		LoadBefore: r.LoadBefore, LoadAfter: r.LoadAfter, MaxOtherQEMU: r.maxOthers(),
		BusyStarts: r.busyStarts(), DisturbedRuns: r.disturbedRuns(), QuietWaitedS: r.QuietWaited.Seconds(),
		Ratios: r.ratios(), CofferQEMUCmdline: r.cofferQEMUCmdline(), IdleError: r.IdleError, IdleRows: r.IdleRows,
	}
	clean := func(f float64) float64 {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0
		}
		return math.Round(f*1000) / 1000
	}
	for i := range j.Ratios {
		j.Ratios[i].Value, j.Ratios[i].Quiet = clean(j.Ratios[i].Value), clean(j.Ratios[i].Quiet)
	}
	for _, s := range r.Series {
		sm := summarize(s.Wall)
		j.Cases = append(j.Cases, jsonSeries{
			ID: s.ID, Label: s.Label, N: sm.N, MedianMs: ms(sm.Median), MinMs: ms(sm.Min), MaxMs: ms(sm.Max),
			CPUMedMs: ms(summarize(s.CPU).Median), WarmupMs: ms(s.Warmup), SamplesMs: msList(s.Wall), CPUMs: msList(s.CPU),
			UptimeMs: msList(s.Uptime), ImageBytes: s.Size, Others: s.Others, Busy: roundAll(s.Busy), Disturb: roundAll(s.Disturb),
			QuietMs: ms(summarize(s.quietWall()).Median), QuietN: len(s.quietWall()), Failures: s.Failures,
		})
	}
	for _, ps := range phaseSeries {
		stats, mkfs, modules, uptime := r.phaseStats(ps.id)
		if len(stats) == 0 {
			continue
		}
		set := jsonPhaseSet{Case: ps.id, MkfsMs: ms(mkfs.Median), ModulesMs: ms(modules.Median), UptimeMs: ms(uptime.Median)}
		for _, p := range stats {
			set.Phases = append(set.Phases, jsonPhase{Key: p.Key, Label: p.Label, MedianMs: ms(p.Summary.Median), MinMs: ms(p.Summary.Min), MaxMs: ms(p.Summary.Max)})
		}
		j.Phases = append(j.Phases, set)
	}
	if r.Idle != nil {
		total := math.Round(r.Idle.totalPssMiB()*10) / 10
		j.Idle = &jsonIdle{idleResult: r.Idle, WaitS: r.Idle.Waited.Seconds(), TotalPssMiB: total, TargetMiB: targetIdleMiB,
			Result: passMiss(total <= targetIdleMiB), KataMiB: kataIdleMiB}
	}
	return j
}

func roundAll(fs []float64) []float64 {
	out := make([]float64, len(fs))
	for i, f := range fs {
		out[i] = math.Round(f*1000) / 1000
	}
	return out
}

package qemu

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBootTiming measures, per machine type, the time from calling Start to
// QMP ready, to the test init's marker on the console, and to qemu's exit
// after the guest powers off. It informs the default machine type and runs
// only with COFFER_BOOT_TIMING=1 (COFFER_BOOT_TIMING_RUNS sets the runs per
// variant, default 3), sequentially so the numbers are not skewed:
//
//	COFFER_BOOT_TIMING=1 go test -run TestBootTiming -v ./internal/hypervisor/qemu/
func TestBootTiming(t *testing.T) {
	if os.Getenv("COFFER_BOOT_TIMING") != "1" {
		t.Skip("boot timing table; set COFFER_BOOT_TIMING=1 to run it")
	}
	dir := vmTest(t)
	runs := 3
	if n, err := strconv.Atoi(os.Getenv("COFFER_BOOT_TIMING_RUNS")); err == nil && n > 0 {
		runs = n
	}
	variants := []struct{ name, machine, cmdline string }{
		{"q35", "q35", ""},
		{"pc", "pc", ""},
		{"microvm", "microvm", ""},
		{"microvm tsc_early_khz", "microvm", "tsc_early_khz=2000000"},
		{"q35 (no quiet)", "q35", "loglevel=7"},
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var table strings.Builder
	fmt.Fprintf(&table, "%-24s %8s %8s %8s  %s\n", "variant", "qmp", "marker", "exit", "failures (of runs)")
	for vi, vr := range variants {
		var qmp, mark, exit []time.Duration
		var failures []string
		for i := range runs {
			cfg := guestConfig(dir, "poweroff")
			cfg.StateDir = filepath.Join(dir, fmt.Sprintf("v%d-%d", vi, i))
			cfg.MachineType = vr.machine
			if vr.cmdline != "" {
				cfg.Cmdline += " " + vr.cmdline
			}
			q, m, e, err := timeBoot(cfg.StateDir, func(ctx context.Context) (*VM, error) { return Start(ctx, cfg, quiet) })
			if err != nil {
				failures = append(failures, err.Error())
				continue
			}
			qmp, mark, exit = append(qmp, q), append(mark, m), append(exit, e)
		}
		fmt.Fprintf(&table, "%-24s %8s %8s %8s  %d/%d %s\n", vr.name, median(qmp), median(mark), median(exit), len(failures), runs, strings.Join(failures, "; "))
	}
	t.Logf("TCG boot timing, median of %d (time since Start was called):\n%s", runs, table.String())
}

// timeBoot starts a VM and times QMP ready, marker and exit; a run that has
// not exited after 20 s counts as a hang.
func timeBoot(stateDir string, start func(context.Context) (*VM, error)) (qmp, mark, exit time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	v, err := start(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	defer v.Stop(context.Background())
	qmp = time.Since(t0)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for mark == 0 {
		b, _ := os.ReadFile(v.ConsoleLogPath())
		if bytes.Contains(b, []byte(marker)) {
			mark = time.Since(t0)
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, 0, 0, fmt.Errorf("hang: no marker after 20s, console ends %q", v.ConsoleTail(1))
		}
	}
	select {
	case <-v.Done():
		exit = time.Since(t0)
	case <-ctx.Done():
		return 0, 0, 0, fmt.Errorf("hang: no exit after 20s")
	}
	if err := v.ExitErr(); err != nil {
		return 0, 0, 0, err
	}
	return qmp, mark, exit, nil
}

func median(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2].Round(10 * time.Millisecond).String()
}

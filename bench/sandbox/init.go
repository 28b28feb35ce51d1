package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// initMarker starts the line the trivial init (tinyinit/) prints on the
// console; the bench checks for it so that a kernel panic (which also ends
// QEMU, through panic=-1 and -no-reboot) is never counted as a boot.
const initMarker = "coffer-bench-init: powering off, uptime="

// tinyInitPkg is the trivial init's import path.
const tinyInitPkg = "github.com/coffer-project/coffer/bench/sandbox/tinyinit"

// buildTinyInit builds the trivial init statically into dir. It needs the
// Go toolchain and a working directory inside the coffer module; run.sh
// builds it itself and passes -init instead.
func buildTinyInit(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "tinyinit")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, tinyInitPkg)
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the trivial init (%s): %w: %s (run from the repository, or pass -init with a static build of it)",
			tinyInitPkg, err, strings.TrimSpace(string(b)))
	}
	return out, nil
}

// parseInitMarker finds the marker in a console log and returns the guest
// uptime it reports.
func parseInitMarker(console string) (time.Duration, bool) {
	i := strings.Index(console, initMarker)
	if i < 0 {
		return 0, false
	}
	rest := console[i+len(initMarker):]
	if j := strings.IndexAny(rest, "\r\n"); j >= 0 {
		rest = rest[:j]
	}
	sec, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(sec * float64(time.Second)), true
}

//go:build integration

// Package test holds Coffer's integration tests: they boot real VMs (KVM
// where the host can, TCG otherwise), run the real coffer binary and check
// behaviour from the outside: exit codes, bytes, errors, and that nothing
// (qemu processes, mounts, pod state) is left behind.
package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/testimage"
)

var (
	cofferBin  string
	busybox    string // rootfs dir with a static busybox
	runtimeDir string
	suiteDir   string // this suite's temp dir; other suites have their own
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests need root (VMs, mounts, cgroups): run `sudo make test`")
		return 1
	}
	cofferBin = os.Getenv("COFFER_BIN")
	if cofferBin == "" {
		cofferBin, _ = filepath.Abs("../bin/coffer")
	}
	if _, err := os.Stat(cofferBin); err != nil {
		fmt.Fprintf(os.Stderr, "coffer binary not found at %s: run `make build` (or set COFFER_BIN)\n", cofferBin)
		return 1
	}
	tmp, err := os.MkdirTemp("", "coffer-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	suiteDir = tmp
	// Everything this suite starts (coffer, containerd, shims) makes its
	// temp files in a private TMPDIR, so leaks are ours to find even when
	// another suite runs on the same machine.
	privTmp := filepath.Join(tmp, "tmp")
	if err := os.Mkdir(privTmp, 0o1777); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("TMPDIR", privTmp)
	runtimeDir = filepath.Join(tmp, "run")
	os.Setenv("COFFER_RUNTIME_DIR", runtimeDir)
	busybox = filepath.Join(tmp, "busybox")
	if err := testimage.BusyboxRootfs(busybox); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mountsBefore := mounts()
	tmpBefore := tmpEntries()
	code := m.Run()
	if code == 0 {
		if err := checkNoLeaks(mountsBefore, tmpBefore); err != nil {
			fmt.Fprintln(os.Stderr, "LEAK:", err)
			return 1
		}
	}
	return code
}

// mounts is the host's mount table without the lines of other integration
// suites that may run on this machine at the same time.
func mounts() string {
	b, _ := os.ReadFile("/proc/self/mounts")
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "/coffer-it-") && !strings.Contains(line, suiteDir) {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// checkNoLeaks fails if a qemu of ours still runs, a pod dir remains or
// the host's mount table changed.
func checkNoLeaks(mountsBefore string, tmpBefore map[string]bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var problems []string
		if p := ourQEMUs(); len(p) > 0 {
			problems = append(problems, fmt.Sprintf("qemu processes still running: %v", p))
		}
		for _, helper := range []string{"virtiofsd", "swtpm"} {
			if p := ourProcesses(helper); len(p) > 0 {
				problems = append(problems, fmt.Sprintf("%s processes still running: %v", helper, p))
			}
		}
		if entries, _ := os.ReadDir(filepath.Join(runtimeDir, "pods")); len(entries) > 0 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			problems = append(problems, fmt.Sprintf("pod dirs left: %v", names))
		}
		if m := mounts(); m != mountsBefore {
			problems = append(problems, "host mount table changed")
		}
		for e := range tmpEntries() {
			if !tmpBefore[e] {
				problems = append(problems, "temp dir left: "+e)
			}
		}
		if len(problems) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s", strings.Join(problems, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ourQEMUs lists qemu processes whose command line names our runtime dir.
func ourQEMUs() []string { return ourProcesses("qemu-system") }

// ourProcesses lists the processes whose program name holds name and
// whose command line names our runtime dir.
func ourProcesses(name string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		s := strings.ReplaceAll(string(cmd), "\x00", " ")
		prog := filepath.Base(strings.SplitN(string(cmd), "\x00", 2)[0])
		if strings.Contains(prog, name) && strings.Contains(s, runtimeDir) {
			out = append(out, e.Name())
		}
	}
	return out
}

// result of one coffer invocation.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// runCmd runs a program with args, optional stdin and extra environment,
// logs the outcome and returns it; a failure to start is fatal.
func runCmd(t *testing.T, env []string, stdin, prog string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s %v: %v", filepath.Base(prog), args, err)
		}
		r.code = ee.ExitCode()
	}
	t.Logf("%s %s -> exit %d in %s\nstdout: %q\nstderr: %q", filepath.Base(prog), strings.Join(args, " "), r.code, r.took.Round(time.Millisecond), clip(r.stdout), clip(r.stderr))
	return r
}

// coffer runs the coffer binary with args and optional stdin.
func coffer(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCmd(t, nil, stdin, cofferBin, args...)
}

// runIn runs CMD in a fresh pod with the busybox rootfs.
func runIn(t *testing.T, flags []string, cmd ...string) result {
	t.Helper()
	args := append([]string{"run", "--rm", "--rootfs", busybox}, flags...)
	args = append(args, "--")
	return coffer(t, "", append(args, cmd...)...)
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func tmpEntries() map[string]bool {
	out := map[string]bool{}
	entries, _ := os.ReadDir(os.TempDir()) // the suite's private TMPDIR once set
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

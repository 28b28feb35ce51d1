package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/sandbox"
	"github.com/coffer-project/coffer/internal/testlog"
	"golang.org/x/sys/unix"
)

func TestParseSignal(t *testing.T) {
	good := map[string]unix.Signal{
		"KILL": unix.SIGKILL, "kill": unix.SIGKILL, "SIGKILL": unix.SIGKILL, "sigterm": unix.SIGTERM,
		"Hup": unix.SIGHUP, "USR1": unix.SIGUSR1, "SIGWINCH": unix.SIGWINCH,
		"9": unix.SIGKILL, "15": unix.SIGTERM, "1": unix.SIGHUP, "64": unix.Signal(64),
	}
	for in, want := range good {
		got, err := parseSignal(in)
		if err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "65", "-9", "+", "SIG", "SIGSIGKILL", "TERM9", "BOGUS", "9x", " KILL"} {
		got, err := parseSignal(in)
		if err == nil {
			t.Errorf("parseSignal(%q) = %v, want an error", in, got)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(in)) || !strings.Contains(err.Error(), "TERM") {
			t.Errorf("parseSignal(%q) error %q: want the value and an example", in, err)
		}
	}
}

// deadPID is a pid no process has: pids stay below pid_max.
func deadPID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || sandbox.ProcessStart(pid) != 0 {
		t.Fatalf("pid_max %q gives no dead pid", b)
	}
	return pid
}

// TestSweepStale: `coffer run` removes the records of foreground pods
// whose coffer process died without recording an exit (their VM died with
// it), and nothing else: not detached pods (their owner's death is shown
// by `coffer ps` until `coffer rm`), not exited pods, not pods still being
// handed to an owner, not live ones.
func TestSweepStale(t *testing.T) {
	rt := t.TempDir()
	self := os.Getpid()
	selfStart := sandbox.ProcessStart(self)
	dead := deadPID(t)
	zero := 0
	pods := map[string]*sandbox.State{
		"fg-dead":     {Status: sandbox.StatusRunning, OwnerPID: dead, OwnerStart: 12345},
		"fg-starting": {Status: sandbox.StatusStarting, OwnerPID: dead, OwnerStart: 12345},
		// The owner's pid now belongs to another process (this one).
		"fg-pid-reused":  {Status: sandbox.StatusRunning, OwnerPID: self, OwnerStart: selfStart + 1},
		"fg-alive":       {Status: sandbox.StatusRunning, OwnerPID: self, OwnerStart: selfStart},
		"fg-exited":      {Status: sandbox.StatusExited, OwnerPID: dead, OwnerStart: 12345, ExitStatus: &zero},
		"detached-dead":  {Status: sandbox.StatusRunning, OwnerPID: dead, OwnerStart: 12345, Detached: true},
		"handing-over":   {Status: sandbox.StatusStarting, Detached: true},
		"no-owner-yet":   {Status: sandbox.StatusStarting},
		"fg-dead-q":      {Status: sandbox.StatusRunning, OwnerPID: dead, OwnerStart: 12345},
		"fg-dead-alien":  {Status: sandbox.StatusRunning, OwnerPID: dead, OwnerStart: 12345},
		"state-not-read": nil, // a directory without state.json
	}
	for name, st := range pods {
		dir, err := sandbox.CreatePodDir(rt, name)
		if err != nil {
			t.Fatal(err)
		}
		if st == nil {
			continue
		}
		st.Name, st.ID, st.Created = name, name, time.Now()
		if err := sandbox.WriteState(dir, st); err != nil {
			t.Fatal(err)
		}
	}
	// A QEMU left behind by a dead owner is killed when its command line
	// names the pod's VM directory, and only then.
	leftover := startNamed(t, sandbox.VMDir(sandbox.PodDir(rt, "fg-dead-q")))
	alien := startNamed(t, "/somewhere/else/vm")
	for name, pid := range map[string]int{"fg-dead-q": leftover.pid(), "fg-dead-alien": alien.pid()} {
		dir := sandbox.PodDir(rt, name)
		st, err := sandbox.ReadState(dir)
		if err != nil {
			t.Fatal(err)
		}
		st.QEMUPID = pid
		if err := sandbox.WriteState(dir, st); err != nil {
			t.Fatal(err)
		}
	}

	rec := &testlog.Recorder{}
	sweepStale(rt, slog.New(rec))

	removed := map[string]bool{"fg-dead": true, "fg-starting": true, "fg-pid-reused": true, "fg-dead-q": true, "fg-dead-alien": true}
	for name := range pods {
		_, err := os.Stat(sandbox.PodDir(rt, name))
		switch {
		case removed[name] && err == nil:
			t.Errorf("stale pod %s was kept", name)
		case !removed[name] && err != nil:
			t.Errorf("pod %s was removed: %v", name, err)
		}
	}
	var logged []string
	for _, r := range rec.Records() {
		if r.Message == "removing stale pod" && r.Level == slog.LevelInfo {
			logged = append(logged, testlog.Attr(r, "name"))
		}
	}
	if len(logged) != len(removed) {
		t.Errorf("logged removals %q, want %d", logged, len(removed))
	}

	if err := leftover.waitExit(5 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("the leftover QEMU stand-in naming the pod was not killed: %v", err)
	}
	if err := alien.waitExit(200 * time.Millisecond); !errors.Is(err, errStillRunning) {
		t.Errorf("a process not naming the pod's VM dir was touched: %v", err)
	}

	// Nothing to sweep: a missing runtime dir is fine.
	sweepStale(filepath.Join(rt, "nope"), slog.New(rec))
}

var errStillRunning = errors.New("still running")

// namedProc is a waiting process with a chosen argument in its command line.
type namedProc struct {
	cmd  *exec.Cmd
	done chan error // Wait's result, put back after reading
}

// startNamed starts a process that waits, with arg in its command line
// (as QEMU's has the pod's VM directory); the test kills it at the end.
func startNamed(t *testing.T, arg string) *namedProc {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "read x", "sh", arg)
	// stdin is a pipe never written to: read blocks, with no child.
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &namedProc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *namedProc) pid() int { return p.cmd.Process.Pid }

// waitExit waits up to d for the process to exit and returns its Wait
// error (errStillRunning if it did not exit).
func (p *namedProc) waitExit(d time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err == nil {
			return errors.New("exited 0")
		}
		return err
	case <-time.After(d):
		return errStillRunning
	}
}

// TestPsShowsAccel: `coffer ps` shows the accelerator each pod's VM runs
// under.
func TestPsShowsAccel(t *testing.T) {
	rt := t.TempDir()
	t.Setenv("COFFER_RUNTIME_DIR", rt)
	self := os.Getpid()
	code := 3
	for name, st := range map[string]*sandbox.State{
		"on-tcg":  {Status: sandbox.StatusRunning, OwnerPID: self, OwnerStart: sandbox.ProcessStart(self), Accel: "tcg", Command: []string{"sleep", "9"}},
		"was-kvm": {Status: sandbox.StatusExited, Accel: "kvm", ExitStatus: &code, Command: []string{"false"}},
		"booting": {Status: sandbox.StatusStarting, OwnerPID: self, OwnerStart: sandbox.ProcessStart(self)},
	} {
		dir, err := sandbox.CreatePodDir(rt, name)
		if err != nil {
			t.Fatal(err)
		}
		st.Name, st.ID, st.Created = name, name, time.Now()
		if err := sandbox.WriteState(dir, st); err != nil {
			t.Fatal(err)
		}
	}
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"ps"})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	t.Logf("coffer ps:\n%s", out.String())
	if len(lines) != 4 || !strings.Contains(lines[0], "ACCEL") {
		t.Fatalf("coffer ps printed %q", out.String())
	}
	col := strings.Index(lines[0], "ACCEL")
	want := map[string]string{"on-tcg": "tcg", "was-kvm": "kvm", "booting": "-"}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(l) <= col {
			t.Errorf("short line %q", l)
			continue
		}
		if got := strings.Fields(l[col:])[0]; got != want[f[0]] {
			t.Errorf("pod %s: ACCEL %q, want %q (line %q)", f[0], got, want[f[0]], l)
		}
	}
}

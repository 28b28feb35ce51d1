//go:build integration

package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/sandbox"
	"golang.org/x/sys/unix"
)

func TestSignalForwarding(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cofferBin, "run", "--rm", "--rootfs", busybox, "--",
		"sh", "-c", `trap 'echo got INT' INT; trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done`)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(stdout.String(), "ready") })
	// Ctrl-C without a terminal: SIGINT reaches the container, which
	// handles it and keeps running.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(stdout.String(), "got INT") })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != 42 || !strings.Contains(stdout.String(), "got TERM") {
		t.Fatalf("SIGTERM not forwarded: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

func TestQEMUKilledMidRun(t *testing.T) {
	t.Parallel()
	name := "victim"
	cmd, stderr := startForeground(t, name, "echo up; sleep 600")
	qemu := podQEMUPID(t, name)
	killed := time.Now()
	if err := unix.Kill(qemu, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	took := time.Since(killed)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code == 0 {
		t.Fatal("coffer exited 0 after its VM was killed")
	}
	if took > 5*time.Second {
		t.Errorf("coffer took %s to notice the VM died", took)
	}
	if !strings.Contains(stderr.String(), "VM exited unexpectedly") || !strings.Contains(stderr.String(), "killed by signal") {
		t.Errorf("unclear message: %q", stderr.String())
	}
}

// A detached pod whose VM dies is recorded as failed, with the reason.
func TestDetachedQEMUKilled(t *testing.T) {
	t.Parallel()
	name := "dvictim"
	runDetached(t, name)
	if err := unix.Kill(podQEMUPID(t, name), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(psLine(t, name), "failed") })
	r := coffer(t, "", "logs", name)
	if r.code != 0 || !strings.Contains(r.stderr, "ended abnormally") || !strings.Contains(r.stderr, "VM exited unexpectedly") {
		t.Fatalf("logs of a failed pod: %+v", r)
	}
	if r := coffer(t, "", "rm", name); r.code != 0 {
		t.Fatalf("rm of a failed pod: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(runtimeDir, "pods", name)); !os.IsNotExist(err) {
		t.Errorf("pod dir left after rm: %v", err)
	}
}

// The process that owns a detached pod dies: its VM goes with it (no
// orphan), ps reports the pod as dead, and rm removes what is left.
func TestDetachedOwnerKilled(t *testing.T) {
	t.Parallel()
	name := "orphan"
	runDetached(t, name)
	qemuPID, ownerPID := podState(t, name)
	if ownerPID == 0 {
		t.Fatalf("no owner pid in the state of pod %s", name)
	}
	if err := unix.Kill(ownerPID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return sandbox.ProcessStart(qemuPID) == 0 }) // gone or a zombie
	// A run in a parallel test may already have swept it (only dead pods
	// are swept): then ps has no line and rm finds no pod.
	if line := psLine(t, name); line != "" && !strings.Contains(line, "dead") {
		t.Fatalf("ps should show the pod whose owner died as dead: %q", line)
	}
	if r := coffer(t, "", "rm", name); r.code != 0 && !strings.Contains(r.stderr, "no pod named") {
		t.Fatalf("rm of a dead pod: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(runtimeDir, "pods", name)); !os.IsNotExist(err) {
		t.Errorf("pod dir left after rm: %v", err)
	}
}

// podQEMUPID reads the QEMU pid of a running pod from its state.
func podQEMUPID(t *testing.T, name string) int {
	t.Helper()
	qemuPID, _ := podState(t, name)
	return qemuPID
}

// podState reads the QEMU pid (never 0) and the owner pid of a running
// pod from its state.
func podState(t *testing.T, name string) (qemuPID, ownerPID int) {
	t.Helper()
	var st struct {
		QEMUPID  int `json:"qemu_pid"`
		OwnerPID int `json:"owner_pid"`
	}
	b, err := os.ReadFile(filepath.Join(runtimeDir, "pods", name, "state.json"))
	if err != nil || json.Unmarshal(b, &st) != nil || st.QEMUPID == 0 {
		t.Fatalf("no qemu pid in the state of pod %s: %s, %v", name, b, err)
	}
	return st.QEMUPID, st.OwnerPID
}

// startForeground starts `coffer run --rm --name name -- sh -c script`
// (which must print "up" once running) and waits for "up". The command is
// killed at the end of the test if still running.
func startForeground(t *testing.T, name, script string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, cofferBin, "run", "--rm", "--name", name, "--rootfs", busybox, "--", "sh", "-c", script)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(stdout.String(), "up") })
	return cmd, stderr
}

func TestDetachedExecKillRm(t *testing.T) {
	t.Parallel()
	name := "detached"
	t.Cleanup(func() { coffer(t, "", "rm", "-f", name) })
	r := coffer(t, "", "run", "-d", "--name", name, "--rootfs", busybox, "--", "sh", "-c", "echo started; exec sleep 600")
	if r.code != 0 || strings.TrimSpace(r.stdout) != name {
		t.Fatalf("run -d: %+v", r)
	}
	if line := psLine(t, name); !strings.Contains(line, "running") {
		t.Fatalf("ps does not show the running pod: %q", line)
	}
	// The agent's own log reaches the host through its log port.
	agentLog, err := os.ReadFile(filepath.Join(runtimeDir, "pods", name, "vm", "agent.log"))
	if err != nil || !strings.Contains(string(agentLog), "agent API ready") || !strings.Contains(string(agentLog), "container started") {
		t.Fatalf("agent log not forwarded to the host (%v): %q", err, clip(string(agentLog)))
	}
	// A second pod with the same name is refused.
	if r := coffer(t, "", "run", "-d", "--name", name, "--rootfs", busybox, "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("duplicate name: %+v", r)
	}
	r = coffer(t, "", "exec", name, "--", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 7")
	if r.code != 7 || !strings.Contains(r.stdout, "sleep 600") {
		t.Fatalf("exec: %+v", r)
	}
	r = coffer(t, "hello exec\n", "exec", "-i", name, "--", "cat")
	if r.code != 0 || r.stdout != "hello exec\n" {
		t.Fatalf("exec -i: %+v", r)
	}
	if r := coffer(t, "", "exec", name, "--", "no-such-cmd"); r.code != 127 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("exec of a missing command: %+v", r)
	}
	if r := coffer(t, "", "rm", name); r.code == 0 || !strings.Contains(r.stderr, "running") {
		t.Fatalf("rm of a running pod without -f must fail: %+v", r)
	}
	// pause / unpause: ps shows it, exec is refused while paused (it would
	// join the frozen cgroup), and works again after unpause.
	if r := coffer(t, "", "pause", name); r.code != 0 {
		t.Fatalf("pause: %+v", r)
	}
	if line := psLine(t, name); !strings.Contains(line, "paused") {
		t.Fatalf("ps does not show the paused pod: %q", line)
	}
	if r := coffer(t, "", "exec", name, "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "paused") {
		t.Fatalf("exec into a paused pod: %+v", r)
	}
	if r := coffer(t, "", "unpause", name); r.code != 0 {
		t.Fatalf("unpause: %+v", r)
	}
	if r := coffer(t, "", "exec", name, "--", "true"); r.code != 0 {
		t.Fatalf("exec after unpause: %+v", r)
	}
	if r := coffer(t, "", "kill", name); r.code != 0 {
		t.Fatalf("kill: %+v", r)
	}
	// kill (SIGKILL) returns once the exit is recorded, as `docker kill`
	// does: ps shows it and a plain rm works at once.
	if line := psLine(t, name); !strings.Contains(line, "exited (137)") {
		t.Fatalf("ps right after kill: %q", line)
	}
	if r := coffer(t, "", "logs", name); r.code != 0 || r.stdout != "started\n" {
		t.Errorf("coffer logs: %+v", r)
	}
	if r := coffer(t, "", "rm", name); r.code != 0 {
		t.Fatalf("rm: %+v", r)
	}
	if r := coffer(t, "", "ps", "-q"); slices.Contains(strings.Fields(r.stdout), name) {
		t.Fatalf("pod still listed after rm: %q", r.stdout)
	}
}

func TestRmForceRunningPod(t *testing.T) {
	t.Parallel()
	name := "forced"
	runDetached(t, name)
	if r := coffer(t, "", "rm", "-f", name); r.code != 0 {
		t.Fatalf("rm -f: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(runtimeDir, "pods", name)); err == nil {
		t.Fatal("pod dir left after rm -f")
	}
}

// psLine is the `coffer ps` row of one pod (other tests run pods in
// parallel, so the whole listing says nothing about this one).
func psLine(t *testing.T, name string) string {
	t.Helper()
	for _, line := range strings.Split(coffer(t, "", "ps").stdout, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return line
		}
	}
	return ""
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A coffer process killed outright takes its VM with it (parent-death
// signal), and the stale pod record is cleaned up by the next run.
func TestCrashedOwnerCleanedUp(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := "crashy"
	cmd := exec.CommandContext(ctx, cofferBin, "run", "--name", name, "--rootfs", busybox, "--", "sh", "-c", "echo up; sleep 600")
	var stdout syncBuffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(stdout.String(), "up") })
	b, err := os.ReadFile(filepath.Join(runtimeDir, "pods", name, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		QEMUPID int `json:"qemu_pid"`
	}
	_ = json.Unmarshal(b, &st)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	waitFor(t, 5*time.Second, func() bool { return sandbox.ProcessStart(st.QEMUPID) == 0 }) // gone or a zombie
	// (A run in a parallel test may already have swept it.)
	if line := psLine(t, name); line != "" && !strings.Contains(line, "dead") {
		t.Fatalf("ps should show the crashed pod as dead: %q", line)
	}
	// Any later run sweeps it.
	if r := runIn(t, nil, "true"); r.code != 0 {
		t.Fatalf("run: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(runtimeDir, "pods", name)); err == nil {
		t.Fatal("stale pod dir not cleaned up")
	}
}

// coffer kill of a foreground pod returns promptly (it hangs up before
// waiting, so the pod's proxy does not wait for it) and the foreground
// coffer run exits 137 right after.
func TestKillForegroundPod(t *testing.T) {
	t.Parallel()
	name := "fgkill"
	cmd, stderr := startForeground(t, name, "echo up; exec sleep 600")
	r := coffer(t, "", "kill", name)
	if r.code != 0 {
		t.Fatalf("kill: %+v", r)
	}
	if r.took > 5*time.Second {
		t.Errorf("kill of a foreground pod took %s", r.took)
	}
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != 137 {
		t.Fatalf("foreground coffer run exited %d after kill, want 137; stderr: %s", code, stderr.String())
	}
}

// runDetached starts pod name running `sleep 600` in the background; the
// test's cleanup removes it.
func runDetached(t *testing.T, name string) {
	t.Helper()
	t.Cleanup(func() { coffer(t, "", "rm", "-f", name) })
	if r := coffer(t, "", "run", "-d", "--name", name, "--rootfs", busybox, "--", "sleep", "600"); r.code != 0 {
		t.Fatalf("run -d: %+v", r)
	}
}

//go:build integration

package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coffer-project/coffer/internal/testimage"
)

// busyboxImage is the name the test image is imported under.
const busyboxImage = "docker.io/library/busybox:latest"

// containerd is a private containerd daemon for one test.
type containerd struct {
	release containerdRelease
	dir     string // root, state and socket live below it
	sock    string
	cmd     *exec.Cmd
	log     *syncBuffer
}

// containerdRelease is a containerd build the tests run against.
type containerdRelease struct {
	name            string // subtest name
	containerd, ctr string // binaries
	installHint     string
}

// toolsDir holds the tools scripts/setup.sh builds outside the system
// PATH (containerd 2.x, crictl).
const toolsDir = "/usr/local/lib/coffer-tools"

var (
	// containerd16 is Debian 12's containerd (task API v2).
	containerd16 = containerdRelease{name: "v1.6", containerd: "containerd", ctr: "ctr",
		installHint: "apt-get install containerd"}
	// containerd2 is containerd 2.4 (bootstrap protocol, task API v3).
	containerd2 = containerdRelease{name: "v2", containerd: toolsDir + "/containerd", ctr: toolsDir + "/ctr",
		installHint: "scripts/setup.sh builds it"}
)

// forEachContainerd runs test once per containerd release, as subtests.
func forEachContainerd(t *testing.T, test func(t *testing.T, c *containerd)) {
	for _, rel := range []containerdRelease{containerd16, containerd2} {
		t.Run(rel.name, func(t *testing.T) {
			test(t, startContainerdRelease(t, rel, ""))
		})
	}
}

// shimBinDir returns a directory holding containerd-shim-coffer-v2:
// ../bin if `make build` put it there, else a fresh `go build`.
func shimBinDir(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs("../bin/containerd-shim-coffer-v2"); err == nil {
		if _, err := os.Stat(p); err == nil && os.Getenv("COFFER_SHIM_REBUILD") == "" {
			return filepath.Dir(p)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "containerd-shim-coffer-v2"), "../cmd/containerd-shim-coffer-v2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build containerd-shim-coffer-v2: %v\n%s", err, out)
	}
	return dir
}

// startContainerd runs Debian's containerd (1.6) for one test.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	return startContainerdRelease(t, containerd16, "")
}

// startContainerdRelease runs rel's containerd with its own root, state
// and socket, finding the Coffer shim through PATH. With cri "" the CRI
// plugin is disabled; otherwise cri is appended to the config (version 2
// format, which containerd 2.x migrates).
func startContainerdRelease(t *testing.T, rel containerdRelease, cri string) *containerd {
	t.Helper()
	for _, tool := range []string{rel.containerd, rel.ctr} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (%s): %v", tool, rel.installHint, err)
		}
	}
	bin := shimBinDir(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	disabled := `["io.containerd.grpc.v1.cri"]`
	if cri != "" {
		disabled = "[]"
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = %s
[grpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), disabled, sock) + cri
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &containerd{release: rel, dir: dir, sock: sock, log: &syncBuffer{}}
	c.cmd = exec.Command(rel.containerd, "--config", cfgPath)
	c.cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(func() {
		_ = c.cmd.Process.Signal(unix.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("containerd log:\n%s", c.log.String())
		}
		// Shims outlive containerd by design; a failed test can leave one
		// (and its VM, which dies with it) running: never past the test.
		for _, pid := range c.shims() {
			if n, err := strconv.Atoi(pid); err == nil {
				t.Logf("killing shim %d left running", n)
				_ = unix.Kill(n, unix.SIGKILL)
			}
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not come up: %v\n%s", err, c.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// ctr runs ctr against c.
func (c *containerd) ctr(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCmd(t, nil, stdin, c.release.ctr, append([]string{"--address", c.sock}, args...)...)
}

// importBusybox imports the busybox rootfs as an OCI image.
func (c *containerd) importBusybox(t *testing.T) {
	t.Helper()
	c.importImage(t, "default", busyboxImage, []string{"sh"})
}

// importImage imports the busybox rootfs as OCI image ref, with command
// cmd, into namespace ns.
func (c *containerd) importImage(t *testing.T, ns, ref string, cmd []string) {
	t.Helper()
	tarPath := filepath.Join(t.TempDir(), "image-oci.tar")
	if err := testimage.WriteOCIImage(busybox, ref, cmd, tarPath); err != nil {
		t.Fatalf("build the OCI image %s: %v", ref, err)
	}
	if r := c.ctr(t, "", "-n", ns, "images", "import", tarPath); r.code != 0 {
		t.Fatalf("ctr images import failed: %s", r.stderr)
	}
	if r := c.ctr(t, "", "-n", ns, "images", "ls", "-q"); !strings.Contains(r.stdout, ref) {
		t.Fatalf("image %s not listed after import: %q", ref, r.stdout)
	}
}

// shimPodsLeft lists pod dirs the shim left behind.
func shimPodsLeft() []string {
	var left []string
	nss, _ := os.ReadDir(filepath.Join(runtimeDir, "shim"))
	for _, ns := range nss {
		pods, _ := os.ReadDir(filepath.Join(runtimeDir, "shim", ns.Name()))
		for _, p := range pods {
			left = append(left, ns.Name()+"/"+p.Name())
		}
	}
	return left
}

func hostKernel(t *testing.T) string {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// TestContainerdRun: `ctr run --runtime io.containerd.coffer.v2 --rm` on
// Debian's containerd 1.6 (task API v2) and containerd 2 (task API v3)
// runs the command in a Coffer VM (its own kernel), streams its output
// and returns its exit code; nothing is left.
func TestContainerdRun(t *testing.T) { forEachContainerd(t, testContainerdRun) }

func testContainerdRun(t *testing.T, c *containerd) {
	c.importBusybox(t)
	r := c.ctr(t, "", "run", "--runtime", "io.containerd.coffer.v2", "--rm", busyboxImage, "c1",
		"sh", "-c", "echo hello; uname -r; echo oops >&2; exit 3")
	if r.code != 3 {
		t.Fatalf("exit code = %d, want 3 (the container's)\nstderr: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || strings.TrimSpace(lines[0]) != "hello" {
		t.Fatalf("stdout = %q, want hello and the guest kernel release", r.stdout)
	}
	if guestKernel := strings.TrimSpace(lines[1]); guestKernel == hostKernel(t) {
		t.Errorf("the container saw the host kernel %s: it did not run in a VM", guestKernel)
	}
	if !strings.Contains(r.stderr, "oops") {
		t.Errorf("stderr = %q, want the container's stderr", r.stderr)
	}
	if r := c.ctr(t, "", "containers", "ls", "-q"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("containers left after --rm: %q", r.stdout)
	}
	// stdin without a terminal: ctr pipes its own stdin, and its end
	// reaches the container (CloseIO), so cat exits.
	if r := c.ctr(t, "first\nsecond\n", "run", "--runtime", "io.containerd.coffer.v2", "--rm", busyboxImage, "c1in", "cat"); r.code != 0 || r.stdout != "first\nsecond\n" {
		t.Errorf("ctr run --rm cat with piped stdin: exit %d stdout %q stderr %q, want the input back", r.code, r.stdout, r.stderr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(shimPodsLeft()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := shimPodsLeft(); len(left) > 0 {
		t.Errorf("shim pod dirs left: %v", left)
	}
}

// TestContainerdTaskLifecycle: a detached task is listed with the VM's
// pid, runs execs (output, stdin, exit code), reports metrics from the
// guest, is killed and deleted, and its VM goes away. On containerd 1.6
// and 2.
func TestContainerdTaskLifecycle(t *testing.T) { forEachContainerd(t, testContainerdTaskLifecycle) }

func testContainerdTaskLifecycle(t *testing.T, c *containerd) {
	c.importBusybox(t)
	events := c.events(t)
	if r := c.ctr(t, "", "run", "-d", "--runtime", "io.containerd.coffer.v2", busyboxImage, "c2", "sleep", "1000"); r.code != 0 {
		t.Fatalf("detached run failed: %s", r.stderr)
	}
	ls := c.ctr(t, "", "task", "ls")
	if !strings.Contains(ls.stdout, "c2") || !strings.Contains(ls.stdout, "RUNNING") {
		t.Fatalf("task ls = %q, want c2 RUNNING", ls.stdout)
	}
	c.checkTaskAPI(t, "default", "c2")
	qemus := ourQEMUs()
	if len(qemus) != 1 || !strings.Contains(ls.stdout, qemus[0]) {
		t.Fatalf("task ls = %q, want the pid of the pod's qemu %v", ls.stdout, qemus)
	}
	// Pids: the task's processes run in the VM, whose pid stands for them.
	if r := c.ctr(t, "", "task", "ps", "c2"); r.code != 0 || !regexp.MustCompile(`(?m)^`+qemus[0]+`\b`).MatchString(r.stdout) {
		t.Errorf("task ps = exit %d %q, want the pod's qemu pid %s", r.code, r.stdout, qemus[0])
	}
	if r := c.ctr(t, "", "task", "exec", "--exec-id", "e1", "c2", "sh", "-c", "echo from-exec; exit 5"); r.code != 5 || strings.TrimSpace(r.stdout) != "from-exec" {
		t.Errorf("exec: exit %d stdout %q, want 5 and from-exec", r.code, r.stdout)
	}
	if r := c.ctr(t, "line one\nline two\n", "task", "exec", "--exec-id", "e2", "c2", "cat"); r.code != 0 || r.stdout != "line one\nline two\n" {
		t.Errorf("exec with stdin: exit %d stdout %q, want the input back", r.code, r.stdout)
	}
	if r := c.ctr(t, "", "task", "metrics", "c2"); r.code != 0 || !strings.Contains(r.stdout, "memory") {
		t.Errorf("task metrics: exit %d stdout %q, want the guest's cgroup metrics", r.code, r.stdout)
	}
	// Update (ctr has no command for it): new cgroup limits reach the
	// container's cgroup in the guest.
	c.updateMemoryLimit(t, "c2", 104857600)
	if r := c.ctr(t, "", "task", "metrics", "c2"); !strings.Contains(r.stdout, "104857600") {
		t.Errorf("task metrics after update = %q, want the memory limit 104857600", r.stdout)
	}
	// kill --all reaches every process of the container: a detached
	// exec ends with the init.
	if r := c.ctr(t, "", "task", "exec", "--detach", "--exec-id", "e3", "c2", "sleep", "1000"); r.code != 0 {
		t.Fatalf("detached exec: %s", r.stderr)
	}
	if r := c.ctr(t, "", "task", "kill", "--all", "-s", "SIGKILL", "c2"); r.code != 0 {
		t.Fatalf("task kill --all failed: %s", r.stderr)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ls := c.ctr(t, "", "task", "ls")
		if strings.Contains(ls.stdout, "STOPPED") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task not stopped after kill: %q", ls.stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := c.ctr(t, "", "task", "delete", "c2"); r.code != 0 {
		t.Fatalf("task delete failed: %s", r.stderr)
	}
	if r := c.ctr(t, "", "containers", "rm", "c2"); r.code != 0 {
		t.Fatalf("container rm failed: %s", r.stderr)
	}
	// Every task event, with the exits' statuses; the init's and e1's in
	// the order they happened.
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(events.String(), "/tasks/delete") })
	ev := events.String()
	var at []int
	for _, e := range []struct {
		topic, key string // key: the member naming the process, e.g. "exec_id":"e1"
		want       string
		ordered    bool
	}{
		{"/tasks/create", `"container_id":"c2"`, "", true},
		{"/tasks/start", `"container_id":"c2"`, "", true},
		{"/tasks/exec-added", `"exec_id":"e1"`, "", true},
		{"/tasks/exec-started", `"exec_id":"e1"`, "", true},
		{"/tasks/exit", `"id":"e1"`, `"exit_status":5`, true},
		{"/tasks/exec-started", `"exec_id":"e3"`, "", false},
		{"/tasks/exit", `"id":"e3"`, `"exit_status":137`, false},
		{"/tasks/exit", `"id":"c2"`, `"exit_status":137`, true},
		{"/tasks/delete", `"id":"c2"`, `"exit_status":137`, true},
	} {
		l := ""
		for _, line := range strings.Split(ev, "\n") {
			if strings.Contains(line, e.topic+" ") && strings.Contains(line, e.key) {
				l = line
				break
			}
		}
		if l == "" || !strings.Contains(l, e.want) {
			t.Errorf("event %s %s = %q, want one with %s", e.topic, e.key, l, e.want)
		} else if e.ordered {
			at = append(at, strings.Index(ev, l))
		}
	}
	if !sort.IntsAreSorted(at) {
		t.Errorf("task events out of order:\n%s", ev)
	}
	for len(ourQEMUs()) > 0 || len(shimPodsLeft()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after delete: qemu %v, pod dirs %v left", ourQEMUs(), shimPodsLeft())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestContainerdConfig: the runtime option ConfigPath (ctr's
// --runtime-config-path) and the allow-listed annotations size the VM;
// a bad config file fails the create with an error naming the key, and
// leaves nothing behind.
func TestContainerdConfig(t *testing.T) {
	c := startContainerd(t)
	c.importBusybox(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "pod.toml")
	if err := os.WriteFile(good, []byte("memory_mib = 384\nvcpus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := c.ctr(t, "", "run", "--runtime", "io.containerd.coffer.v2", "--runtime-config-path", good,
		"--annotation", "io.coffer.vm.vcpus=2", "--rm", busyboxImage, "cfg1",
		"sh", "-c", "nproc; grep MemTotal /proc/meminfo")
	if r.code != 0 {
		t.Fatalf("run with ConfigPath: exit %d\nstderr: %s", r.code, r.stderr)
	}
	f := strings.Fields(r.stdout)
	if len(f) < 3 || f[0] != "2" {
		t.Fatalf("stdout = %q, want nproc 2 (annotation) and MemTotal", r.stdout)
	}
	// The guest sees a little less than the VM's memory.
	if kb, _ := strconv.Atoi(f[2]); kb < 300<<10 || kb > 384<<10 {
		t.Errorf("MemTotal = %s kB, want about 384 MiB (memory_mib from ConfigPath)", f[2])
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("memory_mib = 512\nmemroy = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = c.ctr(t, "", "run", "--runtime", "io.containerd.coffer.v2", "--runtime-config-path", bad, "--rm", busyboxImage, "cfg2", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "unknown keys memroy") || !strings.Contains(r.stderr, bad) {
		t.Errorf("run with a bad config: exit %d stderr %q, want a failure naming the file and the key", r.code, r.stderr)
	}
	r = c.ctr(t, "", "run", "--runtime", "io.containerd.coffer.v2", "--annotation", "io.coffer.vm.memory_mib=lots", "--rm", busyboxImage, "cfg3", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "io.coffer.vm.memory_mib") {
		t.Errorf("run with a bad annotation: exit %d stderr %q, want a failure naming the annotation", r.code, r.stderr)
	}
	// A create that fails half-way, in the guest after the VM booted,
	// leaves nothing behind either.
	r = c.ctr(t, "", "run", "--runtime", "io.containerd.coffer.v2", "--rm", busyboxImage, "cfg4", "no-such-command")
	if r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("run of a missing command: exit %d stderr %q, want a failure saying it is not found", r.code, r.stderr)
	}
	bundles := filepath.Join(c.dir, "state", "io.containerd.runtime.v2.task", "default")
	waitFor(t, 10*time.Second, func() bool {
		left, _ := os.ReadDir(bundles)
		return len(ourQEMUs()) == 0 && len(shimPodsLeft()) == 0 && len(c.shims()) == 0 && len(left) == 0
	})
}

// TestContainerdTTY: `ctr run -t` gives the container a terminal of the
// caller's size; keystrokes and the exit status pass through. On
// containerd 1.6 and 2.
func TestContainerdTTY(t *testing.T) { forEachContainerd(t, testContainerdTTY) }

func testContainerdTTY(t *testing.T, c *containerd) {
	c.importBusybox(t)
	master, slave := openPTY(t)
	defer master.Close()
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 30, Col: 90}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.release.ctr, "--address", c.sock, "run", "-t", "--rm", "--runtime", "io.containerd.coffer.v2", busyboxImage, "tty1", "sh")
	out, write := startOnPTY(t, cmd, master, slave)
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(out.String(), "# ") })
	write("tty; stty size; echo MA''RK\r")
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(out.String(), "MARK") })
	// A resize of ctr's terminal (SIGWINCH) reaches the container's
	// (containerd's ResizePty).
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 41, Col: 123}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool {
		write("stty size\r")
		time.Sleep(300 * time.Millisecond)
		return strings.Contains(out.String(), "41 123")
	})
	write("exit 4\r")
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	t.Logf("terminal transcript: %q", s)
	if code != 4 {
		t.Errorf("ctr run -t exit %d, want 4", code)
	}
	for _, want := range []string{"/dev/pts/0", "30 90"} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q", want)
		}
	}
	waitFor(t, 10*time.Second, func() bool { return len(ourQEMUs()) == 0 && len(shimPodsLeft()) == 0 })
}

// TestContainerdVMDeath: the pod's QEMU killed while `ctr run` waits:
// ctr exits non-zero within seconds, containerd no longer shows the task
// running, and the shim removes the VM's state.
func TestContainerdVMDeath(t *testing.T) {
	c := startContainerd(t)
	c.importBusybox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr syncBuffer
	cmd := exec.CommandContext(ctx, c.release.ctr, "--address", c.sock, "run", "--rm", "--runtime", "io.containerd.coffer.v2",
		busyboxImage, "dies", "sh", "-c", "echo up; sleep 1000")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(stdout.String(), "up") })
	qemus := ourQEMUs()
	if len(qemus) != 1 {
		t.Fatalf("qemu processes %v, want the pod's one", qemus)
	}
	if ls := c.ctr(t, "", "task", "ls"); !strings.Contains(ls.stdout, "dies") || !strings.Contains(ls.stdout, "RUNNING") {
		t.Fatalf("task ls = %q, want dies RUNNING", ls.stdout)
	}
	pid, _ := strconv.Atoi(qemus[0])
	killed := time.Now()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	took := time.Since(killed)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("ctr run exited %d %s after the VM was killed; stderr %q", code, took.Round(time.Millisecond), stderr.String())
	if code == 0 {
		t.Errorf("ctr run exit 0 after the VM died, want non-zero")
	}
	if took > 15*time.Second {
		t.Errorf("ctr run took %s to notice the VM's death, want seconds", took)
	}
	if ls := c.ctr(t, "", "task", "ls"); strings.Contains(ls.stdout, "RUNNING") {
		t.Errorf("task ls = %q after the VM died, want no running task", ls.stdout)
	}
	waitFor(t, 15*time.Second, func() bool {
		return len(ourQEMUs()) == 0 && len(shimPodsLeft()) == 0 && len(c.shims()) == 0
	})
}

// When the pod VM dies, every task of the pod ends and containerd learns
// it: the running init, a running exec, an exec that was added but not
// started, and (in a second pod) an init that was created but never
// started; each Wait returns 255 and nothing is left once they are deleted.
func TestContainerdVMDeathEveryTask(t *testing.T) {
	c := startContainerd(t)
	c.importBusybox(t)
	ctx, conn := c.api(t, 3*time.Minute)
	tasks := tasksapi.NewTasksClient(conn)
	type waited struct {
		id  string
		r   *tasksapi.WaitResponse
		err error
	}
	wch := make(chan waited, 4)
	wait := func(id, execID string) {
		go func() {
			r, err := tasks.Wait(ctx, &tasksapi.WaitRequest{ContainerID: id, ExecID: execID})
			wch <- waited{id + "/" + execID, r, err}
		}()
	}
	killQEMU := func() {
		t.Helper()
		qemus := ourQEMUs()
		if len(qemus) != 1 {
			t.Fatalf("qemu processes %v, want the pod's one", qemus)
		}
		pid, _ := strconv.Atoi(qemus[0])
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	collect := func(n int) {
		t.Helper()
		for range n {
			select {
			case w := <-wch:
				if w.err != nil || w.r.ExitStatus != 255 {
					t.Errorf("wait %s: %+v, %v; want exit status 255 (the VM died)", w.id, w.r, w.err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("a Wait did not return within 30 s of the VM's death")
			}
		}
	}

	// Pod 1: a running init, a running exec, an added exec.
	if r := c.ctr(t, "", "run", "-d", "--runtime", "io.containerd.coffer.v2", busyboxImage, "all", "sleep", "1000"); r.code != 0 {
		t.Fatalf("ctr run -d: %s", r.stderr)
	}
	t.Cleanup(func() { c.ctr(t, "", "containers", "rm", "all") })
	ectx, ecancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer ecancel()
	var eout syncBuffer
	execCmd := exec.CommandContext(ectx, c.release.ctr, "--address", c.sock, "task", "exec", "--exec-id", "e1", "all", "sh", "-c", "echo up; sleep 1000")
	execCmd.Stdout, execCmd.Stderr = &eout, &eout
	if err := execCmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(eout.String(), "up") })
	ps, _ := json.Marshal(&specs.Process{Args: []string{"true"}, Cwd: "/"})
	if _, err := tasks.Exec(ctx, &tasksapi.ExecProcessRequest{ContainerID: "all", ExecID: "e2",
		Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: ps}}); err != nil {
		t.Fatalf("add exec e2: %v", err)
	}
	wait("all", "")
	wait("all", "e2")
	time.Sleep(500 * time.Millisecond) // let the Waits reach the shim
	killQEMU()
	collect(2)
	if err := execCmd.Wait(); err == nil {
		t.Errorf("ctr task exec of the running exec exited 0 after the VM died; output %q", eout.String())
	}
	if ls := c.ctr(t, "", "task", "ls"); !regexp.MustCompile(`all\s+\d+\s+STOPPED`).MatchString(ls.stdout) {
		t.Errorf("task ls = %q after the VM died, want all STOPPED", ls.stdout)
	}
	if r := c.ctr(t, "", "task", "rm", "all"); r.code != 0 {
		t.Errorf("task rm after the VM died: %s", r.stderr)
	}

	// Pod 2: an init that was created, never started.
	if r := c.ctr(t, "", "containers", "create", "--runtime", "io.containerd.coffer.v2", busyboxImage, "created", "sleep", "1000"); r.code != 0 {
		t.Fatalf("container create: %s", r.stderr)
	}
	t.Cleanup(func() { c.ctr(t, "", "containers", "rm", "created") })
	mounts, err := snapshotsapi.NewSnapshotsClient(conn).Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: "overlayfs", Key: "created"})
	if err != nil {
		t.Fatalf("snapshot mounts: %v", err)
	}
	if _, err := tasks.Create(ctx, &tasksapi.CreateTaskRequest{ContainerID: "created", Rootfs: mounts.Mounts}); err != nil {
		t.Fatalf("create task: %v", err)
	}
	wait("created", "")
	time.Sleep(500 * time.Millisecond)
	killQEMU()
	collect(1)
	if ls := c.ctr(t, "", "task", "ls"); !regexp.MustCompile(`created\s+\d+\s+STOPPED`).MatchString(ls.stdout) {
		t.Errorf("task ls = %q after the VM died, want created STOPPED", ls.stdout)
	}
	if _, err := tasks.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: "created"}); err != nil {
		t.Errorf("delete: %v", err)
	}
	waitFor(t, 15*time.Second, func() bool {
		return len(ourQEMUs()) == 0 && len(shimPodsLeft()) == 0 && len(c.shims()) == 0
	})
}

// checkTaskAPI checks that containerd 2 talks task API v3 to the shim of
// task id: it records the version the shim announced in the bundle's
// bootstrap.json. containerd 1.6 keeps a bare address (task API v2).
func (c *containerd) checkTaskAPI(t *testing.T, ns, id string) {
	t.Helper()
	bundle := filepath.Join(c.dir, "state", "io.containerd.runtime.v2.task", ns, id)
	b, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json"))
	if c.release.name == containerd16.name {
		if err == nil {
			t.Errorf("containerd 1.6 wrote bootstrap.json %s", b)
		}
		return
	}
	if err != nil {
		t.Fatalf("containerd 2 wrote no bootstrap.json for %s: %v", id, err)
	}
	var params struct {
		Version  int    `json:"version"`
		Protocol string `json:"protocol"`
	}
	if err := json.Unmarshal(b, &params); err != nil || params.Version != 3 || params.Protocol != "ttrpc" {
		t.Errorf("bootstrap.json = %s (%v), want version 3 over ttrpc (task API v3)", b, err)
	}
}

// shims lists the pids of Coffer shims serving c.
func (c *containerd) shims() []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		s := string(b)
		if strings.Contains(s, "containerd-shim-coffer-v2") && strings.Contains(s, c.sock) {
			out = append(out, e.Name())
		}
	}
	return out
}

// ourMounts lists the host mounts below c's directories or the runtime
// dir: the only ones this test's containers can create.
func (c *containerd) ourMounts() []string {
	var out []string
	for _, l := range strings.Split(mounts(), "\n") {
		if strings.Contains(l, c.dir) || strings.Contains(l, runtimeDir) {
			out = append(out, l)
		}
	}
	return out
}

// shimSocket is the socket path the shim of task id in namespace ns
// serves on (containerd's shim package names it after a hash of
// containerd's address, the namespace and the id).
func (c *containerd) shimSocket(ns, id string) string {
	sum := sha256.Sum256([]byte(filepath.Join(c.sock, ns, id)))
	return filepath.Join("/run/containerd/s", hex.EncodeToString(sum[:]))
}

// bundlesLeft lists the task bundles containerd keeps in namespace ns.
func (c *containerd) bundlesLeft(ns string) []string {
	entries, _ := os.ReadDir(filepath.Join(c.dir, "state", "io.containerd.runtime.v2.task", ns))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// leakCounts is what a create/delete cycle must not leave behind.
type leakCounts struct {
	qemu, shims, podDirs int
	mounts               []string
}

func (c *containerd) leakCounts() leakCounts {
	return leakCounts{qemu: len(ourQEMUs()), shims: len(c.shims()), podDirs: len(shimPodsLeft()), mounts: c.ourMounts()}
}

func (l leakCounts) equal(o leakCounts) bool {
	return l.qemu == o.qemu && l.shims == o.shims && l.podDirs == o.podDirs && strings.Join(l.mounts, "\n") == strings.Join(o.mounts, "\n")
}

// TestContainerdCreateDeleteNoLeaks: N create/delete cycles (`ctr run
// --rm ... true`) leave no qemu, shim, mount, pod dir, task bundle or shim
// socket behind. N is 100 (each cycle boots a VM: about 5 minutes), or
// 10 with COFFER_QUICK_TESTS=1 for a quicker local run.
func TestContainerdCreateDeleteNoLeaks(t *testing.T) {
	n := 100
	if os.Getenv("COFFER_QUICK_TESTS") == "1" {
		n = 10
	}
	c := startContainerd(t)
	c.importBusybox(t)
	before := c.leakCounts()
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("leak%d", i)
		if r := c.ctr(t, "", "run", "--rm", "--runtime", "io.containerd.coffer.v2", busyboxImage, id, "true"); r.code != 0 {
			t.Fatalf("cycle %d: exit %d\nstderr: %s", i, r.code, r.stderr)
		}
	}
	t.Logf("%d create/delete cycles in %s (%s each)", n, time.Since(start).Round(time.Millisecond), (time.Since(start) / time.Duration(n)).Round(time.Millisecond))
	deadline := time.Now().Add(15 * time.Second)
	for {
		after := c.leakCounts()
		if after.equal(before) {
			t.Logf("after %d cycles: qemu %d, shims %d, mounts %d, pod dirs %d (as before)", n, after.qemu, after.shims, len(after.mounts), after.podDirs)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d cycles: %+v, before %+v", n, after, before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := c.ctr(t, "", "containers", "ls", "-q"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("containers left: %q", r.stdout)
	}
	if left := c.bundlesLeft("default"); len(left) > 0 {
		t.Errorf("task bundles left: %v", left)
	}
	for i := range n {
		if sock := c.shimSocket("default", fmt.Sprintf("leak%d", i)); fileExists(sock) {
			t.Errorf("shim socket of cycle %d left: %s", i, sock)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestContainerdPodSharesVM: a container whose CRI annotations name a
// running pod sandbox joins that pod's VM (same guest boot_id, one qemu,
// one shim) instead of booting its own; deleting both leaves nothing.
func TestContainerdPodSharesVM(t *testing.T) {
	c := startContainerd(t)
	c.importBusybox(t)
	// On failure, end the pod while containerd still runs (cleanups run
	// last-in first-out), so no shim or qemu outlives the test.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, id := range []string{"c3", "c2", "pod1"} {
			c.ctr(t, "", "task", "delete", "-f", id)
			c.ctr(t, "", "containers", "rm", id)
		}
	})
	qemuBefore, shimsBefore := len(ourQEMUs()), len(c.shims())
	const bootID = "/proc/sys/kernel/random/boot_id"
	if r := c.ctr(t, "", "run", "-d", "--runtime", "io.containerd.coffer.v2",
		"--annotation", "io.kubernetes.cri.container-type=sandbox", "--annotation", "io.kubernetes.cri.sandbox-id=pod1",
		busyboxImage, "pod1", "sleep", "1000"); r.code != 0 {
		t.Fatalf("run the pod sandbox: exit %d\nstderr: %s", r.code, r.stderr)
	}
	r := c.ctr(t, "", "task", "exec", "--exec-id", "b1", "pod1", "cat", bootID)
	if r.code != 0 {
		t.Fatalf("exec in the sandbox: exit %d\nstderr: %s", r.code, r.stderr)
	}
	sandboxBoot := strings.TrimSpace(r.stdout)
	hostBoot, err := os.ReadFile(bootID)
	if err != nil {
		t.Fatal(err)
	}
	if sandboxBoot == "" || sandboxBoot == strings.TrimSpace(string(hostBoot)) {
		t.Fatalf("sandbox boot_id = %q, want a guest's (host %q)", sandboxBoot, strings.TrimSpace(string(hostBoot)))
	}
	r = c.ctr(t, "", "run", "--rm", "--runtime", "io.containerd.coffer.v2",
		"--annotation", "io.kubernetes.cri.container-type=container", "--annotation", "io.kubernetes.cri.sandbox-id=pod1",
		busyboxImage, "c2", "sh", "-c", "cat "+bootID+"; ls /")
	if r.code != 0 {
		t.Fatalf("run a container in the pod: exit %d\nstderr: %s", r.code, r.stderr)
	}
	if lines := strings.SplitN(r.stdout, "\n", 2); strings.TrimSpace(lines[0]) != sandboxBoot {
		t.Errorf("the joining container's boot_id = %q, want the sandbox's %q (same VM)", lines[0], sandboxBoot)
	} else if !strings.Contains(lines[1], "bin") {
		t.Errorf("the joining container's / = %q, want its busybox rootfs", lines[1])
	}
	if n := len(ourQEMUs()) - qemuBefore; n != 1 {
		t.Errorf("%d qemu processes for the pod, want 1", n)
	}
	if n := len(c.shims()) - shimsBefore; n != 1 {
		t.Errorf("%d shims for the pod, want 1", n)
	}
	// The sandbox survived the other container's delete.
	if r := c.ctr(t, "", "task", "exec", "--exec-id", "b2", "pod1", "cat", bootID); r.code != 0 || strings.TrimSpace(r.stdout) != sandboxBoot {
		t.Errorf("exec in the sandbox after c2 left: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// A second joining container gets a fresh disk in the same VM.
	if r := c.ctr(t, "", "run", "--rm", "--runtime", "io.containerd.coffer.v2",
		"--annotation", "io.kubernetes.cri.container-type=container", "--annotation", "io.kubernetes.cri.sandbox-id=pod1",
		busyboxImage, "c3", "cat", bootID); r.code != 0 || strings.TrimSpace(r.stdout) != sandboxBoot {
		t.Errorf("second joining container: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// Each joining container's disk was hot-plugged and unplugged cleanly.
	if log := c.log.String(); strings.Count(log, "container joined the pod") != 2 || strings.Contains(log, "remove the rootfs disk") {
		t.Errorf("shim log: want 2 containers joining and no disk removal warnings:\n%s", log)
	}
	if r := c.ctr(t, "", "task", "kill", "-s", "SIGKILL", "pod1"); r.code != 0 {
		t.Fatalf("task kill failed: %s", r.stderr)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(c.ctr(t, "", "task", "ls").stdout, "STOPPED") {
		if time.Now().After(deadline) {
			t.Fatal("pod1 not stopped after kill")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := c.ctr(t, "", "task", "delete", "pod1"); r.code != 0 {
		t.Fatalf("task delete failed: %s", r.stderr)
	}
	if r := c.ctr(t, "", "containers", "rm", "pod1"); r.code != 0 {
		t.Fatalf("container rm failed: %s", r.stderr)
	}
	for len(ourQEMUs()) > qemuBefore || len(c.shims()) > shimsBefore || len(shimPodsLeft()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after delete: qemu %v, shims %d (before %d), pod dirs %v left", ourQEMUs(), len(c.shims()), shimsBefore, shimPodsLeft())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := c.ctr(t, "", "containers", "ls", "-q"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("containers left: %q", r.stdout)
	}
}

// TestContainerdKillCreatedTask: a task killed before it was started
// (containerd's client can do this; ctr and CRI do not) exits, its Wait
// returns 137 and it can be deleted, leaving nothing behind.
func TestContainerdKillCreatedTask(t *testing.T) {
	c := startContainerd(t)
	c.importBusybox(t)
	if r := c.ctr(t, "", "containers", "create", "--runtime", "io.containerd.coffer.v2", busyboxImage, "k1", "sleep", "1000"); r.code != 0 {
		t.Fatalf("container create: %s", r.stderr)
	}
	t.Cleanup(func() { c.ctr(t, "", "containers", "rm", "k1") })
	ctx, conn := c.api(t, 2*time.Minute)
	mounts, err := snapshotsapi.NewSnapshotsClient(conn).Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: "overlayfs", Key: "k1"})
	if err != nil {
		t.Fatalf("snapshot mounts: %v", err)
	}
	tasks := tasksapi.NewTasksClient(conn)
	if _, err := tasks.Create(ctx, &tasksapi.CreateTaskRequest{ContainerID: "k1", Rootfs: mounts.Mounts}); err != nil {
		t.Fatalf("create task: %v", err)
	}
	type waited struct {
		r   *tasksapi.WaitResponse
		err error
	}
	wch := make(chan waited, 1)
	go func() {
		r, err := tasks.Wait(ctx, &tasksapi.WaitRequest{ContainerID: "k1"})
		wch <- waited{r, err}
	}()
	time.Sleep(500 * time.Millisecond) // let Wait reach the shim
	if _, err := tasks.Kill(ctx, &tasksapi.KillRequest{ContainerID: "k1", Signal: uint32(unix.SIGKILL)}); err != nil {
		t.Fatalf("kill the created task: %v", err)
	}
	select {
	case w := <-wch:
		if w.err != nil || w.r.ExitStatus != 137 {
			t.Fatalf("wait: %+v, %v; want exit status 137", w.r, w.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return after the created task was killed")
	}
	if _, err := tasks.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: "k1"}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(ourQEMUs()) > 0 || len(shimPodsLeft()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after delete: qemu %v, pod dirs %v left", ourQEMUs(), shimPodsLeft())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// api connects to c's gRPC API (ctr has no command for some calls): a
// context in the default namespace, ending after d or with the test, and
// the connection, closed with the test.
func (c *containerd) api(t *testing.T, d time.Duration) (context.Context, *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("connect to containerd: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return metadata.AppendToOutgoingContext(ctx, "containerd-namespace", "default"), conn
}

// updateMemoryLimit sets task id's memory limit through containerd's
// Tasks.Update API (ctr has no command for it).
func (c *containerd) updateMemoryLimit(t *testing.T, id string, limit int64) {
	t.Helper()
	ctx, conn := c.api(t, time.Minute)
	res, _ := json.Marshal(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
	_, err := tasksapi.NewTasksClient(conn).Update(ctx, &tasksapi.UpdateTaskRequest{ContainerID: id,
		Resources: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: res}})
	if err != nil {
		t.Errorf("update task %s: %v", id, err)
	}
}

// events collects `ctr events` output of c while a test runs.
func (c *containerd) events(t *testing.T) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	cmd := exec.CommandContext(ctx, c.release.ctr, "--address", c.sock, "events")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	return out
}

// eventLine returns the first line of events about topic and id.
func eventLine(events, topic, id string) string {
	for _, l := range strings.Split(events, "\n") {
		if strings.Contains(l, topic) && strings.Contains(l, `"`+id+`"`) {
			return l
		}
	}
	return ""
}

// parseExitedAt reads exited_at from a `ctr events` line: an RFC 3339
// string (ctr 1.6) or {"seconds":…,"nanos":…} (ctr 2).
func parseExitedAt(line string) (time.Time, bool) {
	if m := regexp.MustCompile(`"exited_at":"([^"]+)"`).FindStringSubmatch(line); m != nil {
		t, err := time.Parse(time.RFC3339Nano, m[1])
		return t, err == nil
	}
	if m := regexp.MustCompile(`"exited_at":\{"seconds":(\d+)(?:,"nanos":(\d+))?\}`).FindStringSubmatch(line); m != nil {
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		nsec, _ := strconv.ParseInt(m[2], 10, 64)
		return time.Unix(sec, nsec), true
	}
	return time.Time{}, false
}

// TestContainerdOOMAndExitTime: a container that runs out of its memory
// limit exits 137 and containerd gets TaskOOM before TaskExit; a task's
// exit time (TaskExit's exited_at) is the exit's, on the host's clock. On
// containerd 1.6 and 2.
func TestContainerdOOMAndExitTime(t *testing.T) { forEachContainerd(t, testContainerdOOMAndExitTime) }

func testContainerdOOMAndExitTime(t *testing.T, c *containerd) {
	c.importBusybox(t)
	events := c.events(t)
	r := c.ctr(t, "", "run", "--rm", "--runtime", "io.containerd.coffer.v2", "--memory-limit", "33554432", busyboxImage, "oom1",
		"sh", "-c", "echo go; tail /dev/zero")
	if r.code != 137 || strings.TrimSpace(r.stdout) != "go" {
		t.Errorf("out of memory: exit %d stdout %q, want 137 after go", r.code, r.stdout)
	}
	// The container sleeps 2 s after starting: its exit must fall in the
	// host's window [start+2s, return of ctr run].
	before := time.Now()
	r = c.ctr(t, "", "run", "--rm", "--runtime", "io.containerd.coffer.v2", busyboxImage, "t1", "sleep", "2")
	after := time.Now()
	if r.code != 0 {
		t.Fatalf("run t1: exit %d stderr %q", r.code, r.stderr)
	}
	var exitLine string
	waitFor(t, 10*time.Second, func() bool {
		exitLine = eventLine(events.String(), "/tasks/exit", "t1")
		return eventLine(events.String(), "/tasks/oom", "oom1") != "" && exitLine != ""
	})
	ev := events.String()
	if oom, exit := strings.Index(ev, eventLine(ev, "/tasks/oom", "oom1")), strings.Index(ev, eventLine(ev, "/tasks/exit", "oom1")); exit < oom {
		t.Errorf("TaskExit of oom1 came before its TaskOOM:\n%s", ev)
	}
	exited, ok := parseExitedAt(exitLine)
	if !ok {
		t.Fatalf("no exited_at in the TaskExit event %q", exitLine)
	}
	t.Logf("t1: ctr run from %s to %s, exited_at %s", before.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano), exited.Format(time.RFC3339Nano))
	// containerd stamps the event when the shim publishes it, after the exit.
	if f := strings.Fields(exitLine); len(f) > 4 {
		if published, err := time.Parse("2006-01-02 15:04:05.999999999 -0700 MST", strings.Join(f[:4], " ")); err == nil && exited.After(published) {
			t.Errorf("exited_at %s is after containerd received the exit (%s): not on the host's clock", exited.Format(time.RFC3339Nano), published.Format(time.RFC3339Nano))
		}
	}
	if exited.Before(before.Add(2*time.Second)) || exited.After(after) {
		t.Errorf("exited_at %s is outside the host's window [%s, %s]", exited.Format(time.RFC3339Nano),
			before.Add(2*time.Second).Format(time.RFC3339Nano), after.Format(time.RFC3339Nano))
	}
}

// TestContainerdShimKilled: a pod whose sandbox task was deleted while a
// joined container still runs in its VM, then its shim SIGKILLed: the
// cleanup path (`containerd-shim-coffer-v2 delete` for the joined
// container) finds the pod through its record, hot-plugged disk
// included, and removes the VM and all state.
func TestContainerdShimKilled(t *testing.T) {
	c := startContainerd(t)
	c.importBusybox(t)
	t.Cleanup(func() {
		for _, id := range []string{"c2", "pod1"} {
			c.ctr(t, "", "task", "delete", "-f", id)
			c.ctr(t, "", "containers", "rm", id)
		}
	})
	qemuBefore, shimsBefore, mountsBefore := len(ourQEMUs()), len(c.shims()), c.ourMounts()
	for _, ct := range [][2]string{{"pod1", "sandbox"}, {"c2", "container"}} {
		if r := c.ctr(t, "", "run", "-d", "--runtime", "io.containerd.coffer.v2",
			"--annotation", "io.kubernetes.cri.container-type="+ct[1], "--annotation", "io.kubernetes.cri.sandbox-id=pod1",
			busyboxImage, ct[0], "sleep", "1000"); r.code != 0 {
			t.Fatalf("run %s: exit %d\nstderr: %s", ct[0], r.code, r.stderr)
		}
	}
	rec, err := os.ReadFile(filepath.Join(runtimeDir, "shim", "default", "pod1", "shim.json"))
	if err != nil || !strings.Contains(string(rec), `"container": "c2"`) {
		t.Fatalf("pod record %s (%v): want c2's hot-plugged disk listed", rec, err)
	}
	// The sandbox task goes; the VM stays for c2.
	c.ctr(t, "", "task", "kill", "-s", "SIGKILL", "pod1")
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(c.ctr(t, "", "task", "ls").stdout, "STOPPED") })
	if r := c.ctr(t, "", "task", "delete", "pod1"); r.code != 0 {
		t.Fatalf("task delete pod1: %s", r.stderr)
	}
	if n := len(ourQEMUs()) - qemuBefore; n != 1 {
		t.Fatalf("%d qemu after the sandbox task left, want the pod's VM still running for c2", n)
	}
	shims := c.shims()
	if len(shims) != shimsBefore+1 {
		t.Fatalf("shims %v, want the pod's one", shims)
	}
	pid, _ := strconv.Atoi(shims[len(shims)-1])
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool {
		return len(ourQEMUs()) == qemuBefore && len(shimPodsLeft()) == 0 && len(c.shims()) == shimsBefore
	})
	waitFor(t, 30*time.Second, func() bool { return !strings.Contains(c.ctr(t, "", "task", "ls").stdout, "RUNNING") })
	if m := c.ourMounts(); strings.Join(m, "\n") != strings.Join(mountsBefore, "\n") {
		t.Errorf("mounts after the cleanup %q, before %q", m, mountsBefore)
	}
}

// TestContainerdPauseResume: `ctr task pause` freezes the container's
// processes (its CPU time stops growing, exec is refused, the task is
// PAUSED, TaskPaused is published), `ctr task resume` thaws them; on
// containerd 1.6 and 2.
func TestContainerdPauseResume(t *testing.T) { forEachContainerd(t, testContainerdPauseResume) }

func testContainerdPauseResume(t *testing.T, c *containerd) {
	c.importBusybox(t)
	events := c.events(t)
	if r := c.ctr(t, "", "run", "-d", "--runtime", "io.containerd.coffer.v2", busyboxImage, "p1", "sh", "-c", "while :; do :; done"); r.code != 0 {
		t.Fatalf("run -d: exit %d %s", r.code, r.stderr)
	}
	t.Cleanup(func() {
		c.ctr(t, "", "task", "resume", "p1")
		c.ctr(t, "", "task", "kill", "-s", "KILL", "p1")
		waitFor(t, 30*time.Second, func() bool { return c.ctr(t, "", "task", "delete", "p1").code == 0 })
		c.ctr(t, "", "containers", "delete", "p1")
	})
	cpu := func() uint64 {
		t.Helper()
		r := c.ctr(t, "", "task", "metrics", "--format", "json", "p1")
		var m struct {
			CPU struct {
				UsageUsec uint64 `json:"usage_usec"`
			} `json:"cpu"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &m) != nil {
			t.Fatalf("ctr task metrics: exit %d %q %s", r.code, r.stdout, r.stderr)
		}
		return m.CPU.UsageUsec
	}
	status := func() string {
		r := c.ctr(t, "", "task", "ls")
		for _, l := range strings.Split(r.stdout, "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "p1" {
				return f[2]
			}
		}
		return ""
	}
	waitFor(t, 30*time.Second, func() bool { return cpu() > 0 })
	if r := c.ctr(t, "", "task", "pause", "p1"); r.code != 0 {
		t.Fatalf("pause: exit %d %s", r.code, r.stderr)
	}
	if st := status(); st != "PAUSED" {
		t.Fatalf("status after pause = %q, want PAUSED", st)
	}
	before := cpu()
	time.Sleep(time.Second)
	if after := cpu(); after != before {
		t.Errorf("a paused container used CPU: %d -> %d µs", before, after)
	}
	if r := c.ctr(t, "", "task", "exec", "--exec-id", "e1", "p1", "true"); r.code == 0 || !strings.Contains(r.stderr, "paused") {
		t.Errorf("exec into a paused container: exit %d %q, want a refusal", r.code, r.stderr)
	}
	if r := c.ctr(t, "", "task", "pause", "p1"); r.code == 0 {
		t.Errorf("pausing a paused container succeeded")
	}
	if r := c.ctr(t, "", "task", "resume", "p1"); r.code != 0 {
		t.Fatalf("resume: exit %d %s", r.code, r.stderr)
	}
	if st := status(); st != "RUNNING" {
		t.Fatalf("status after resume = %q, want RUNNING", st)
	}
	resumed := cpu()
	waitFor(t, 10*time.Second, func() bool { return cpu() > resumed })
	waitFor(t, 10*time.Second, func() bool {
		ev := events.String()
		return eventLine(ev, "/tasks/paused", "p1") != "" && eventLine(ev, "/tasks/resumed", "p1") != ""
	})
}

// TestContainerdJoinPlainPodRefused: a plain `ctr run` pod gets no hot-plug
// slots, so a container that names it as its CRI sandbox is refused with
// an error that says why, and the pod runs on.
func TestContainerdJoinPlainPodRefused(t *testing.T) {
	c := startContainerd(t)
	c.importBusybox(t)
	if r := c.ctr(t, "", "run", "-d", "--runtime", "io.containerd.coffer.v2", busyboxImage, "solo", "sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: exit %d %s", r.code, r.stderr)
	}
	t.Cleanup(func() {
		c.ctr(t, "", "task", "kill", "-s", "KILL", "solo")
		waitFor(t, 30*time.Second, func() bool { return c.ctr(t, "", "task", "delete", "solo").code == 0 })
		c.ctr(t, "", "containers", "rm", "solo")
	})
	r := c.ctr(t, "", "run", "--rm", "--runtime", "io.containerd.coffer.v2",
		"--annotation", "io.kubernetes.cri.container-type=container", "--annotation", "io.kubernetes.cri.sandbox-id=solo",
		busyboxImage, "joiner", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "was not a CRI pod sandbox") {
		t.Fatalf("joining a plain pod: exit %d %q, want a refusal naming the reason", r.code, r.stderr)
	}
	c.ctr(t, "", "containers", "rm", "joiner")
	if r := c.ctr(t, "", "task", "exec", "--exec-id", "e1", "solo", "true"); r.code != 0 {
		t.Fatalf("the pod did not survive the refused join: exit %d %s", r.code, r.stderr)
	}
}

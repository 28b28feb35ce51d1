package sandbox

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// liveOwner returns the owner fields of this (running) process.
func liveOwner(t *testing.T) (int, uint64) {
	t.Helper()
	start := ProcessStart(os.Getpid())
	if start == 0 {
		t.Fatal("ProcessStart of the test process is 0")
	}
	return os.Getpid(), start
}

func writeStateT(t *testing.T, dir string, st *State) {
	t.Helper()
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
}

func TestProcessStart(t *testing.T) {
	self := ProcessStart(os.Getpid())
	if self == 0 {
		t.Fatal("ProcessStart(self) = 0")
	}
	if again := ProcessStart(os.Getpid()); again != self {
		t.Fatalf("ProcessStart(self) changed: %d then %d", self, again)
	}
	for _, pid := range []int{0, -1, 1 << 30} {
		if got := ProcessStart(pid); got != 0 {
			t.Errorf("ProcessStart(%d) = %d, want 0", pid, got)
		}
	}
}

func TestProcessStartOddCommandName(t *testing.T) {
	// The command name in /proc/PID/stat can hold spaces and ")": a child
	// whose name is "x) 1 2 3 (y" must still give its real start time.
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary: ", err)
	}
	odd := filepath.Join(dir, "x) 1 2 3 (y")
	if err := os.Symlink(sleep, odd); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(stat), "(x) 1 2 3 (y)") {
		t.Skipf("the kernel did not keep the odd command name: %s", stat)
	}
	got := ProcessStart(cmd.Process.Pid)
	self := ProcessStart(os.Getpid())
	// Clock ticks (100/s): the child started after us, within minutes.
	if got < self || got > self+100*600 {
		t.Fatalf("ProcessStart(child) = %d, self started at %d: misparsed /proc/PID/stat %q", got, self, stat)
	}
}

func TestOwnerAliveAndEffectiveStatus(t *testing.T) {
	pid, start := liveOwner(t)
	tests := []struct {
		st     State
		alive  bool
		status string
	}{
		{State{Status: StatusRunning, OwnerPID: pid, OwnerStart: start}, true, StatusRunning},
		{State{Status: StatusStarting, OwnerPID: pid, OwnerStart: start}, true, StatusStarting},
		// Same pid, other start time: the pid was reused.
		{State{Status: StatusRunning, OwnerPID: pid, OwnerStart: start + 1}, false, StatusDead},
		{State{Status: StatusRunning, OwnerPID: 1 << 30, OwnerStart: 5}, false, StatusDead},
		{State{Status: StatusStarting}, false, StatusDead},
		{State{Status: StatusRunning, OwnerPID: -1}, false, StatusDead},
		// An exit was recorded: the owner being gone is normal.
		{State{Status: StatusExited, OwnerPID: 1 << 30, OwnerStart: 5}, false, StatusExited},
		{State{Status: StatusExited, OwnerPID: pid, OwnerStart: start}, true, StatusExited},
	}
	for _, tt := range tests {
		if got := tt.st.OwnerAlive(); got != tt.alive {
			t.Errorf("%+v: OwnerAlive = %v, want %v", tt.st, got, tt.alive)
		}
		if got := tt.st.EffectiveStatus(); got != tt.status {
			t.Errorf("%+v: EffectiveStatus = %q, want %q", tt.st, got, tt.status)
		}
	}
}

// TestOwnerAliveUnknownStart: a state with owner_start 0 (ProcessStart
// failed when the pod was created, or an older/hand-written state.json)
// counts as alive whenever the owner pid does NOT exist, because
// ProcessStart returns 0 for a missing process.
func TestOwnerAliveUnknownStart(t *testing.T) {
	st := State{Status: StatusRunning, OwnerPID: 1 << 30}
	if st.OwnerAlive() || st.EffectiveStatus() != StatusDead {
		t.Fatalf("owner pid %d does not exist, yet OwnerAlive = %v, status %s", st.OwnerPID, st.OwnerAlive(), st.EffectiveStatus())
	}
}

func TestWriteReadState(t *testing.T) {
	dir := t.TempDir()
	exit := 3
	st := &State{
		Name: "web", ID: "web", Status: StatusRunning, Created: time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC),
		Command: []string{"sh", "-c", "echo hi"}, Rootfs: "/srv/rootfs", OwnerPID: 42, OwnerStart: 4242,
		QEMUPID: 43, Accel: "tcg", ExitStatus: &exit, Detached: true, Error: "e",
		Request: json.RawMessage(`{"a":1}`),
	}
	writeStateT(t, dir, st)
	got, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The raw request is stored re-indented: compare it as JSON.
	var req map[string]int
	if err := json.Unmarshal(got.Request, &req); err != nil || req["a"] != 1 {
		t.Fatalf("request = %s, %v", got.Request, err)
	}
	got.Request = st.Request
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("ReadState = %+v\nwant %+v", got, st)
	}
	// Overwrite: the new state replaces the old one, no temp file is left.
	st.Status, st.ExitStatus, st.Request = StatusExited, nil, nil
	writeStateT(t, dir, st)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "state.json" {
		t.Fatalf("pod dir holds %v, want only state.json", entries)
	}
	fi, err := os.Stat(filepath.Join(dir, "state.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state.json mode = %v, %v; want 0600", fi.Mode(), err)
	}
	got, err = ReadState(dir)
	if err != nil || got.Status != StatusExited || got.ExitStatus != nil || got.Request != nil {
		t.Fatalf("ReadState after overwrite = %+v, %v", got, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	for _, omitted := range []string{"exit_status", "request"} {
		if strings.Contains(string(b), omitted) {
			t.Errorf("state.json has %q although it is empty: %s", omitted, b)
		}
	}
}

func TestWriteStateErrors(t *testing.T) {
	err := WriteState(filepath.Join(t.TempDir(), "missing"), &State{})
	if err == nil || !strings.Contains(err.Error(), "write pod state") {
		t.Fatalf("WriteState into a missing dir = %v", err)
	}
	// Invalid raw JSON cannot be marshalled; nothing is written.
	dir := t.TempDir()
	if err := WriteState(dir, &State{Request: json.RawMessage("{")}); err == nil {
		t.Fatal("WriteState with invalid raw JSON: want an error")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files left after a failed WriteState: %v", entries)
	}
}

func TestReadStateErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadState(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadState without state.json = %v, want ErrNotExist", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{corrupt"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ReadState(dir)
	if err == nil || !strings.Contains(err.Error(), "corrupt pod state "+dir) {
		t.Fatalf("ReadState of corrupt JSON = %v", err)
	}
}

func TestCreatePodDir(t *testing.T) {
	rt := t.TempDir()
	dir, err := CreatePodDir(rt, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(rt, "pods", "p1") || dir != PodDir(rt, "p1") {
		t.Fatalf("dir = %q", dir)
	}
	for _, d := range []string{filepath.Join(rt, "pods"), dir} {
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v, %v; want a 0700 directory", d, fi, err)
		}
	}
	if got := ProxySocket(dir); got != filepath.Join(dir, "agent.sock") {
		t.Fatalf("ProxySocket = %q", got)
	}
}

func TestCreatePodDirRefusesLivePod(t *testing.T) {
	rt := t.TempDir()
	dir, err := CreatePodDir(rt, "web")
	if err != nil {
		t.Fatal(err)
	}
	pid, start := liveOwner(t)
	writeStateT(t, dir, &State{Name: "web", Status: StatusRunning, OwnerPID: pid, OwnerStart: start})
	marker := filepath.Join(dir, "marker")
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = CreatePodDir(rt, "web")
	if err == nil || !strings.Contains(err.Error(), `a pod named "web" already exists (status running)`) ||
		!strings.Contains(err.Error(), "coffer rm web") {
		t.Fatalf("CreatePodDir over a live pod = %v", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the live pod's dir was touched: %v", err)
	}
}

func TestCreatePodDirRefusesExitedPod(t *testing.T) {
	rt := t.TempDir()
	dir, err := CreatePodDir(rt, "job")
	if err != nil {
		t.Fatal(err)
	}
	exit := 0
	// The owner is gone, but the exit was recorded: the user removes it.
	writeStateT(t, dir, &State{Name: "job", Status: StatusExited, OwnerPID: 1 << 30, OwnerStart: 1, ExitStatus: &exit})
	_, err = CreatePodDir(rt, "job")
	if err == nil || !strings.Contains(err.Error(), `a stopped pod named "job" exists`) {
		t.Fatalf("CreatePodDir over an exited pod = %v", err)
	}
	if _, err := ReadState(dir); err != nil {
		t.Fatalf("the exited pod's state was removed: %v", err)
	}
}

func TestCreatePodDirReplacesDeadPod(t *testing.T) {
	pid, start := liveOwner(t)
	for name, st := range map[string]*State{
		"gone":      {Status: StatusRunning, OwnerPID: 1 << 30, OwnerStart: 7},
		"reused":    {Status: StatusRunning, OwnerPID: pid, OwnerStart: start + 1},
		"no-owner":  {Status: StatusStarting},
		"corrupt":   nil, // state.json is garbage
		"no-state":  nil, // creator died before writing state
		"qemu-gone": {Status: StatusRunning, OwnerPID: 1 << 30, OwnerStart: 7, QEMUPID: 1 << 30},
	} {
		t.Run(name, func(t *testing.T) {
			rt := t.TempDir()
			dir, err := CreatePodDir(rt, name)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case st != nil:
				writeStateT(t, dir, st)
			case name == "corrupt":
				if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(filepath.Join(dir, "vm", "sub"), 0o700); err != nil {
				t.Fatal(err)
			}
			// Left alone long enough to count as stale.
			old := time.Now().Add(-3 * time.Minute)
			if err := os.Chtimes(dir, old, old); err != nil {
				t.Fatal(err)
			}
			again, err := CreatePodDir(rt, name)
			if err != nil || again != dir {
				t.Fatalf("CreatePodDir over a dead pod = %q, %v", again, err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) != 0 {
				t.Fatalf("replaced pod dir holds %v, %v; want it empty", entries, err)
			}
		})
	}
}

func TestCreatePodDirErrors(t *testing.T) {
	rt := t.TempDir()
	// "pods" is a file: the runtime dir cannot be created.
	if err := os.WriteFile(filepath.Join(rt, "pods"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CreatePodDir(rt, "p"); err == nil || !strings.Contains(err.Error(), "create runtime dir") {
		t.Fatalf("CreatePodDir with pods as a file = %v", err)
	}
}

func TestListPods(t *testing.T) {
	rt := t.TempDir()
	if pods, err := ListPods(rt); pods != nil || err != nil {
		t.Fatalf("ListPods without pods dir = %v, %v", pods, err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, name := range []string{"c", "a", "b"} {
		dir, err := CreatePodDir(rt, name)
		if err != nil {
			t.Fatal(err)
		}
		// Created order: b, c, a (not name order, not creation of the dir).
		created := base.Add(time.Duration([]int{2, 3, 1}[i]) * time.Hour)
		writeStateT(t, dir, &State{Name: name, Status: StatusRunning, Created: created})
	}
	// A dir without state (zero Created: sorts first) and a stray file.
	if _, err := CreatePodDir(rt, "half"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rt, "pods", "README"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pods, err := ListPods(rt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods {
		names = append(names, p.Name+":"+p.Status)
	}
	if want := []string{"half:starting", "b:running", "c:running", "a:running"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("ListPods = %q, want %q", names, want)
	}
}

func TestRemovePodDir(t *testing.T) {
	rt := t.TempDir()
	dir, err := CreatePodDir(rt, "p")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "vm", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := RemovePodDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pod dir still there: %v", err)
	}
	if err := RemovePodDir(dir); err != nil {
		t.Fatalf("RemovePodDir of a missing dir = %v", err)
	}
}

// startFakeQEMU starts a process (a shell blocked in a builtin read, so it
// has no child of its own) whose command line contains arg.
func startFakeQEMU(t *testing.T, arg string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "read x", "fake-qemu", arg)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, stdin
}

func waitCmd(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("process still running after 10s")
		return nil
	}
}

func TestRemovePodDirKillsLeftoverQEMU(t *testing.T) {
	rt := t.TempDir()
	dir, err := CreatePodDir(rt, "p")
	if err != nil {
		t.Fatal(err)
	}
	qemu, _ := startFakeQEMU(t, "-chardev socket,path="+filepath.Join(VMDir(dir), "qmp.sock"))
	writeStateT(t, dir, &State{Name: "p", Status: StatusRunning, OwnerPID: 1 << 30, QEMUPID: qemu.Process.Pid})
	if err := RemovePodDir(dir); err != nil {
		t.Fatal(err)
	}
	err = waitCmd(t, qemu)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("leftover QEMU ended with %v, want SIGKILL", err)
	}
}

func TestRemovePodDirSparesUnrelatedProcess(t *testing.T) {
	rt := t.TempDir()
	dir, err := CreatePodDir(rt, "p")
	if err != nil {
		t.Fatal(err)
	}
	// The recorded pid now belongs to a process that has nothing to do
	// with this pod (pid reuse): it must not be killed.
	other, stdin := startFakeQEMU(t, "/some/other/pod/vm")
	writeStateT(t, dir, &State{Name: "p", Status: StatusRunning, OwnerPID: 1 << 30, QEMUPID: other.Process.Pid})
	if err := RemovePodDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pod dir still there: %v", err)
	}
	// Still alive: it exits normally once its read finishes.
	if _, err := stdin.Write([]byte("bye\n")); err != nil {
		t.Fatal(err)
	}
	if err := waitCmd(t, other); err != nil {
		t.Fatalf("unrelated process ended with %v, want a normal exit", err)
	}
}

func TestCheckName(t *testing.T) {
	for _, n := range []string{"a", "web-1", "A.b_c", strings.Repeat("x", 63)} {
		if err := CheckName(n); err != nil {
			t.Errorf("CheckName(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", "-a", ".a", "..", "a/b", "a b", strings.Repeat("x", 64), "a\n"} {
		if err := CheckName(n); err == nil || !strings.Contains(err.Error(), "invalid name") {
			t.Errorf("CheckName(%q) = %v", n, err)
		}
	}
}

func TestRuntimeDir(t *testing.T) {
	t.Setenv("COFFER_RUNTIME_DIR", "/tmp/x")
	if got := RuntimeDir(); got != "/tmp/x" {
		t.Fatalf("RuntimeDir with COFFER_RUNTIME_DIR = %q", got)
	}
	t.Setenv("COFFER_RUNTIME_DIR", "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	want := "/run/coffer"
	if os.Geteuid() != 0 {
		want = "/run/user/1000/coffer"
	}
	if got := RuntimeDir(); got != want {
		t.Fatalf("RuntimeDir = %q, want %q", got, want)
	}
}

// A pod directory another coffer is still setting up (no owner yet, or no
// state yet) is not taken over while it is young.
func TestCreatePodDirRespectsPodBeingCreated(t *testing.T) {
	rt := t.TempDir()
	dir, err := CreatePodDir(rt, "young")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreatePodDir(rt, "young"); err == nil || !strings.Contains(err.Error(), "being created") {
		t.Fatalf("second create of a pod with no state yet: %v", err)
	}
	writeStateT(t, dir, &State{Status: StatusStarting})
	if _, err := CreatePodDir(rt, "young"); err == nil || !strings.Contains(err.Error(), "being created") {
		t.Fatalf("second create during the detached hand-off: %v", err)
	}
}

// A process that has exited but is not reaped yet (a zombie) is not alive:
// a dead pod owner re-parented to an init that does not reap must show as
// dead.
func TestProcessStartZombie(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if s := string(b); strings.Contains(s[strings.LastIndexByte(s, ')')+1:], " Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not become a zombie: %q", pid, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := ProcessStart(pid); got != 0 {
		t.Errorf("ProcessStart of a zombie = %d, want 0", got)
	}
	if ProcessStart(os.Getpid()) == 0 {
		t.Error("ProcessStart of this process = 0")
	}
}

package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/hypervisor"
)

// TestBootToPoweroff: the guest prints the marker and powers off; qemu exits
// by itself with a nil ExitErr, and the console tail is the end of the log.
func TestBootToPoweroff(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	v := startVM(t, guestConfig(dir, "poweroff"))
	if v.Accel() != testAccel() {
		t.Errorf("Accel() = %q, want %q", v.Accel(), testAccel())
	}
	took := waitConsole(t, v, marker+" mode=poweroff", 30*time.Second)
	waitDoneT(t, v, 30*time.Second)
	t.Logf("marker after %s", took)
	if err := v.ExitErr(); err != nil {
		t.Fatalf("ExitErr after guest poweroff = %v, want nil", err)
	}

	full, err := os.ReadFile(v.ConsoleLogPath())
	if err != nil {
		t.Fatal(err)
	}
	fullLines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(full), "\r", ""), "\n"), "\n")
	// With "quiet" the console is the marker plus the kernel's power-down
	// line; asking for more lines than exist returns them all.
	if len(fullLines) < 2 {
		t.Fatalf("console has %d lines, want at least 2:\n%s", len(fullLines), full)
	}
	for _, n := range []int{1, 2, len(fullLines) + 5} {
		want := strings.Join(fullLines[max(len(fullLines)-n, 0):], "\n")
		if got := v.ConsoleTail(n); got != want {
			t.Errorf("ConsoleTail(%d) = %q, want %q", n, got, want)
		}
	}
	if got := v.ConsoleTail(0); got != "" {
		t.Errorf("ConsoleTail(0) = %q", got)
	}
	if err := v.Stop(context.Background()); err != nil {
		t.Fatalf("Stop after exit: %v", err)
	}
	assertGone(t, v)
}

// TestStopRunningVM: a guest that sleeps forever is stopped through QMP quit
// (no kill needed), leaving no process and no state directory.
func TestStopRunningVM(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	v := startVM(t, guestConfig(dir, "sleep"))
	waitConsole(t, v, marker+" mode=sleep", 30*time.Second)

	start := time.Now()
	if err := v.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	took := time.Since(start)
	select {
	case <-v.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := v.ExitErr(); err != nil {
		t.Errorf("ExitErr after QMP quit = %v, want nil (a kill would say signal)", err)
	}
	if took > stopGrace {
		t.Errorf("Stop took %s: quit should end qemu well within the %s grace", took, stopGrace)
	}
	assertGone(t, v)
	if err := v.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := v.Kill(); err != nil {
		t.Errorf("Kill after Stop: %v", err)
	}
}

// TestKillHungVM: a guest whose init hangs is killed; ExitErr says SIGKILL.
func TestKillHungVM(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	v := startVM(t, guestConfig(dir, "sleep"))
	waitConsole(t, v, marker+" mode=sleep", 30*time.Second)
	if err := v.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	waitDoneT(t, v, 5*time.Second)
	var xe *ExitError
	if err := v.ExitErr(); !errors.As(err, &xe) || xe.Signal != syscall.SIGKILL {
		t.Fatalf("ExitErr after Kill = %v, want an *ExitError for SIGKILL", err)
	}
	if err := v.Cleanup(); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if err := v.Cleanup(); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	assertGone(t, v)
}

// TestStopWithExpiredContext kills at once when ctx leaves no grace.
func TestStopWithExpiredContext(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	v := startVM(t, guestConfig(dir, "sleep"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := v.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Stop with a cancelled ctx took %s", took)
	}
	assertGone(t, v)
}

// TestGuestPanicIsAnError: init exits, the kernel panics and (panic=-1,
// -no-reboot) qemu exits; ExitErr must say so and quote the panic.
func TestGuestPanicIsAnError(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	v := startVM(t, guestConfig(dir, "exit"))
	waitDoneT(t, v, 30*time.Second)
	err := v.ExitErr()
	var xe *ExitError
	if !errors.As(err, &xe) || xe.Reason != "guest-reset" || !strings.Contains(err.Error(), "Kernel panic") {
		t.Fatalf("ExitErr after a guest panic = %v, want a guest-reset *ExitError quoting the panic", err)
	}
	t.Logf("ExitErr: %v", err)
}

// TestStartFailsOnBadKernel: the error names the kernel and quotes qemu;
// nothing is left behind.
func TestStartFailsOnBadKernel(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	cfg := guestConfig(dir, "poweroff")
	cfg.Kernel = filepath.Join(dir, "no-such-vmlinuz")
	_, err := Start(context.Background(), cfg, testLogger(t))
	if err == nil {
		t.Fatal("Start with a missing kernel succeeded")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{cfg.Kernel, "could not open kernel file", "qemu exited during start-up"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q", want)
		}
	}
	if _, serr := os.Stat(cfg.StateDir); !os.IsNotExist(serr) {
		t.Errorf("state dir left behind: %v", serr)
	}
}

// TestStartAutoAccel: with no accelerator chosen Start runs DetectAccel
// (which honours COFFER_ACCEL) and reports the result.
func TestStartAutoAccel(t *testing.T) {
	dir := vmTest(t)
	t.Setenv(hypervisor.EnvAccel, "")
	want, reason, err := hypervisor.DetectAccel(context.Background(), hypervisor.DetectOptions{Kernel: testKernel, CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	if want != hypervisor.AccelTCG {
		t.Skipf("this host would use %s (%s); the test runs guests under TCG only", want, reason)
	}
	cfg := guestConfig(dir, "sleep")
	cfg.Accel = hypervisor.AccelAuto
	cfg.AccelCacheDir = filepath.Join(dir, "cache")
	v := startVM(t, cfg)
	if v.Accel() != want {
		t.Errorf("Accel() = %q, want %q (%s)", v.Accel(), want, reason)
	}
	t.Setenv(hypervisor.EnvAccel, "bogus")
	cfg.StateDir = filepath.Join(dir, "vm2")
	if _, err := Start(context.Background(), cfg, testLogger(t)); err == nil || !strings.Contains(err.Error(), "COFFER_ACCEL") {
		t.Errorf("Start with COFFER_ACCEL=bogus: %v", err)
	}
}

// TestStartRejectsBadSetup covers failures before qemu runs.
func TestStartRejectsBadSetup(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	ctx := context.Background()

	busy := guestConfig(dir, "poweroff")
	if err := os.MkdirAll(busy.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(busy.StateDir, "someone-elses")
	if err := os.WriteFile(keep, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, busy, testLogger(t)); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty StateDir: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("Start touched a non-empty StateDir: %v", err)
	}

	long := guestConfig(dir, "poweroff")
	long.StateDir = filepath.Join(dir, strings.Repeat("d", 100))
	if _, err := Start(ctx, long, testLogger(t)); err == nil || !strings.Contains(err.Error(), "shorter StateDir") {
		t.Errorf("long socket path: %v", err)
	}

	noQEMU := guestConfig(dir, "poweroff")
	noQEMU.StateDir = filepath.Join(dir, "vm3")
	noQEMU.QEMUPath = "qemu-system-nonexistent"
	if _, err := Start(ctx, noQEMU, testLogger(t)); err == nil || !strings.Contains(err.Error(), "install qemu-system-x86") {
		t.Errorf("missing qemu: %v", err)
	}
	if _, err := os.Stat(noQEMU.StateDir); !os.IsNotExist(err) {
		t.Errorf("state dir created for a VM that could not start: %v", err)
	}
}

// TestQMPAndDevices: QMP answers, errors come back typed, the virtio-serial
// socket port accepts connections and the disks are wired as configured.
// The guest need not boot for any of this.
func TestQMPAndDevices(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	cfg := guestConfig(dir, "sleep")
	rootImg := filepath.Join(dir, "root.img")
	dataImg := filepath.Join(dir, "data,1.img") // a comma must be escaped
	for _, p := range []string{rootImg, dataImg} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Disks = []hypervisor.Disk{
		{Serial: "coffer-root", Path: rootImg, ReadOnly: true},
		{Serial: "coffer-data", Path: dataImg},
	}
	cfg.Ports = []hypervisor.Port{
		{Name: "coffer.agent", Kind: hypervisor.PortSocket},
		{Name: "coffer.log", Kind: hypervisor.PortFile, Path: filepath.Join(dir, "guest.log")},
	}
	v := startVM(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ret, err := v.QMP(ctx, "query-status", nil)
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	var status struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := json.Unmarshal(ret, &status); err != nil || !status.Running || status.Status != "running" {
		t.Fatalf("query-status = %s (%v), want running", ret, err)
	}

	_, err = v.QMP(ctx, "no-such-command", nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Command != "no-such-command" {
		t.Errorf("unknown command: %v, want a CommandNotFound *QMPError", err)
	}

	// Disks: read-only flag and serial as configured.
	for i, d := range cfg.Disks {
		ret, err := v.QMP(ctx, "qom-get", map[string]string{"path": fmt.Sprintf("/machine/peripheral/vdisk%d", i), "property": "serial"})
		if err != nil {
			t.Fatalf("qom-get serial: %v", err)
		}
		if got := strings.Trim(string(ret), `"`); got != d.Serial {
			t.Errorf("disk %d serial = %q, want %q", i, got, d.Serial)
		}
	}
	ret, err = v.QMP(ctx, "query-block", nil)
	if err != nil {
		t.Fatalf("query-block: %v", err)
	}
	var blocks []struct {
		Device   string `json:"device"`
		Inserted struct {
			File string `json:"file"`
			RO   bool   `json:"ro"`
		} `json:"inserted"`
	}
	if err := json.Unmarshal(ret, &blocks); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, b := range blocks {
		got[b.Inserted.File] = b.Inserted.RO
	}
	if ro, ok := got[rootImg]; !ok || !ro {
		t.Errorf("root disk read-only=%v present=%v in %s", ro, ok, ret)
	}
	if ro, ok := got[dataImg]; !ok || ro {
		t.Errorf("data disk read-only=%v present=%v in %s", ro, ok, ret)
	}

	// Ports.
	sock := v.PortPath("coffer.agent")
	if sock != filepath.Join(cfg.StateDir, "port-coffer.agent.sock") {
		t.Errorf("PortPath(coffer.agent) = %q", sock)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Type() != os.ModeSocket {
		t.Fatalf("agent port %s is not a socket: %v", sock, err)
	}
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatalf("connect to the agent port: %v", err)
	}
	c.Close()
	if got := v.PortPath("coffer.log"); got != filepath.Join(dir, "guest.log") {
		t.Errorf("PortPath(coffer.log) = %q", got)
	}
	if got := v.PortPath("nope"); got != "" {
		t.Errorf("PortPath(nope) = %q, want empty", got)
	}

	// A cancelled ctx ends the wait for an answer.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := v.QMP(cctx, "query-status", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("QMP with a cancelled ctx: %v", err)
	}
	// The connection still works afterwards.
	if _, err := v.QMP(ctx, "query-status", nil); err != nil {
		t.Errorf("query-status after a cancelled call: %v", err)
	}

	if err := v.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := v.QMP(ctx, "query-status", nil); err == nil {
		t.Error("QMP after Stop succeeded")
	}
	assertGone(t, v)
}

// TestKeepLogs: Cleanup keeps the logs but removes the sockets.
func TestKeepLogs(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	cfg := guestConfig(dir, "sleep")
	cfg.KeepLogs = true
	cfg.Ports = []hypervisor.Port{{Name: "coffer.agent", Kind: hypervisor.PortSocket}}
	v := startVM(t, cfg)
	if err := v.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "console.log qemu.log" {
		t.Errorf("state dir after Cleanup with KeepLogs holds %v, want console.log qemu.log", names)
	}
}

// TestNoOrphanOnOwnerDeath: SIGKILL the process that started qemu; qemu must
// die too (Pdeathsig), within 2 s.
func TestNoOrphanOnOwnerDeath(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "COFFER_QEMU_HELPER_DIR="+dir, envHelperKernel+"="+testKernel, envHelperInitrd+"="+testInitrd)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	pid := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "QEMU_PID="); ok {
			pid, _ = strconv.Atoi(s)
			break
		}
	}
	if pid == 0 {
		t.Fatalf("helper did not report a qemu pid (scan err %v)", sc.Err())
	}
	if !alive(pid) {
		t.Fatalf("qemu pid %d not running before the owner was killed", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed := time.Now()
	for alive(pid) {
		if time.Since(killed) > 2*time.Second {
			t.Fatalf("qemu pid %d outlived its owner by 2 s: orphaned", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("qemu died %s after its owner", time.Since(killed).Round(time.Millisecond))
}

// TestVMSurvivesStarterThreadExit: Pdeathsig follows the forking thread, so
// a VM started from a goroutine locked to a thread that then exits must keep
// running (Start forks on its own long-lived thread).
func TestVMSurvivesStarterThreadExit(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	var v *VM
	tid := onExitingThread(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		if v, err = Start(ctx, guestConfig(dir, "sleep"), testLogger(t)); err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	if v == nil {
		t.FailNow()
	}
	t.Cleanup(func() { v.Stop(context.Background()) })
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("starter thread %d did not exit; the test proves nothing", tid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-v.Done():
		t.Fatalf("qemu died when the thread that called Start exited: %v", v.ExitErr())
	case <-time.After(300 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := v.QMP(ctx, "query-status", nil); err != nil {
		t.Fatalf("query-status: %v", err)
	}
}

// onExitingThread runs f on a goroutine locked to an OS thread that exits
// when f returns (the Go runtime ends threads whose locked goroutine exits,
// except the main thread, which is avoided). It returns the thread id.
func onExitingThread(f func()) int {
	for {
		ch := make(chan int)
		go func() {
			runtime.LockOSThread()
			tid := syscall.Gettid()
			if tid == os.Getpid() {
				runtime.UnlockOSThread()
				ch <- 0
				return
			}
			f()
			ch <- tid // returns still locked: the thread exits
		}()
		if tid := <-ch; tid != 0 {
			return tid
		}
	}
}

// TestHelperProcess is the owner process for TestNoOrphanOnOwnerDeath. It
// starts a VM, prints its pid and waits to be killed. The VM is started from
// a goroutine that then exits, which is exactly the case Pdeathsig on a
// short-lived thread would get wrong.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("COFFER_QEMU_HELPER_DIR")
	if dir == "" {
		t.Skip("helper for TestNoOrphanOnOwnerDeath; runs only when re-executed by it")
	}
	res := make(chan *VM)
	go func() {
		v, err := Start(context.Background(), guestConfig(dir, "sleep"), nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper: start:", err)
			os.Exit(2)
		}
		res <- v
	}()
	v := <-res
	fmt.Printf("QEMU_PID=%d\n", v.PID())
	time.Sleep(time.Minute)
	v.Stop(context.Background())
	t.Fatal("helper was not killed within a minute")
}

//go:build integration

package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestExitCodes(t *testing.T) {
	t.Parallel()
	if r := runIn(t, nil, "true"); r.code != 0 {
		t.Fatalf("true: exit %d, want 0", r.code)
	}
	if r := runIn(t, nil, "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("exit 3: got %d", r.code)
	}
}

// A container killed by a signal exits 128+N. (The init of a pid
// namespace ignores signals it has no handler for, from inside or outside,
// except SIGKILL from an ancestor: so kill it from the host.)
func TestExitCodeWhenKilled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cofferBin, "run", "--rm", "--name", "killme", "--rootfs", busybox, "--", "sh", "-c", "echo up; sleep 600")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(stdout.String(), "up") })
	if r := coffer(t, "", "kill", "killme"); r.code != 0 {
		t.Fatalf("kill: %+v", r)
	}
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 137 {
		t.Fatalf("killed container: %v, want exit 137", err)
	}
	if strings.Contains(stderr.String(), "out of memory") {
		t.Fatalf("a plain kill reported as OOM: %q", stderr.String())
	}
}

func TestOutputSeparationAndOrder(t *testing.T) {
	t.Parallel()
	script := `i=0; while [ $i -lt 500 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`
	r := runIn(t, nil, "sh", "-c", script)
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	var wantOut, wantErr strings.Builder
	for i := 0; i < 500; i++ {
		wantOut.WriteString("out " + itoa(i) + "\n")
		wantErr.WriteString("err " + itoa(i) + "\n")
	}
	if r.stdout != wantOut.String() {
		t.Errorf("stdout differs: got %d bytes, want %d", len(r.stdout), wantOut.Len())
	}
	if r.stderr != wantErr.String() {
		t.Errorf("stderr differs: got %d bytes, want %d", len(r.stderr), wantErr.Len())
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestStdinRoundTrip(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("the quick brown fox\n", 5000) // 100 KB
	r := coffer(t, in, "run", "--rm", "-i", "--rootfs", busybox, "--", "sh", "-c", "cat; echo done")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	if r.stdout != in+"done\n" {
		t.Fatalf("stdin did not round-trip: got %d bytes, want %d", len(r.stdout), len(in)+5)
	}
	// sha256 over the stream as a second check that bytes are exact.
	r = coffer(t, in, "run", "--rm", "-i", "--rootfs", busybox, "--", "sha256sum")
	sum := sha256.Sum256([]byte(in))
	if !strings.HasPrefix(r.stdout, hex.EncodeToString(sum[:])) {
		t.Fatalf("sha256 in the guest %q, want %x", r.stdout, sum)
	}
}

func TestGuestKernelDiffersFromHost(t *testing.T) {
	t.Parallel()
	host, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	r := runIn(t, nil, "uname", "-r")
	guest := strings.TrimSpace(r.stdout)
	if r.code != 0 || guest == "" {
		t.Fatalf("uname failed: %+v", r)
	}
	if guest == strings.TrimSpace(string(host)) {
		t.Fatalf("guest kernel %q equals the host's: not isolated", guest)
	}
	if !strings.Contains(guest, "cloud") {
		t.Errorf("guest kernel %q is not the Debian cloud kernel", guest)
	}
}

func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Write([]byte(rel + "|" + info.Mode().String() + "|" + itoa(int(info.Size())) + "|" + info.ModTime().String() + "\n"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestWritesDoNotReachHostRootfs(t *testing.T) {
	t.Parallel()
	before := treeDigest(t, busybox)
	r := runIn(t, nil, "sh", "-c", "echo x > /new-file && rm /bin/ls && mkdir -p /etc/evil && echo pwned >> /etc/passwd && ls /new-file")
	if r.code != 0 || !strings.Contains(r.stdout, "/new-file") {
		t.Fatalf("writes inside the container failed: %+v", r)
	}
	if after := treeDigest(t, busybox); after != before {
		t.Fatal("the host rootfs directory changed after the container wrote to /")
	}
	if _, err := os.Stat(filepath.Join(busybox, "new-file")); err == nil {
		t.Fatal("new-file appeared on the host")
	}
}

func TestReadOnlyRootfs(t *testing.T) {
	t.Parallel()
	r := runIn(t, []string{"--read-only"}, "sh", "-c", "touch /x")
	if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
		t.Fatalf("write to a read-only rootfs: %+v", r)
	}
}

func TestEnvCwdUser(t *testing.T) {
	t.Parallel()
	r := runIn(t, []string{"-e", "FOO=bar baz", "-w", "/tmp", "-u", "65534:65534", "--hostname", "box"},
		"sh", "-c", `echo "$FOO|$(pwd)|$(id -u):$(id -g)|$(hostname)"`)
	if want := "bar baz|/tmp|65534:65534|box\n"; r.stdout != want || r.code != 0 {
		t.Fatalf("got %q (exit %d), want %q", r.stdout, r.code, want)
	}
}

func TestIsolationNamespacesAndCaps(t *testing.T) {
	t.Parallel()
	// PID 1 is the command; masked paths; default capabilities exclude
	// SYS_ADMIN; read-only paths; the CPU limit reaches the guest cgroup.
	r := runIn(t, []string{"--cpus", "0.5"}, "sh", "-c", `cat /proc/1/comm; ls /proc/kcore 2>&1 | head -c 0; wc -c < /proc/kcore; mount -t tmpfs none /mnt 2>&1 || echo mount-denied; grep CapEff /proc/self/status; echo 1 2>/dev/null > /proc/sys/kernel/panic && echo proc-sys-writable || echo proc-sys-read-only; cat /sys/fs/cgroup/cpu.max`)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) < 4 || lines[0] != "sh" {
		t.Fatalf("PID 1 should be the container command, got %q", r.stdout)
	}
	if strings.TrimSpace(lines[1]) != "0" {
		t.Errorf("/proc/kcore is not masked: %q", lines[1])
	}
	if !strings.Contains(r.stdout, "mount-denied") {
		t.Errorf("an unprivileged container could mount: %q", r.stdout)
	}
	if !strings.Contains(r.stdout, "CapEff:\t00000000a00425fb") {
		t.Errorf("unexpected effective capabilities: %q", r.stdout)
	}
	if !strings.Contains(r.stdout, "proc-sys-read-only") {
		t.Errorf("/proc/sys is writable in an unprivileged container: %q", r.stdout)
	}
	if lines[len(lines)-1] != "50000 100000" {
		t.Errorf("--cpus 0.5: cpu.max is %q, want \"50000 100000\"", lines[len(lines)-1])
	}
}

func TestPrivilegedAndSysctlStayInGuest(t *testing.T) {
	t.Parallel()
	hostShm, _ := os.ReadFile("/proc/sys/kernel/shmmax")
	hostSwappiness, _ := os.ReadFile("/proc/sys/vm/swappiness")
	r := runIn(t, []string{"--privileged", "--sysctl", "kernel.shmmax=123456789"},
		"sh", "-c", `cat /proc/sys/kernel/shmmax; echo 7 > /proc/sys/vm/swappiness && cat /proc/sys/vm/swappiness; mount -t tmpfs none /mnt && echo mounted`)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if want := "123456789\n7\nmounted\n"; r.stdout != want {
		t.Fatalf("got %q, want %q", r.stdout, want)
	}
	if b, _ := os.ReadFile("/proc/sys/kernel/shmmax"); string(b) != string(hostShm) {
		t.Fatalf("host kernel.shmmax changed: %q -> %q", hostShm, b)
	}
	if b, _ := os.ReadFile("/proc/sys/vm/swappiness"); string(b) != string(hostSwappiness) {
		t.Fatalf("host vm.swappiness changed: %q -> %q", hostSwappiness, b)
	}
}

func TestMemoryLimitOOM(t *testing.T) {
	t.Parallel()
	r := runIn(t, []string{"--memory", "32m"}, "awk", `BEGIN { s = "xxxxxxxxxxxxxxxx"; while (1) s = s s }`)
	if r.code != 137 {
		t.Fatalf("exit %d, want 137 (OOM kill)", r.code)
	}
	if !strings.Contains(r.stderr, "out of memory") {
		t.Fatalf("no OOM message in stderr: %q", r.stderr)
	}
}

func TestPidsLimit(t *testing.T) {
	t.Parallel()
	r := runIn(t, []string{"--pids-limit", "8"}, "sh", "-c",
		// Only builtins after the loop: at the limit nothing can fork.
		// The loop runs in a subshell: ash gives up on "can't fork".
		`(i=0; while [ $i -lt 20 ]; do sleep 3 & i=$((i+1)); done); read max < /sys/fs/cgroup/pids.max; read cur < /sys/fs/cgroup/pids.current; echo $max $cur`)
	fields := strings.Fields(r.stdout)
	if len(fields) != 2 || fields[0] != "8" {
		t.Fatalf("pids.max not applied: %q (stderr %q)", r.stdout, r.stderr)
	}
	if n, err := strconv.Atoi(fields[1]); err != nil || n > 8 || n < 2 {
		t.Fatalf("pids.current %q: want between 2 and the limit 8", fields[1])
	}
	if !strings.Contains(r.stderr, "fork") {
		t.Fatalf("forks beyond the limit did not fail: stderr %q", r.stderr)
	}
}

//go:build integration

package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// volumeDir makes a host directory for volumes, outside the runtime dir.
func volumeDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(suiteDir, "volumes", strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestVolumeReadWrite: a rw directory volume carries bytes both ways
// exactly (a host file read in the container, a container-written file
// read on the host), and the pod leaves no mount behind.
func TestVolumeReadWrite(t *testing.T) {
	t.Parallel()
	dir := volumeDir(t)
	in := make([]byte, 300*1024+7)
	_, _ = rand.Read(in)
	if err := os.WriteFile(filepath.Join(dir, "in.bin"), in, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runIn(t, []string{"-v", dir + ":/data"}, "sh", "-c",
		"sha256sum /data/in.bin && dd if=/dev/urandom of=/data/out.bin bs=1024 count=257 2>/dev/null && sha256sum /data/out.bin && mkdir /data/sub && echo -n nested > /data/sub/f")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("stdout = %q", r.stdout)
	}
	if got := strings.Fields(lines[0])[0]; got != sha(in) {
		t.Errorf("the container read in.bin with sha256 %s, host has %s", got, sha(in))
	}
	out, err := os.ReadFile(filepath.Join(dir, "out.bin"))
	if err != nil {
		t.Fatalf("the host cannot read the container's file: %v", err)
	}
	if len(out) != 257*1024 || sha(out) != strings.Fields(lines[1])[0] {
		t.Errorf("host read %d bytes with sha256 %s; the container wrote %d with %s", len(out), sha(out), 257*1024, strings.Fields(lines[1])[0])
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sub", "f")); string(b) != "nested" {
		t.Errorf("sub/f on the host = %q", b)
	}
}

// TestVolumeReadOnly: writes to a ro volume fail with EROFS in the
// container and the host files stay byte for byte as they were.
func TestVolumeReadOnly(t *testing.T) {
	t.Parallel()
	dir := volumeDir(t)
	orig := []byte("do not change\n")
	if err := os.WriteFile(filepath.Join(dir, "f"), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runIn(t, []string{"-v", dir + ":/ro:ro"}, "sh", "-c",
		`cat /ro/f; echo x >> /ro/f; echo "append=$?"; touch /ro/new; echo "create=$?"; rm /ro/f; echo "rm=$?"`)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, string(orig)) {
		t.Errorf("the container read %q", r.stdout)
	}
	for _, want := range []string{"append=1", "create=1", "rm=1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout %q lacks %s", r.stdout, want)
		}
	}
	// strerror(EROFS), for each failed write.
	if n := strings.Count(r.stderr, "Read-only file system"); n < 3 {
		t.Errorf("want 3 EROFS failures, stderr: %q", r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f")); !bytes.Equal(b, orig) {
		t.Errorf("the host file changed to %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Error("a file was created in the read-only volume")
	}
}

// TestVolumeSingleFile: files can be volumes, read-only or writable.
func TestVolumeSingleFile(t *testing.T) {
	t.Parallel()
	dir := volumeDir(t)
	rw, ro := filepath.Join(dir, "rw.txt"), filepath.Join(dir, "ro.txt")
	for _, f := range []string{rw, ro} {
		if err := os.WriteFile(f, []byte("host\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := runIn(t, []string{"-v", rw + ":/etc/rw.txt", "-v", ro + ":/etc/ro.txt:ro"}, "sh", "-c",
		`echo guest >> /etc/rw.txt && cat /etc/ro.txt && echo no >> /etc/ro.txt; echo "ro=$?"; test -f /etc/rw.txt && echo isfile`)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(rw); string(b) != "host\nguest\n" {
		t.Errorf("rw file on the host = %q", b)
	}
	if b, _ := os.ReadFile(ro); string(b) != "host\n" {
		t.Errorf("ro file on the host = %q", b)
	}
	if r.stdout != "host\nro=1\nisfile\n" || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
}

// TestVolumeErrors: bad -v values fail before anything starts, with exit
// 125, one clear line and nothing left behind.
func TestVolumeErrors(t *testing.T) {
	t.Parallel()
	dir := volumeDir(t)
	for _, tc := range []struct{ v, want string }{
		{dir + "/missing:/data", "does not exist"},
		{"relative/dir:/data", "not an absolute path"},
		{dir + ":data", "not an absolute container path"},
		{dir + ":/../../etc", "outside the container's root"},
		{dir + ":/", "root"},
		{dir + ":/data:rx", "not ro or rw"},
	} {
		name := "volerr"
		r := coffer(t, "", "run", "--rm", "--name", name, "-v", tc.v, "--rootfs", busybox, "--", "true")
		if r.code != 125 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("-v %s: exit %d, stderr %q; want 125 and %q", tc.v, r.code, r.stderr, tc.want)
		}
		if _, err := os.Stat(filepath.Join(runtimeDir, "pods", name)); err == nil {
			t.Errorf("-v %s: pod dir left behind", tc.v)
		}
	}
	// A symlink in the rootfs that leads out of it.
	rootfs := filepath.Join(dir, "rootfs")
	if err := exec.Command("cp", "-a", busybox, rootfs).Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../tmp", filepath.Join(rootfs, "escape")); err != nil {
		t.Fatal(err)
	}
	r := coffer(t, "", "run", "--rm", "-v", dir+":/escape/x", "--rootfs", rootfs, "--", "true")
	if r.code != 125 || !strings.Contains(r.stderr, "outside the container's root") {
		t.Errorf("escaping symlink target: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestVolumeOwnerKilled: kill -9 of a pod's owner takes virtiofsd and
// QEMU with it; removing the dead pod unmounts the volume without
// touching its files.
func TestVolumeOwnerKilled(t *testing.T) {
	t.Parallel()
	dir := volumeDir(t)
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := "volcrash"
	cmd := exec.CommandContext(ctx, cofferBin, "run", "--name", name, "-v", dir+":/data", "--rootfs", busybox, "--", "sh", "-c", "echo up > /data/up; echo up; sleep 600")
	var stdout syncBuffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(stdout.String(), "up") })
	podDir := filepath.Join(runtimeDir, "pods", name)
	procs := func() []string {
		var out []string
		for _, p := range append(ourQEMUs(), ourProcesses("virtiofsd")...) {
			if b, _ := os.ReadFile("/proc/" + p + "/cmdline"); bytes.Contains(b, []byte(podDir)) {
				out = append(out, p)
			}
		}
		return out
	}
	if n := len(procs()); n < 3 {
		t.Fatalf("want qemu and virtiofsd (3 processes) running, found %d", n)
	}
	_ = cmd.Process.Signal(unix.SIGKILL)
	_ = cmd.Wait()
	waitFor(t, 10*time.Second, func() bool { return len(procs()) == 0 })
	// A run in a parallel test may already have swept the dead pod.
	if r := coffer(t, "", "rm", "-f", name); r.code != 0 && !strings.Contains(r.stderr, "no pod named") {
		t.Fatalf("rm: %+v", r)
	}
	if strings.Contains(mounts(), podDir) {
		t.Errorf("mounts of the pod left:\n%s", mounts())
	}
	for _, f := range []string{"keep", "up"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("volume file %s lost: %v", f, err)
		}
	}
}

// TestContainerdBindMount: `ctr run --mount type=bind,...,options=rbind:ro`
// reaches the container read-only and a rw one writes through.
func TestContainerdBindMount(t *testing.T) {
	dir := volumeDir(t)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("from host"), 0o644); err != nil {
		t.Fatal(err)
	}
	rwDir := filepath.Join(dir, "rw")
	if err := os.Mkdir(rwDir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := startContainerd(t)
	c.importBusybox(t)
	r := c.ctr(t, "", "run", "--runtime", "io.containerd.coffer.v2", "--rm",
		"--mount", "type=bind,src="+dir+",dst=/ro,options=rbind:ro",
		"--mount", "type=bind,src="+rwDir+",dst=/rw,options=rbind:rw",
		busyboxImage, "vol1", "sh", "-c", `cat /ro/f; echo; echo x > /ro/g; echo "ro=$?"; echo written > /rw/out`)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "from host") || !strings.Contains(r.stdout, "ro=1") || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(rwDir, "out")); string(b) != "written\n" {
		t.Errorf("rw bind mount: host sees %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "g")); err == nil {
		t.Error("the ro bind mount was written")
	}
	deadline := time.Now().Add(10 * time.Second)
	for (len(shimPodsLeft()) > 0 || len(c.ourMounts()) > 0) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := shimPodsLeft(); len(left) > 0 {
		t.Errorf("shim pod dirs left: %v", left)
	}
	if m := c.ourMounts(); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
}

// TestVolumeHostEditsSeen: with cache=auto, a change the host makes while
// the container runs is seen by the container's next open (here within a
// polling loop), and the container's answer reaches the host.
func TestVolumeHostEditsSeen(t *testing.T) {
	t.Parallel()
	dir := volumeDir(t)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("first\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "volcoherent"
	r := coffer(t, "", "run", "-d", "--name", name, "-v", dir+":/data", "--rootfs", busybox, "--",
		"sh", "-c", "echo ready > /data/ready; while ! grep -q second /data/f; do sleep 0.2; done; echo seen > /data/ack; sleep 600")
	if r.code != 0 {
		t.Fatalf("run -d: %+v", r)
	}
	defer coffer(t, "", "rm", "-f", name)
	waitFor(t, 60*time.Second, func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "ack"))
		return string(b) == "seen\n"
	})
	t.Logf("the container saw the host's edit after %s", time.Since(start).Round(time.Millisecond))
}

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

func TestParseVolume(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]Volume{
		dir + ":/data":      {Source: dir, Destination: "/data"},
		dir + ":/data:rw":   {Source: dir, Destination: "/data"},
		file + ":/etc/f:ro": {Source: file, Destination: "/etc/f", ReadOnly: true},
		dir + ":/a/../b:ro": {Source: dir, Destination: "/a/../b", ReadOnly: true},
	} {
		got, err := ParseVolume(in)
		if err != nil || got != want {
			t.Errorf("ParseVolume(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"rel/dir:/data":        "not an absolute path",
		dir + "/missing:/data": "does not exist",
		dir + ":data":          "not an absolute container path",
		dir + ":/":             "the container's root",
		dir + ":/../etc":       "outside the container's root",
		dir + ":/a/../../etc":  "outside the container's root",
		dir + ":/data:rx":      "not ro or rw",
		dir:                    "HOSTPATH:CTRPATH",
		dir + ":/a:ro:extra":   "HOSTPATH:CTRPATH",
		"/dev/null:/null":      "only directories and regular files",
	} {
		if _, err := ParseVolume(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseVolume(%q) err = %v, want %q", in, err, want)
		}
	}
}

func TestCheckVolumeTarget(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc", "var/lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"escape":   "../../../tmp",    // climbs out of the rootfs
		"abs":      "/var/lib",        // absolute: relative to the container root
		"data":     "var/lib",         // relative, inside
		"var/up":   "../etc",          // relative, inside
		"toroot":   "/",               // the root itself
		"loop":     "loop",            // endless
		"var/deep": "../../../../etc", // climbs out from a subdir
	}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ok := range []string{"/data", "/abs/x", "/var/up/hosts", "/new/dir", "/etc", "/data/../etc"} {
		if err := CheckVolumeTarget(root, ok); err != nil {
			t.Errorf("CheckVolumeTarget(%s): %v", ok, err)
		}
	}
	for bad, want := range map[string]string{
		"/escape":      "outside",
		"/escape/x":    "outside",
		"/var/deep/x":  "outside",
		"/toroot":      "root",
		"/loop":        "too many symlinks",
		"relative":     "absolute",
		"/etc/../../x": "outside",
	} {
		if err := CheckVolumeTarget(root, bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckVolumeTarget(%s) err = %v, want %q", bad, err, want)
		}
	}
}

// TestSharedDirMounts needs root (mounts): the share's layout, read-only
// volumes read-only on the host, release and removal without touching the
// volumes' files.
func TestSharedDirMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	base := t.TempDir()
	pod := filepath.Join(base, "pod")
	src := filepath.Join(base, "src")
	for _, d := range []string{pod, src} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := setupShare(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = RemoveTree(pod) }()
	rw, err := s.add("c1", Volume{Source: src, Destination: "/d"})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := s.add("c2", Volume{Source: file, Destination: "/f", ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	// The exported view has both, each with its own mode, and its root
	// is read-only.
	if err := os.WriteFile(filepath.Join(s.shared, rw, "new"), []byte("new"), 0o644); err != nil {
		t.Errorf("write to a rw volume through the share: %v", err)
	}
	if err := os.WriteFile(filepath.Join(s.shared, ro), []byte("x"), 0o644); err == nil || !errors.Is(err, unix.EROFS) {
		t.Errorf("write to a ro volume through the share: %v, want EROFS", err)
	}
	if err := os.Mkdir(filepath.Join(s.shared, "evil"), 0o755); err == nil || !errors.Is(err, unix.EROFS) {
		t.Errorf("mkdir in the share's root: %v, want EROFS", err)
	}
	if b, _ := os.ReadFile(filepath.Join(src, "new")); !bytes.Equal(b, []byte("new")) {
		t.Errorf("host sees %q", b)
	}
	if err := s.release("c2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(s.mounts, ro)); !os.IsNotExist(err) {
		t.Errorf("released volume's mount point still there: %v", err)
	}
	// Removing the pod dir with a volume still mounted unmounts first,
	// also when the path to it goes through a symlink.
	link := filepath.Join(base, "link")
	if err := os.Symlink(base, link); err != nil {
		t.Fatal(err)
	}
	if err := RemoveTree(filepath.Join(link, "pod")); err != nil {
		t.Fatal(err)
	}
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(pod)); len(ms) != 0 {
		t.Errorf("mounts left: %v", ms)
	}
	for _, f := range []string{filepath.Join(src, "keep"), filepath.Join(src, "new"), file} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("a volume's host file was lost: %v", err)
		}
	}
}

// TestVirtiofsdStop: a virtiofsd that QEMU never connected to is killed
// by Stop, its sandboxed child included, and its socket removed.
func TestVirtiofsdStop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("virtiofsd needs root")
	}
	if _, err := os.Stat(DefaultVirtiofsd); err != nil {
		t.Skipf("virtiofsd not installed: %v", err)
	}
	base := t.TempDir()
	src := filepath.Join(base, "export")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	v, err := startVirtiofsd("", filepath.Join(base, "vfs"), src, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(v.socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v", v.socket, err)
	}
	if err := v.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(v.socket); !os.IsNotExist(err) {
		t.Errorf("socket left: %v", err)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(b, []byte("source="+src)) {
			t.Errorf("virtiofsd process %s still runs", e.Name())
		}
	}
	if _, err := startVirtiofsd("/nonexistent/virtiofsd", filepath.Join(base, "vfs2"), src, slog.Default()); err == nil || !strings.Contains(err.Error(), "qemu-system-common") {
		t.Errorf("missing binary: %v", err)
	}
}

package runner

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// makeTree creates dirs (ending in "/"), regular files and symlinks
// ("name -> target") below root.
func makeTree(t testing.TB, root string, entries ...string) {
	t.Helper()
	for _, e := range entries {
		if name, target, ok := strings.Cut(e, " -> "); ok {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		p := filepath.Join(root, e)
		if strings.HasSuffix(e, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(e), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkInsideRoot asserts the invariant secureJoin promises: the result is
// clean, is root or below it, and no component of it below root that exists
// is a symlink (so the kernel cannot be led out of root when it uses it).
func checkInsideRoot(t testing.TB, root, got, input string) {
	t.Helper()
	if got != filepath.Clean(got) {
		t.Fatalf("secureJoin(%q) = %q: not clean", input, got)
	}
	if got != root && !strings.HasPrefix(got, root+"/") {
		t.Fatalf("secureJoin(%q) = %q: escapes root %q", input, got, root)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(got, root), "/")
	cur := root
	for _, part := range strings.Split(rel, "/") {
		if part == "" {
			continue
		}
		if part == ".." {
			t.Fatalf("secureJoin(%q) = %q: contains ..", input, got)
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			return // the rest does not exist yet: nothing to follow
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			t.Fatalf("secureJoin(%q) = %q: component %q is a symlink", input, got, cur)
		}
	}
}

func TestSecureJoin(t *testing.T) {
	root := t.TempDir()
	makeTree(t, root,
		"etc/passwd",
		"a/b/",
		"file",
		"abs -> /etc",
		"absfile -> /etc/passwd",
		"rootlink -> /",
		"rel -> a/b",
		"up -> ../../../..",
		"a/uplink -> ../../..",
		"a/b/back -> ../../etc",
		"chain1 -> chain2",
		"chain2 -> /a/b",
		"dotdotabs -> /../../etc",
		"dangling -> /nonexistent/x",
		"loop1 -> loop2",
		"loop2 -> loop1",
		"self -> self",
		"hostroot -> /proc/self/root",
		"a/b/deep -> ../../chain1/../../../abs",
	)
	tests := []struct {
		in   string
		want string // relative to root
	}{
		{"", ""},
		{"/", ""},
		{".", ""},
		{"etc/passwd", "etc/passwd"},
		{"/etc/passwd", "etc/passwd"},
		{"/../../etc/passwd", "etc/passwd"},
		{"../../../../../../etc", "etc"},
		{"a/b/../../../../..", ""},
		{"./a/./b/", "a/b"},
		{"a//b///c", "a/b/c"},
		{"nonexistent/../etc", "etc"},
		{"nonexistent/deeper/../../../x", "x"},
		// Absolute links are resolved against root, never the host.
		{"abs", "etc"},
		{"abs/passwd", "etc/passwd"},
		{"absfile", "etc/passwd"},
		{"abs/../..", ""},
		{"rootlink", ""},
		{"rootlink/etc/passwd", "etc/passwd"},
		{"rootlink/../../etc", "etc"},
		{"dotdotabs/passwd", "etc/passwd"},
		// Relative links resolve from the directory that holds them.
		{"rel", "a/b"},
		{"rel/c", "a/b/c"},
		{"rel/..", "a"},
		{"a/b/back/passwd", "etc/passwd"},
		// ".." chains inside links are clamped at root.
		{"up", ""},
		{"up/etc", "etc"},
		{"a/uplink/etc/passwd", "etc/passwd"},
		{"a/b/deep/passwd", "etc/passwd"},
		// Chains of links.
		{"chain1", "a/b"},
		{"chain1/x", "a/b/x"},
		// Dangling links give the path the link would create.
		{"dangling", "nonexistent/x"},
		{"dangling/more", "nonexistent/x/more"},
		{"hostroot/etc", "proc/self/root/etc"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := secureJoin(root, tt.in)
			if err != nil {
				t.Fatalf("secureJoin(%q): %v", tt.in, err)
			}
			want := filepath.Join(root, tt.want)
			if got != want {
				t.Fatalf("secureJoin(%q) = %q, want %q", tt.in, got, want)
			}
			checkInsideRoot(t, root, got, tt.in)
		})
	}
}

func TestSecureJoinErrors(t *testing.T) {
	root := t.TempDir()
	makeTree(t, root, "file", "loop1 -> loop2", "loop2 -> loop1", "self -> self", "self2 -> ./self2/x")
	for _, in := range []string{"loop1", "loop2/x", "self", "self2", "/a/../self/x"} {
		_, err := secureJoin(root, in)
		if err == nil || !strings.Contains(err.Error(), "too many symlinks") {
			t.Errorf("secureJoin(%q) error = %v, want too many symlinks", in, err)
		}
	}
	// A path through a regular file cannot be resolved.
	if _, err := secureJoin(root, "file/x"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("secureJoin(file/x) error = %v, want ENOTDIR", err)
	}
	if _, err := secureJoin(root, "a\x00b"); err == nil {
		t.Errorf("secureJoin with NUL byte: want an error")
	}
}

func TestSecureJoinManyLinks(t *testing.T) {
	// 200 chained links are fine (under the limit of 255).
	root := t.TempDir()
	const n = 200
	for i := 0; i < n; i++ {
		target := "l" + strconv.Itoa(i+1)
		if i == n-1 {
			target = "/dest"
		}
		makeTree(t, root, "l"+strconv.Itoa(i)+" -> "+target)
	}
	got, err := secureJoin(root, "l0/x")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "dest/x"); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func FuzzSecureJoin(f *testing.F) {
	seeds := [][2]string{
		{"etc/passwd", "/etc"},
		{"../../../../etc/shadow", "../.."},
		{"l/../../x", "../../../../../"},
		{"l/passwd", "/etc"},
		{"a/b/l2/x", "l"},
		{"l", "l"},
		{"/l/./../l/a", "a/../../.."},
		{"a/..//./b/../../../c", "/proc/self/root"},
		{"", ""},
		{"l/l/l", "."},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	// One tree per fuzz worker; iterations of a worker run one at a time,
	// so only the fuzzed link is replaced per input.
	root := f.TempDir()
	makeTree(f, root, "etc/passwd", "a/b/", "a/b/l2 -> ../../l", "up -> ../../..")
	link := filepath.Join(root, "l")
	f.Fuzz(func(t *testing.T, path, target string) {
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		// The link target is attacker controlled too (it is in the image).
		if target != "" && !strings.ContainsRune(target, 0) && len(target) < 4096 {
			if err := os.Symlink(target, link); err != nil {
				t.Fatalf("symlink %q: %v", target, err)
			}
		}
		got, err := secureJoin(root, path)
		if err != nil {
			return
		}
		checkInsideRoot(t, root, got, path)
	})
}

func TestParseMountOptions(t *testing.T) {
	tests := []struct {
		opts  []string
		flags uintptr
		prop  []uintptr
		data  string
	}{
		{nil, 0, nil, ""},
		{[]string{"nosuid", "noexec", "nodev"}, unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, nil, ""},
		{[]string{"ro", "rw"}, 0, nil, ""},
		{[]string{"rw", "ro"}, unix.MS_RDONLY, nil, ""},
		{[]string{"nosuid", "suid", "nodev"}, unix.MS_NODEV, nil, ""},
		{[]string{"rbind", "rprivate", "ro"}, unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, []uintptr{unix.MS_PRIVATE | unix.MS_REC}, ""},
		{[]string{"bind"}, unix.MS_BIND, nil, ""},
		{[]string{"nosuid", "strictatime", "mode=755", "size=65536k"}, unix.MS_NOSUID | unix.MS_STRICTATIME, nil, "mode=755,size=65536k"},
		{
			[]string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"},
			unix.MS_NOSUID | unix.MS_NOEXEC, nil, "newinstance,ptmxmode=0666,mode=0620,gid=5",
		},
		{[]string{"shared", "slave", "runbindable"}, 0, []uintptr{unix.MS_SHARED, unix.MS_SLAVE, unix.MS_UNBINDABLE | unix.MS_REC}, ""},
		{[]string{"relatime", "noatime", "nodiratime", "sync", "mand", "remount"}, unix.MS_RELATIME | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_SYNCHRONOUS | unix.MS_MANDLOCK | unix.MS_REMOUNT, nil, ""},
		// Option names are case sensitive: unknown ones go to the fs data.
		{[]string{"RO", "lowerdir=/a,upperdir=/b"}, 0, nil, "RO,lowerdir=/a,upperdir=/b"},
	}
	for _, tt := range tests {
		flags, prop, data := parseMountOptions(tt.opts)
		if flags != tt.flags || !reflect.DeepEqual(prop, tt.prop) || data != tt.data {
			t.Errorf("parseMountOptions(%q) = %#x, %v, %q; want %#x, %v, %q", tt.opts, flags, prop, data, tt.flags, tt.prop, tt.data)
		}
	}
}

func TestMakeTarget(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "x/y/z")
	if err := makeTarget(dir, true); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("makeTarget(dir): %v %v", fi, err)
	}
	file := filepath.Join(root, "f/g/h")
	if err := makeTarget(file, false); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Fatalf("makeTarget(file): %v %v", fi, err)
	}
	// An existing file is kept as is.
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := makeTarget(file, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatalf("makeTarget truncated an existing file: %q", b)
	}
	if err := makeTarget(filepath.Join(file, "sub"), true); err == nil {
		t.Fatal("makeTarget below a regular file: want an error")
	}
}

// TestSetupDevStaysInRootfs: an image whose /dev is an absolute symlink
// to a directory outside the rootfs must not make setupDev touch that
// directory. The device nodes go through secureJoin, but the /dev/fd,
// /dev/stdin, /dev/stdout, /dev/stderr and /dev/ptmx symlinks are created
// at filepath.Join(rootfs, ...), which the kernel resolves through the
// image's symlink (the stage has not pivoted yet): files of those names
// outside the rootfs are removed and replaced.
func TestSetupDevStaysInRootfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setupDev creates device nodes: needs root")
	}
	rootfs, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(rootfs, "dev")); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(outside, "stdin")
	if err := os.WriteFile(victim, []byte("not yours"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := setupDev(rootfs, nil); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "not yours" || len(entries) != 1 {
		t.Fatalf("setupDev wrote outside the rootfs: %d entries in %s, stdin = %q, %v", len(entries), outside, b, err)
	}
}

func TestSetupDev(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setupDev creates device nodes: needs root")
	}
	rootfs := t.TempDir()
	if err := os.Mkdir(filepath.Join(rootfs, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	mode := os.FileMode(0o600)
	uid, gid := uint32(1000), uint32(5)
	devs := []specs.LinuxDevice{
		{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: &mode, UID: &uid, GID: &gid},
		{Path: "/dev/sub/loop0", Type: "b", Major: 7, Minor: 0},
		{Path: "/dev/fifo", Type: "p"},
	}
	if err := setupDev(rootfs, devs); err != nil {
		t.Fatal(err)
	}
	check := func(name string, typ uint32, major, minor uint32, perm uint32, uid, gid uint32) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(rootfs, "dev", name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&unix.S_IFMT != typ || st.Mode&0o7777 != perm || st.Uid != uid || st.Gid != gid ||
			(typ != unix.S_IFIFO && (unix.Major(st.Rdev) != major || unix.Minor(st.Rdev) != minor)) {
			t.Errorf("/dev/%s: mode %o rdev %d:%d owner %d:%d", name, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Uid, st.Gid)
		}
	}
	check("null", unix.S_IFCHR, 1, 3, 0o666, 0, 0)
	check("urandom", unix.S_IFCHR, 1, 9, 0o666, 0, 0)
	check("tty", unix.S_IFCHR, 5, 0, 0o666, 0, 0)
	check("fuse", unix.S_IFCHR, 10, 229, 0o600, 1000, 5)
	check("sub/loop0", unix.S_IFBLK, 7, 0, 0o666, 0, 0)
	check("fifo", unix.S_IFIFO, 0, 0, 0o666, 0, 0)
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "ptmx": "pts/ptmx"} {
		if got, err := os.Readlink(filepath.Join(rootfs, "dev", name)); err != nil || got != target {
			t.Errorf("/dev/%s -> %q, %v; want %q", name, got, err, target)
		}
	}
	// Running it again (a restart) replaces what is there.
	if err := setupDev(rootfs, nil); err != nil {
		t.Fatal(err)
	}
	err := setupDev(rootfs, []specs.LinuxDevice{{Path: "/dev/x", Type: "q"}})
	if err == nil || !strings.Contains(err.Error(), `unknown type "q"`) {
		t.Fatalf("setupDev with a bad device type = %v", err)
	}
}

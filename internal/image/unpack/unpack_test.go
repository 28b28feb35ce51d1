package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ent is one tar entry of a test layer.
type ent struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
	xattrs           map[string]string
	major, minor     int64
}

func file(name, body string) ent { return ent{name: name, body: body, typ: tar.TypeReg, mode: 0o644} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent {
	return ent{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}
func hardlink(name, target string) ent { return ent{name: name, link: target, typ: tar.TypeLink} }

var mtime = time.Unix(1700000000, 0)

func layer(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: mtime, Devmajor: e.major, Devminor: e.minor, Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// apply unpacks layers into a fresh root under a parent dir that also
// holds an "outside" directory the layers must never touch.
func apply(t *testing.T, o Options, layers ...[]byte) (root string, err error) {
	t.Helper()
	parent := t.TempDir()
	root = filepath.Join(parent, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(parent, "outside"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "outside", "secret"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := Open(root, o)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, l := range layers {
		if _, err := u.Apply(context.Background(), bytes.NewReader(l)); err != nil {
			return root, err
		}
	}
	checkOutside(t, parent)
	return root, nil
}

func checkOutside(t *testing.T, parent string) {
	t.Helper()
	names, _ := os.ReadDir(parent)
	if len(names) != 2 {
		t.Fatalf("something was made next to the root: %v", names)
	}
	out, _ := os.ReadDir(filepath.Join(parent, "outside"))
	b, _ := os.ReadFile(filepath.Join(parent, "outside", "secret"))
	if len(out) != 1 || string(b) != "host" {
		t.Fatalf("outside directory changed: %v %q", out, b)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func isRoot() bool { return os.Geteuid() == 0 }

func TestEntryTypesAndMetadata(t *testing.T) {
	suid := file("bin/su", "x")
	suid.mode, suid.uid, suid.gid = 0o4755, 0, 0
	owned := file("home/u/f", "data")
	owned.uid, owned.gid, owned.mode = 1000, 1001, 0o600
	xf := file("x", "x")
	xf.xattrs = map[string]string{"user.note": "hi", "system.bad": "no"}
	fifo := ent{name: "run/fifo", typ: tar.TypeFifo, mode: 0o620}
	null := ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3}
	root, err := apply(t, Options{},
		layer(t, dir("bin/"), suid, dir("home/"), dir("home/u"), owned, xf,
			symlink("bin/sh", "/bin/busybox"), file("bin/busybox", "bb"), hardlink("bin/ls", "bin/busybox"),
			fifo, null, file("implicit/parents/f", "p")))
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "home/u/f")); got != "data" {
		t.Fatalf("content %q", got)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "home/u/f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o600 || st.Mtim.Sec != mtime.Unix() {
		t.Fatalf("mode %o mtime %d", st.Mode&0o7777, st.Mtim.Sec)
	}
	if isRoot() && (st.Uid != 1000 || st.Gid != 1001) {
		t.Fatalf("owner %d:%d", st.Uid, st.Gid)
	}
	if fi, _ := os.Stat(filepath.Join(root, "bin/su")); isRoot() && fi.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("setuid lost: %v", fi.Mode())
	}
	if l, _ := os.Readlink(filepath.Join(root, "bin/sh")); l != "/bin/busybox" {
		t.Fatalf("symlink %q", l)
	}
	var a, b unix.Stat_t
	_ = unix.Lstat(filepath.Join(root, "bin/ls"), &a)
	_ = unix.Lstat(filepath.Join(root, "bin/busybox"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Fatalf("hardlink: inodes %d %d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if fi, err := os.Lstat(filepath.Join(root, "run/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o620 {
		t.Fatalf("fifo: %v %v", fi, err)
	}
	if isRoot() {
		if fi, err := os.Lstat(filepath.Join(root, "dev/null")); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			t.Fatalf("char device: %v %v", fi, err)
		}
	}
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(filepath.Join(root, "x"), "user.note", buf); err == nil && string(buf[:n]) != "hi" {
		t.Fatalf("xattr %q", buf[:n])
	} else if err != nil && !errors.Is(err, unix.ENOTSUP) {
		t.Fatalf("xattr: %v", err)
	}
	if _, err := unix.Getxattr(filepath.Join(root, "x"), "system.bad", buf); err == nil {
		t.Fatal("xattr outside the allowed namespaces was set")
	}
	if read(t, filepath.Join(root, "implicit/parents/f")) != "p" {
		t.Fatal("implicit parents")
	}
}

func TestNotRootSkipsDevicesAndOwnership(t *testing.T) {
	no := false
	d := dir("ro")
	d.mode = 0o555
	null := ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3}
	root, err := apply(t, Options{Root: &no}, layer(t, d, null), layer(t, file("ro/f", "x")))
	if err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(root, "dev/null")) {
		t.Fatal("device node made without root")
	}
	if read(t, filepath.Join(root, "ro/f")) != "x" {
		t.Fatal("read-only dir of a lower layer blocked an upper layer")
	}
}

func TestWhiteouts(t *testing.T) {
	root, err := apply(t, Options{},
		layer(t, file("a/x", "1"), file("a/y", "2"), file("b/z", "3"), file("c/keep", "4"), file("d/f", "5"), file("e", "6")),
		layer(t, file("a/.wh.x", ""), file(".wh.b", ""),
			file("c/new", "n"), file("c/.wh..wh..opq", ""), file("c/after", "a"),
			file("d/f2", "7"), file("d/.wh.f2", ""), file(".wh.nothing", ""), dir("e/")))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		"a/x": false, "a/y": true, "b": false, "c/keep": false, "c/new": true, "c/after": true,
		"d/f": true, "d/f2": true, "d/.wh.f2": false, "a/.wh.x": false, "c/.wh..wh..opq": false,
	} {
		if exists(filepath.Join(root, p)) != want {
			t.Errorf("%s exists=%v, want %v", p, !want, want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(root, "e")); err != nil || !fi.IsDir() {
		t.Errorf("file replaced by a directory: %v %v", fi, err)
	}
}

func TestReplaceAcrossLayers(t *testing.T) {
	root, err := apply(t, Options{},
		layer(t, symlink("f", "../outside/secret"), file("d/x", "1"), symlink("l", "/"), symlink("var/run", "/run"), dir("run/")),
		layer(t, file("f", "new"), file("d", "now a file"), file("l/via-abs", "in"), file("var/run/pid", "42")))
	if err != nil {
		t.Fatal(err)
	}
	if read(t, filepath.Join(root, "f")) != "new" || read(t, filepath.Join(root, "d")) != "now a file" {
		t.Fatal("replacement")
	}
	// Absolute symlinks resolve inside the root, as the container sees them.
	if read(t, filepath.Join(root, "via-abs")) != "in" || read(t, filepath.Join(root, "run/pid")) != "42" {
		t.Fatal("write through an in-root symlink landed elsewhere")
	}
}

// Writes through symlinks that stay in the root: relative ones that do
// not climb above it, absolute ones (resolved from the root, ".." of "/"
// staying "/"), and chains up to MaxSymlinkHops long. Symlink entries
// themselves may point anywhere.
func TestSymlinksInsideRoot(t *testing.T) {
	root, err := apply(t, Options{},
		layer(t, append(chain(MaxSymlinkHops), dir("usr/"), dir("usr/lib/"), symlink("lib", "usr/lib"), dir("etc/"), dir("a/"), dir("a/b/"),
			symlink("a/b/up", "../../etc"), symlink("abs-dotdot", "/../../etc"), symlink("var/run", "/run"), dir("run/"),
			symlink("escaping", "../../../outside/secret"), symlink("lib64", "./lib/../lib"))...),
		layer(t, file("lib/libc.so", "c"), file("a/b/up/hosts", "h"), file("abs-dotdot/motd", "m"), file("var/run/pid", "1"),
			hardlink("lib64/hl", "lib/libc.so"), file("l1/f", "chained"), file("lib64/.wh.libc.so", "")))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"usr/lib/hl": "c", "etc/hosts": "h", "etc/motd": "m", "run/pid": "1", "d/f": "chained"} {
		if got := read(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if exists(filepath.Join(root, "usr/lib/libc.so")) {
		t.Error("whiteout through an in-root symlink did not remove usr/lib/libc.so")
	}
	if l, err := os.Readlink(filepath.Join(root, "escaping")); err != nil || l != "../../../outside/secret" {
		t.Errorf("symlink entry pointing outside: %q %v", l, err)
	}
}

// chain is the directory d and symlinks l(n-1) -> ... -> l1 -> d (l0 when n
// is one more than the links l1..l(n-1) need): resolving "l0/" (or "l1/")
// follows n symlinks.
func chain(n int) []ent {
	out := []ent{dir("d/")}
	first := MaxSymlinkHops + 1 - n // 0 for a chain of 41, 1 for 40
	for i := first; i < first+n; i++ {
		target := fmt.Sprintf("l%d", i+1)
		if i == first+n-1 {
			target = "d"
		}
		out = append(out, symlink(fmt.Sprintf("l%d", i), target))
	}
	return out
}

func TestHostileLayers(t *testing.T) {
	big := file("big", strings.Repeat("x", 5000))
	for name, tc := range map[string]struct {
		layers [][]byte
		want   error
		msg    string
		limits Limits
	}{
		"dotdot":             {layers: [][]byte{layer(t, file("../outside/secret", "pwn"))}, want: ErrUnsafe, msg: `".." in path`},
		"dotdot inside":      {layers: [][]byte{layer(t, file("a/../../outside/x", "pwn"))}, want: ErrUnsafe},
		"absolute":           {layers: [][]byte{layer(t, file("/etc/passwd", "pwn"))}, want: ErrUnsafe, msg: "absolute path"},
		"duplicate":          {layers: [][]byte{layer(t, file("a", "1"), file("a", "2"))}, want: ErrUnsafe, msg: "duplicate"},
		"duplicate whiteout": {layers: [][]byte{layer(t, file(".wh.a", ""), file("./.wh.a", ""))}, want: ErrUnsafe, msg: "duplicate"},
		"hardlink dotdot":    {layers: [][]byte{layer(t, hardlink("h", "../outside/secret"))}, want: ErrUnsafe},
		"hardlink absolute":  {layers: [][]byte{layer(t, hardlink("h", "/etc/passwd"))}, want: ErrUnsafe},
		"hardlink missing":   {layers: [][]byte{layer(t, hardlink("h", "nope"))}, want: ErrUnsafe, msg: "not in the image"},
		"hardlink self":      {layers: [][]byte{layer(t, hardlink("h", "h"))}, want: ErrUnsafe},
		"hardlink via symlink": {layers: [][]byte{layer(t, symlink("s", "../outside"), hardlink("h", "s/secret"))}, want: ErrUnsafe,
			msg: `entry "h": hardlink target "s/secret": unsafe layer: the path resolves through symlink "s" -> "../outside", which points outside the rootfs`},
		"write via escaping symlink": {layers: [][]byte{
			layer(t, symlink("s", "../../../../../../outside")),
			layer(t, file("s/secret", "pwn"))}, want: ErrUnsafe,
			msg: `entry "s/secret": unsafe layer: the path resolves through symlink "s" -> "../../../../../../outside", which points outside the rootfs`},
		"escaping symlink, same layer": {layers: [][]byte{layer(t, symlink("s", "../outside"), file("s/new", "pwn"))}, want: ErrUnsafe,
			msg: `symlink "s" -> "../outside"`},
		"escaping symlink, deep": {layers: [][]byte{layer(t, dir("a/"), dir("a/b/"), symlink("a/b/up", "../../.."), file("a/b/up/x", "pwn"))},
			want: ErrUnsafe, msg: `entry "a/b/up/x": unsafe layer: the path resolves through symlink "a/b/up" -> "../../.."`},
		"escaping symlink, chained": {layers: [][]byte{layer(t, symlink("a", "b"), symlink("b", "../outside")), layer(t, file("a/secret", "pwn"))},
			want: ErrUnsafe, msg: `symlink "b" -> "../outside"`},
		"escaping symlink, via an absolute one": {layers: [][]byte{layer(t, dir("d/"), symlink("d/r", "/"), symlink("d/e", "r/../outside"), file("d/e/x", "pwn"))},
			want: ErrUnsafe, msg: `symlink "d/e" -> "r/../outside"`},
		"escaping symlink, implicit parents": {layers: [][]byte{layer(t, symlink("s", "../outside")), layer(t, file("s/new/dir/f", "pwn"))},
			want: ErrUnsafe, msg: `symlink "s" -> "../outside"`},
		"whiteout via escaping symlink": {layers: [][]byte{layer(t, symlink("s", "../outside")), layer(t, file("s/.wh.secret", ""))},
			want: ErrUnsafe, msg: `entry "s/.wh.secret": unsafe layer: the path resolves through symlink "s" -> "../outside"`},
		"opaque via escaping symlink": {layers: [][]byte{layer(t, symlink("s", "../outside")), layer(t, file("s/.wh..wh..opq", ""))},
			want: ErrUnsafe, msg: `symlink "s" -> "../outside"`},
		"symlink loop": {layers: [][]byte{layer(t, symlink("a", "b"), symlink("b", "a"), file("a/x", "1"))}, want: unix.ELOOP,
			msg: `unsafe layer: the path resolves through more than 40 symlinks`},
		"41 symlinks": {layers: [][]byte{layer(t, append(chain(41), file("l0/f", "1"))...)}, want: unix.ELOOP,
			msg: `entry "l0/f": unsafe layer: the path resolves through more than 40 symlinks`},
		"bad whiteout": {layers: [][]byte{layer(t, file(".wh.", ""))}, want: ErrUnsafe},
		"device numbers": {layers: [][]byte{layer(t, ent{name: "d", typ: tar.TypeChar, major: 1 << 20})},
			want: ErrUnsafe},
		"bomb": {layers: [][]byte{layer(t, manyFiles(20)...)}, want: ErrLimit, msg: "decompression bomb",
			limits: Limits{MaxLayerBytes: 4096}},
		"sparse bomb": {layers: [][]byte{sparseBomb(t)}, want: ErrLimit, msg: "expand", limits: Limits{MaxLayerBytes: 1 << 20}},
		"big file":    {layers: [][]byte{layer(t, big)}, want: ErrLimit, limits: Limits{MaxFileBytes: 4096}},
		"entries":     {layers: [][]byte{layer(t, file("a", ""), file("b", ""), file("c", ""))}, want: ErrLimit, limits: Limits{MaxEntries: 2}},
		"total": {layers: [][]byte{layer(t, big), layer(t, big)}, want: ErrLimit, msg: "all layers",
			limits: Limits{MaxTotalBytes: 10000}},
		"long path": {layers: [][]byte{layer(t, file(strings.Repeat("a/", 100)+"f", ""))}, want: ErrLimit,
			limits: Limits{MaxPathLen: 100}},
	} {
		t.Run(name, func(t *testing.T) {
			if name == "device numbers" && !isRoot() {
				t.Skip("device nodes need root")
			}
			_, err := apply(t, Options{Limits: tc.limits}, tc.layers...)
			if tc.want == nil {
				// Refused or confined: the outside check in apply is the test.
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.msg)
			}
		})
	}
}

func TestStats(t *testing.T) {
	root := t.TempDir()
	u, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	l := layer(t, file("a", "x"), dir("d/"))
	st, err := u.Apply(context.Background(), bytes.NewReader(l))
	if err != nil || st.Entries != 2 || st.Bytes == 0 || st.Bytes > int64(len(l)) {
		t.Fatalf("stats %+v (layer %d bytes), %v", st, len(l), err)
	}
}

func TestCorruptTar(t *testing.T) {
	l := layer(t, file("a", strings.Repeat("x", 2000)))
	_, err := apply(t, Options{}, l[:1000])
	if err == nil || !strings.Contains(err.Error(), "write file") {
		t.Fatalf("truncated layer: %v", err)
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{"./a/b/": "a/b", "a//b": "a/b", "./": ".", "a/./b": "a/b"} {
		got, err := CleanName(in, 4096)
		if err != nil || got != want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzApply(f *testing.F) {
	f.Add(layer(f, file("a", "x"), dir("d/"), symlink("d/l", "../a"), hardlink("h", "a")))
	f.Add(layer(f, symlink("s", "/"), file("s/x", "1"), file(".wh.s", ""), file("d/.wh..wh..opq", "")))
	f.Add(layer(f, symlink("s", "../../.."), file("s/x", "1"), hardlink("h", "s/x")))
	f.Add(layer(f, file("../x", "1")))
	f.Add(layer(f, symlink("a", "b"), symlink("b", "a"), file("a/x", "1"), file("b/.wh.x", "")))
	f.Add(layer(f, symlink("r", "/"), symlink("e", "r/../outside"), file("e/secret", "pwn"), symlink("in", "r/../x"), file("in/f", "ok")))
	base := f.TempDir() // t.TempDir per input stalls the fuzzer
	f.Fuzz(func(t *testing.T, data []byte) {
		parent, err := os.MkdirTemp(base, "")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(parent)
		root := filepath.Join(parent, "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(parent, "outside"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(parent, "outside", "secret"), []byte("host"), 0o644); err != nil {
			t.Fatal(err)
		}
		no := false
		u, err := Open(root, Options{Root: &no, Limits: Limits{MaxLayerBytes: 1 << 20, MaxFileBytes: 1 << 16, MaxEntries: 1000}})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		_, _ = u.Apply(context.Background(), bytes.NewReader(data))
		checkOutside(t, parent)
	})
}

// sparseBomb is a PAX 1.0 sparse file: three blocks in the tar, 1 GiB of
// holes on disk. archive/tar cannot write one, so the blocks are made here.
func sparseBomb(t *testing.T) []byte {
	var recs string
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", "sparse"}, {"GNU.sparse.realsize", "1073741824"}} {
		r := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(r) + 1
		if len(fmt.Sprint(n+len(r))) > 1 {
			n = len(r) + len(fmt.Sprint(len(r)+2))
		}
		recs += fmt.Sprint(n) + r
	}
	block := func(b []byte) []byte { return append(b, make([]byte, (512-len(b)%512)%512)...) }
	var out []byte
	out = append(out, rawHeader("PaxHeaders/sparse", 'x', int64(len(recs)))...)
	out = append(out, block([]byte(recs))...)
	out = append(out, rawHeader("GNUSparseFile.0/sparse", '0', 512)...)
	out = append(out, block([]byte("1\n0\n0\n"))...)
	return append(out, make([]byte, 1024)...)
}

func rawHeader(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:], name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func manyFiles(n int) []ent {
	var out []ent
	for i := range n {
		out = append(out, file(fmt.Sprintf("f%d", i), ""))
	}
	return out
}

// A layer whose entries each resolve through long chains of long symlinks
// is refused once the walk budget is spent, quickly, rather than costing
// tens of milliseconds of CPU per entry.
func TestSymlinkWalkBudget(t *testing.T) {
	ents := []ent{dir("d/")}
	pad := strings.Repeat("d/../", 800) // ~4 KiB, 1600 steps
	for i := range MaxSymlinkHops - 1 {
		target := pad + "d"
		if i > 0 {
			target = pad + fmt.Sprintf("l%d", i-1) // then the previous link
		}
		ents = append(ents, symlink(fmt.Sprintf("l%d", i), target))
	}
	last := fmt.Sprintf("l%d", MaxSymlinkHops-2)
	for i := range 2000 {
		ents = append(ents, file(fmt.Sprintf("%s/f%d", last, i), "x"))
	}
	start := time.Now()
	_, err := apply(t, Options{}, layer(t, ents...))
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "steps in all") {
		t.Fatalf("err = %v, want the walk budget refusal", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("refusing took %s", d)
	}
	t.Logf("refused after %s", time.Since(start).Round(time.Millisecond))
}

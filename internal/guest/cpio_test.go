package guest

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

type testEntry struct {
	name         string
	kind         entryKind
	perm         uint32
	data         []byte
	major, minor uint32
}

func sampleEntries() []testEntry {
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 70001)
	for i := range big {
		big[i] = byte(rng.UintN(256))
	}
	return []testEntry{
		{name: "dev", kind: kindDir, perm: 0o755},
		{name: "dev/console", kind: kindChar, perm: 0o600, major: 5, minor: 1},
		{name: "dev/null", kind: kindChar, perm: 0o666, major: 1, minor: 3},
		{name: "etc", kind: kindDir, perm: 0o755},
		{name: "etc/a", kind: kindFile, perm: 0o644, data: []byte("a")},
		{name: "etc/abc", kind: kindFile, perm: 0o600, data: []byte("abc")},
		{name: "etc/abcd", kind: kindFile, perm: 0o644, data: []byte("abcd")},
		{name: "etc/abcde", kind: kindFile, perm: 0o640, data: []byte("abcde")},
		{name: "etc/empty", kind: kindFile, perm: 0o644, data: nil},
		{name: "init", kind: kindFile, perm: 0o755, data: big},
		{name: "lib", kind: kindDir, perm: 0o755},
		{name: "lib/deep", kind: kindDir, perm: 0o700},
		{name: "lib/deep/x.ko", kind: kindFile, perm: 0o644, data: []byte("\x7fELF\x00\x01")},
		{name: "tmp", kind: kindDir, perm: 0o1777},
	}
}

func writeSample(t *testing.T, mtime int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	cw, err := newCPIOWriter(&buf, mtime)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range sampleEntries() {
		switch e.kind {
		case kindDir:
			err = cw.Dir("/"+e.name, e.perm) // a leading slash is accepted and dropped
		case kindChar:
			err = cw.CharDev(e.name, e.perm, e.major, e.minor)
		case kindFile:
			err = cw.File(e.name, e.perm, int64(len(e.data)), bytes.NewReader(e.data))
		}
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCPIOWriterFormat(t *testing.T) {
	data := writeSample(t, 1700000000)
	if len(data)%512 != 0 {
		t.Errorf("archive is %d bytes, want a multiple of 512", len(data))
	}
	if !bytes.Equal(data, writeSample(t, 1700000000)) {
		t.Fatal("same entries gave different bytes")
	}
	got, err := readNewc(data)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleEntries()
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i, e := range want {
		g := got[i]
		typ := map[entryKind]uint32{kindDir: 0o040000, kindFile: 0o100000, kindChar: 0o020000}[e.kind]
		if g.Name != e.name || g.Mode != typ|e.perm || !bytes.Equal(g.Data, e.data) {
			t.Errorf("entry %d: got %q mode %o (%d bytes), want %q mode %o (%d bytes)", i, g.Name, g.Mode, len(g.Data), e.name, typ|e.perm, len(e.data))
		}
		if g.Ino != uint32(i+1) || g.UID != 0 || g.GID != 0 || g.Mtime != 1700000000 || g.DevMajor != 0 || g.DevMinor != 0 {
			t.Errorf("entry %q: ino %d uid %d gid %d mtime %d dev %d:%d", g.Name, g.Ino, g.UID, g.GID, g.Mtime, g.DevMajor, g.DevMinor)
		}
		if g.RdevMajor != e.major || g.RdevMinor != e.minor {
			t.Errorf("entry %q: rdev %d:%d, want %d:%d", g.Name, g.RdevMajor, g.RdevMinor, e.major, e.minor)
		}
		wantNlink := uint32(1)
		if e.kind == kindDir {
			wantNlink = 2
		}
		if g.Nlink != wantNlink {
			t.Errorf("entry %q: nlink %d, want %d", g.Name, g.Nlink, wantNlink)
		}
	}
}

func TestCPIOWriterRejects(t *testing.T) {
	newW := func() *cpioWriter {
		cw, err := newCPIOWriter(&bytes.Buffer{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return cw
	}
	tests := []struct {
		name string
		do   func(cw *cpioWriter) error
		want string
	}{
		{"unsorted", func(cw *cpioWriter) error {
			cw.Dir("b", 0o755)
			return cw.Dir("a", 0o755)
		}, "sorted"},
		{"duplicate", func(cw *cpioWriter) error {
			cw.Dir("a", 0o755)
			return cw.Dir("a", 0o755)
		}, "unique"},
		{"missing parent", func(cw *cpioWriter) error {
			return cw.File("a/b", 0o644, 0, strings.NewReader(""))
		}, "parent directory"},
		{"parent is a file", func(cw *cpioWriter) error {
			cw.File("a", 0o644, 0, strings.NewReader(""))
			return cw.File("a/b", 0o644, 0, strings.NewReader(""))
		}, "parent directory"},
		{"dotdot", func(cw *cpioWriter) error { return cw.Dir("../x", 0o755) }, "escapes"},
		{"not clean", func(cw *cpioWriter) error { return cw.Dir("a//b", 0o755) }, "canonical"},
		{"empty", func(cw *cpioWriter) error { return cw.Dir("/", 0o755) }, "empty"},
		{"short source", func(cw *cpioWriter) error { return cw.File("f", 0o644, 10, strings.NewReader("abc")) }, "ended after 3 of 10"},
		{"after close", func(cw *cpioWriter) error {
			cw.Close()
			return cw.Dir("a", 0o755)
		}, "after Close"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do(newW())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
	if _, err := newCPIOWriter(&bytes.Buffer{}, 1<<33); err == nil {
		t.Error("mtime beyond 32 bits accepted")
	}
}

// TestCPIOGNURoundTrip checks the archive against GNU cpio, an independent
// implementation: listing, then extraction with exact bytes, modes and
// device numbers.
func TestCPIOGNURoundTrip(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("GNU cpio is not installed (apt-get install cpio)")
	}
	data := writeSample(t, 1700000000)
	archive := filepath.Join(t.TempDir(), "a.cpio")
	if err := os.WriteFile(archive, data, 0o644); err != nil {
		t.Fatal(err)
	}

	list := exec.Command(cpio, "-t", "--quiet", "-F", archive)
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	var names []string
	for _, e := range sampleEntries() {
		names = append(names, e.name)
	}
	if got, want := strings.TrimSpace(string(out)), strings.Join(names, "\n"); got != want {
		t.Fatalf("cpio -t listed:\n%s\nwant:\n%s", got, want)
	}

	root := os.Geteuid() == 0
	dest := t.TempDir()
	args := []string{"-i", "-d", "-m", "-v", "--quiet", "--no-absolute-filenames", "-F", archive}
	if !root {
		args = append(args, "--no-preserve-owner")
	}
	extract := exec.Command(cpio, args...)
	extract.Dir = dest
	if out, err := extract.CombinedOutput(); err != nil {
		if !root && strings.Contains(string(out), "mknod") {
			t.Skip("extracting device nodes needs root")
		}
		t.Fatalf("cpio -idv: %v\n%s", err, out)
	}
	for _, e := range sampleEntries() {
		p := filepath.Join(dest, e.name)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Errorf("%s: %v", e.name, err)
			continue
		}
		typ := map[entryKind]uint32{kindDir: syscall.S_IFDIR, kindFile: syscall.S_IFREG, kindChar: syscall.S_IFCHR}[e.kind]
		if st.Mode != typ|e.perm {
			t.Errorf("%s: extracted mode %o, want %o", e.name, st.Mode, typ|e.perm)
		}
		if root && (st.Uid != 0 || st.Gid != 0) {
			t.Errorf("%s: owner %d:%d, want 0:0", e.name, st.Uid, st.Gid)
		}
		switch e.kind {
		case kindFile:
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, e.data) {
				t.Errorf("%s: extracted content differs (%d bytes, want %d): %v", e.name, len(got), len(e.data), err)
			}
			if st.Mtim.Sec != 1700000000 {
				t.Errorf("%s: mtime %d, want 1700000000", e.name, st.Mtim.Sec)
			}
		case kindChar:
			major, minor := uint32((st.Rdev>>8)&0xfff), uint32((st.Rdev&0xff)|((st.Rdev>>12)&0xfff00))
			if major != e.major || minor != e.minor {
				t.Errorf("%s: device %d:%d, want %d:%d", e.name, major, minor, e.major, e.minor)
			}
		}
	}
}

package floor

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// readCPIO is an independent newc reader for the test.
func readCPIO(t *testing.T, b []byte) map[string]cpioEntry {
	t.Helper()
	out := map[string]cpioEntry{}
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("bad header field %d at %d: %v", i, off, err)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off%4 != 0 {
			t.Fatalf("header at offset %d is not 4-byte aligned", off)
		}
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at %d: %q", off, b[off:off+6])
		}
		mode, size, rmaj, rmin, nameLen := field(1), int(field(6)), field(9), field(10), int(field(11))
		name := string(b[off+110 : off+110+nameLen-1])
		if b[off+110+nameLen-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		data := off + align(110+nameLen)
		if name == "TRAILER!!!" {
			if len(b)%4 != 0 {
				t.Fatalf("archive length %d is not 4-byte aligned", len(b))
			}
			return out
		}
		out[name] = cpioEntry{name: name, mode: mode, rdevMajor: rmaj, rdevMinor: rmin, data: b[data : data+size]}
		off = align(data + size)
	}
}

func TestWriteCPIO(t *testing.T) {
	entries := []cpioEntry{
		{name: "dev", mode: modeDir | 0o755},
		{name: "dev/console", mode: modeChar | 0o600, rdevMajor: 5, rdevMinor: 1},
		{name: "init", mode: modeReg | 0o755, data: []byte("hello, odd length")},
	}
	var buf bytes.Buffer
	if err := writeCPIO(&buf, entries); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, buf.Bytes())
	if len(got) != 3 {
		t.Fatalf("got %d entries, want 3: %v", len(got), got)
	}
	if e := got["init"]; e.mode != modeReg|0o755 || string(e.data) != "hello, odd length" {
		t.Errorf("init = mode %o data %q", e.mode, e.data)
	}
	if e := got["dev/console"]; e.mode != modeChar|0o600 || e.rdevMajor != 5 || e.rdevMinor != 1 {
		t.Errorf("dev/console = %+v", e)
	}
	if e := got["dev"]; e.mode != modeDir|0o755 {
		t.Errorf("dev mode = %o", e.mode)
	}

	// The system's cpio agrees (it is installed on every coffer machine).
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-it", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cpio -it: %v: %s", err, out)
		}
		if got := strings.Fields(string(out)); strings.Join(got, " ") != "dev dev/console init" {
			t.Errorf("cpio -it lists %q", got)
		}
	}

	if err := writeCPIO(&buf, []cpioEntry{{name: "/abs"}}); err == nil {
		t.Error("absolute name accepted")
	}
}

// The trivial init prints the marker this package parses (run as a normal
// process it does not power anything off).
func TestTinyInitMarker(t *testing.T) {
	dir := t.TempDir()
	bin, err := BuildTinyInit(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckStatic(bin); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("tinyinit: %v", err)
	}
	up, ok := ParseInitMarker("[    1.0] noise\r\n" + string(out))
	if !ok || up <= 0 {
		t.Fatalf("no marker with an uptime in %q", out)
	}
	if _, ok := ParseInitMarker("kernel panic"); ok {
		t.Error("marker found in a panic")
	}
	if fi, err := os.Stat(filepath.Join(dir, "tinyinit")); err != nil || fi.Size() > 4<<20 {
		t.Errorf("tinyinit is not small: %v %v", fi.Size(), err)
	}
}

func TestWriteInitrd(t *testing.T) {
	dir := t.TempDir()
	bin, err := BuildTinyInit(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "initrd.img")
	if err := WriteInitrd(img, bin); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(bin)
	if got := readCPIO(t, b)["init"]; !bytes.Equal(got.data, want) || got.mode != modeReg|0o755 {
		t.Errorf("/init in the initrd: mode %o, %d bytes; want the %d-byte tinyinit", got.mode, len(got.data), len(want))
	}
	if err := WriteInitrd(filepath.Join(dir, "x.img"), "/bin/sh"); err == nil || !strings.Contains(err.Error(), "static") {
		t.Errorf("a dynamic /init: err = %v, want a 'must be static' error", err)
	}
}

func TestArgs(t *testing.T) {
	args := strings.Join(VM{QEMU: "qemu", Kernel: "/k", Cmdline: "console=ttyS0 quiet"}.Args("/i", "/d/con,sole"), " ")
	for _, want := range []string{"-nodefaults", "-kernel /k", "-initrd /i", "-append console=ttyS0 quiet", "path=/d/con,,sole"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
}

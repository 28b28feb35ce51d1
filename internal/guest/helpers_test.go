package guest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// testKernelDir returns an unpacked Debian cloud kernel package
// ($COFFER_TEST_KERNEL_DIR, default /tmp/k/x as prepared by the project's
// machine setup).
func testKernelDir(t testing.TB) string {
	t.Helper()
	d := os.Getenv(TestKernelDirEnv)
	if d == "" {
		d = "/tmp/k/x"
	}
	if _, err := OpenKernelDir(d); err != nil {
		t.Skipf("no unpacked kernel package for this test (set %s to a `dpkg-deb -x` of linux-image-*-cloud-amd64): %v", TestKernelDirEnv, err)
	}
	return d
}

// testKernelDebDir holds the downloaded .debs (meta and versioned package):
// the parent of the unpacked kernel directory by default.
func testKernelDebs(t testing.TB) (dir, meta, versioned string) {
	t.Helper()
	dir = os.Getenv("COFFER_TEST_KERNEL_DEBS")
	if dir == "" {
		dir = filepath.Dir(testKernelDir(t))
	}
	metas, _ := filepath.Glob(filepath.Join(dir, KernelMetaPackage+"_*.deb"))
	vers, _ := filepath.Glob(filepath.Join(dir, "linux-image-[0-9]*-cloud-amd64_*.deb"))
	if len(metas) != 1 || len(vers) != 1 {
		t.Skipf("need exactly one %s_*.deb and one linux-image-<release>-cloud-amd64_*.deb in %s (set COFFER_TEST_KERNEL_DEBS)", KernelMetaPackage, dir)
	}
	return dir, metas[0], vers[0]
}

// writeFakeAgent writes a small deterministic stand-in for coffer-agent.
func writeFakeAgent(t testing.TB, dir string, seed string, size int) string {
	t.Helper()
	var b bytes.Buffer
	for i := 0; b.Len() < size; i++ {
		b.WriteString(seed + strconv.Itoa(i) + "\n")
	}
	p := filepath.Join(dir, "coffer-agent")
	if err := os.WriteFile(p, b.Bytes()[:size], 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// newcEntry is one parsed entry of a newc archive (test-side reader,
// written independently of the writer from the format description).
type newcEntry struct {
	Ino, Mode, UID, GID, Nlink, Mtime uint32
	DevMajor, DevMinor                uint32
	RdevMajor, RdevMinor              uint32
	Name                              string
	Data                              []byte
}

// readNewc parses a newc archive (gzip-compressed or not) up to and
// excluding its trailer, checking alignment and that only zero padding
// follows the trailer.
func readNewc(data []byte) ([]newcEntry, error) {
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		if data, err = io.ReadAll(zr); err != nil {
			return nil, err
		}
	}
	var out []newcEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(data) {
			return nil, fmt.Errorf("truncated header at %d", off)
		}
		h := data[off : off+110]
		if string(h[:6]) != "070701" {
			return nil, fmt.Errorf("bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("field %d at %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		namesize, filesize := int(f[11]), int(f[6])
		nameStart := off + 110
		if nameStart+namesize > len(data) || namesize == 0 || data[nameStart+namesize-1] != 0 {
			return nil, fmt.Errorf("bad name at %d", off)
		}
		name := string(data[nameStart : nameStart+namesize-1])
		dataStart := align(nameStart + namesize)
		if dataStart+filesize > len(data) {
			return nil, fmt.Errorf("truncated data of %q", name)
		}
		for _, b := range data[nameStart+namesize : dataStart] {
			if b != 0 {
				return nil, fmt.Errorf("non-zero name padding in %q", name)
			}
		}
		e := newcEntry{Ino: f[0], Mode: f[1], UID: f[2], GID: f[3], Nlink: f[4], Mtime: f[5],
			DevMajor: f[7], DevMinor: f[8], RdevMajor: f[9], RdevMinor: f[10], Name: name,
			Data: append([]byte(nil), data[dataStart:dataStart+filesize]...)}
		off = align(dataStart + filesize)
		if name == "TRAILER!!!" {
			for _, b := range data[min(off, len(data)):] {
				if b != 0 {
					return nil, fmt.Errorf("garbage after trailer")
				}
			}
			return out, nil
		}
		out = append(out, e)
	}
}

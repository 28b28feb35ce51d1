package guest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestKernelPackageFromDepends(t *testing.T) {
	for in, want := range map[string][2]string{
		"linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)":                                        {"linux-image-6.1.0-56-cloud-amd64", "6.1.192-2"},
		"foo, linux-image-6.12.9+bpo-cloud-amd64-unsigned | linux-image-6.12.9+bpo-cloud-amd64": {"linux-image-6.12.9+bpo-cloud-amd64-unsigned", ""},
		"linux-image-6.1.0-56-cloud-amd64:amd64 (=6.1.192-2)":                                   {"linux-image-6.1.0-56-cloud-amd64", "6.1.192-2"},
	} {
		pkg, ver, err := kernelPackageFromDepends(in)
		if err != nil || pkg != want[0] || ver != want[1] {
			t.Errorf("kernelPackageFromDepends(%q) = %q, %q, %v; want %q", in, pkg, ver, err, want)
		}
	}
	if _, _, err := kernelPackageFromDepends("linux-image-cloud-amd64, kmod"); err == nil {
		t.Error("Depends without a versioned kernel accepted")
	}
	if rel, err := releaseFromPackage("linux-image-6.12.9+bpo-cloud-amd64-unsigned"); err != nil || rel != "6.12.9+bpo-cloud-amd64" {
		t.Errorf("releaseFromPackage: %q %v", rel, err)
	}
	if _, err := releaseFromPackage(KernelMetaPackage); err == nil || !strings.Contains(err.Error(), "meta-package") {
		t.Errorf("meta-package accepted as kernel: %v", err)
	}
}

// fakeApt writes an apt-get stand-in that "downloads" from debDir and logs
// each call to a file, plus a failing dpkg-deb to prove it is not called.
func fakeApt(t *testing.T, debDir string, fail bool) (aptGet, calls string) {
	t.Helper()
	bin := t.TempDir()
	calls = filepath.Join(bin, "calls")
	script := fmt.Sprintf(`#!/bin/sh
echo "$@" >> %q
if [ %v = true ]; then echo "E: Unable to locate package $2" >&2; exit 100; fi
[ "$1" = download ] || exit 2
pkg="${2%%%%=*}"
cp %q/"$pkg"_*.deb . || exit 100
`, calls, fail, debDir)
	aptGet = filepath.Join(bin, "apt-get")
	// The executable is written by another process (install), never through
	// a descriptor of this one: a parallel test forking while this process
	// held it open for writing would make exec fail with "text file busy".
	src := filepath.Join(t.TempDir(), "apt-get.sh")
	if err := os.WriteFile(src, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("install", "-m", "0755", src, aptGet).CombinedOutput(); err != nil {
		t.Fatalf("install the fake apt-get: %v: %s", err, out)
	}
	return aptGet, calls
}

func callLines(t *testing.T, p string) []string {
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestFetchKernelApt goes through the apt path (with a fake apt-get that
// serves the real .debs), then checks that later calls use the cache with
// no apt-get or dpkg-deb at all, and that Refresh downloads again.
func TestFetchKernelApt(t *testing.T) {
	t.Parallel() // unpacks the kernel three times
	debDir, _, _ := testKernelDebs(t)
	ctx := context.Background()
	cache := t.TempDir()
	aptGet, calls := fakeApt(t, debDir, false)

	k, err := FetchKernel(ctx, cache, nil, withTools(aptGet, "dpkg-deb"))
	if err != nil {
		t.Fatal(err)
	}
	got := callLines(t, calls)
	if len(got) != 2 || got[0] != "download "+KernelMetaPackage || !strings.HasPrefix(got[1], "download linux-image-"+k.Release+"=") {
		t.Fatalf("apt-get calls: %q", got)
	}
	if k.Package != "linux-image-"+k.Release || k.PackageVersion == "" || !strings.HasPrefix(k.VmlinuzPath, filepath.Join(cache, "kernel", k.Release)) {
		t.Errorf("unexpected kernel %+v", k)
	}
	if _, err := os.Stat(filepath.Join(k.ModulesDir, "kernel", "drivers", "virtio", "virtio_ring.ko")); err != nil {
		t.Error(err)
	}
	assertNoTempFiles(t, filepath.Join(cache, "kernel"))

	// Cached: no tools needed at all.
	k2, err := FetchKernel(ctx, cache, nil, withTools("/nonexistent/apt-get", "/nonexistent/dpkg-deb"))
	if err != nil {
		t.Fatalf("cached FetchKernel needed tools: %v", err)
	}
	if *k2 != *k {
		t.Errorf("cached kernel %+v, want %+v", k2, k)
	}

	// Refresh downloads and unpacks again.
	marker := filepath.Join(cache, "kernel", k.Release, kernelMarker)
	if err := os.WriteFile(filepath.Join(cache, "kernel", k.Release, "stale"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	k3, err := FetchKernel(ctx, cache, nil, withTools(aptGet, "dpkg-deb"), WithRefresh(true))
	if err != nil {
		t.Fatal(err)
	}
	if *k3 != *k || len(callLines(t, calls)) != 4 {
		t.Errorf("refresh: kernel %+v, apt-get calls %q", k3, callLines(t, calls))
	}
	if _, err := os.Stat(filepath.Join(cache, "kernel", k.Release, "stale")); err == nil {
		t.Error("refresh kept the old unpacked directory")
	}
	if _, err := os.Stat(marker); err != nil {
		t.Error(err)
	}
	assertNoTempFiles(t, filepath.Join(cache, "kernel"))

	// An incomplete cached copy (no marker) is fetched again.
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	if _, err := FetchKernel(ctx, cache, nil, withTools(aptGet, "dpkg-deb")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err != nil || len(callLines(t, calls)) != 6 {
		t.Errorf("incomplete cache not re-fetched: %v, calls %q", err, callLines(t, calls))
	}
}

func TestFetchKernelAptFails(t *testing.T) {
	aptGet, _ := fakeApt(t, t.TempDir(), true)
	_, err := FetchKernel(context.Background(), t.TempDir(), nil, withTools(aptGet, "dpkg-deb"))
	if err == nil || !strings.Contains(err.Error(), "apt-get update") || !strings.Contains(err.Error(), "Unable to locate package") {
		t.Fatalf("got %v, want an error quoting apt-get and suggesting apt-get update", err)
	}
	_, err = FetchKernel(context.Background(), t.TempDir(), nil, withTools("/nonexistent/apt-get", "dpkg-deb"))
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("missing apt-get: %v", err)
	}
}

func TestFetchKernelDeb(t *testing.T) {
	t.Parallel()
	_, meta, deb := testKernelDebs(t)
	ctx := context.Background()
	cache := t.TempDir()
	k, err := FetchKernel(ctx, cache, nil, WithKernelDeb(deb))
	if err != nil {
		t.Fatal(err)
	}
	if k.PackageVersion == "" || k.Release == "" {
		t.Errorf("unexpected kernel %+v", k)
	}
	// The same .deb again is not unpacked again; the pointer lets a call
	// without the .deb find it.
	st1, _ := os.Stat(filepath.Join(cache, "kernel", k.Release, kernelMarker))
	// Leftovers of an interrupted fetch are cleaned up.
	if err := os.MkdirAll(filepath.Join(cache, "kernel", ".extract-123", "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := FetchKernel(ctx, cache, nil, WithKernelDeb(deb)); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(filepath.Join(cache, "kernel", k.Release, kernelMarker))
	if !os.SameFile(st1, st2) {
		t.Error("same .deb unpacked twice")
	}
	k2, err := FetchKernel(ctx, cache, nil, withTools("/nonexistent/apt-get", "/nonexistent/dpkg-deb"))
	if err != nil || *k2 != *k {
		t.Fatalf("cached kernel via current.json: %+v, %v", k2, err)
	}
	// OpenKernelDir on the cache knows the package version.
	k3, err := OpenKernelDir(filepath.Join(cache, "kernel", k.Release))
	if err != nil || *k3 != *k {
		t.Errorf("OpenKernelDir(cache) = %+v, %v", k3, err)
	}
	// The meta-package holds no kernel.
	if _, err := FetchKernel(ctx, t.TempDir(), nil, WithKernelDeb(meta)); err == nil || !strings.Contains(err.Error(), "meta-package") {
		t.Errorf("meta-package .deb: %v", err)
	}
	if _, err := FetchKernel(ctx, t.TempDir(), nil, WithKernelDeb(filepath.Join(cache, "missing.deb"))); err == nil {
		t.Error("missing .deb accepted")
	}
	assertNoTempFiles(t, filepath.Join(cache, "kernel"))

	// A Build from the .deb records the Debian package version.
	agent := writeFakeAgent(t, t.TempDir(), "a", 100)
	m, err := Build(ctx, BuildConfig{CacheDir: cache, AgentPath: agent, KernelDeb: deb, Modules: []string{"vsock"}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Kernel.PackageVersion != k.PackageVersion || m.Kernel.Package != k.Package {
		t.Errorf("manifest kernel %+v", m.Kernel)
	}
}

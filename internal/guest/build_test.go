package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testBuild(t *testing.T, dir, agent string, mod func(*BuildConfig)) *Manifest {
	t.Helper()
	cfg := BuildConfig{CacheDir: dir, AgentPath: agent, AgentVersion: "test", KernelDir: testKernelDir(t)}
	if mod != nil {
		mod(&cfg)
	}
	m, err := Build(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return m
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildReproducible(t *testing.T) {
	agent := writeFakeAgent(t, t.TempDir(), "agent-v1", 100_000)
	for _, comp := range []string{CompressionNone, CompressionGzip} {
		t.Run(comp, func(t *testing.T) {
			d1, d2 := t.TempDir(), t.TempDir()
			m1 := testBuild(t, d1, agent, func(c *BuildConfig) { c.Compression = comp })
			m2 := testBuild(t, d2, agent, func(c *BuildConfig) { c.Compression = comp })
			if m1.Cached || m2.Cached {
				t.Fatal("fresh builds reported as cached")
			}
			for _, f := range []string{InitrdFile, ManifestFile, KernelFile} {
				if !bytes.Equal(readFile(t, filepath.Join(d1, f)), readFile(t, filepath.Join(d2, f))) {
					t.Errorf("%s differs between two builds of the same inputs", f)
				}
			}
			if m1.InputsSHA256 != m2.InputsSHA256 || m1.Initrd.SHA256 != m2.Initrd.SHA256 {
				t.Error("manifests differ")
			}
			if comp == CompressionGzip && !bytes.HasPrefix(readFile(t, m1.InitrdPath()), []byte{0x1f, 0x8b}) {
				t.Error("gzip initrd lacks the gzip magic")
			}
		})
	}
}

func TestBuildInitrdContent(t *testing.T) {
	dir := t.TempDir()
	agent := writeFakeAgent(t, t.TempDir(), "agent", 12345)
	m := testBuild(t, dir, agent, nil)

	// The manifest on disk says what Build returned.
	var onDisk Manifest
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, ManifestFile)), &onDisk); err != nil {
		t.Fatal(err)
	}
	onDisk.Dir = m.Dir
	if a, b := mustJSON(t, onDisk), mustJSON(t, m); a != b {
		t.Errorf("guest.json differs from the returned manifest:\n%s\n%s", a, b)
	}
	if strings.Contains(string(readFile(t, filepath.Join(dir, ManifestFile))), dir) {
		t.Error("guest.json contains the absolute output directory")
	}
	if m.Cmdline != DefaultCmdline || m.Initrd.Compression != CompressionNone || m.Kernel.Release == "" || m.Agent.Version != "test" {
		t.Errorf("unexpected manifest %+v", m)
	}
	if got, _, _ := sha256File(filepath.Join(testKernelDir(t), "boot", "vmlinuz-"+m.Kernel.Release)); got != m.Kernel.SHA256 {
		t.Error("kernel sha256 does not match the source vmlinuz")
	}

	entries, err := readNewc(readFile(t, m.InitrdPath()))
	if err != nil {
		t.Fatal(err)
	}
	rel := m.Kernel.Release
	byName := map[string]newcEntry{}
	var names []string
	for _, e := range entries {
		byName[e.Name] = e
		names = append(names, e.Name)
		if e.Mtime != 0 || e.UID != 0 || e.GID != 0 {
			t.Errorf("%s: mtime %d uid %d gid %d", e.Name, e.Mtime, e.UID, e.GID)
		}
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("entries not sorted: %q before %q", names[i-1], names[i])
		}
	}
	if e := byName["init"]; e.Mode != 0o100755 || !bytes.Equal(e.Data, readFile(t, agent)) {
		t.Errorf("/init: mode %o, %d bytes", e.Mode, len(e.Data))
	}
	if e := byName["dev/console"]; e.Mode != 0o020600 || e.RdevMajor != 5 || e.RdevMinor != 1 {
		t.Errorf("/dev/console: %+v", e)
	}
	if e := byName["dev/null"]; e.Mode != 0o020666 || e.RdevMajor != 1 || e.RdevMinor != 3 {
		t.Errorf("/dev/null: %+v", e)
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "mnt", "etc", "etc/coffer", "lib", "lib/modules", "lib/modules/" + rel} {
		if e, ok := byName[d]; !ok || e.Mode&0o170000 != 0o040000 {
			t.Errorf("directory /%s missing", d)
		}
	}
	load := string(byName["etc/coffer/modules.load"].Data)
	if load != strings.Join(m.Modules, "\n")+"\n" {
		t.Errorf("modules.load %q does not match manifest modules %v", load, m.Modules)
	}
	// Nothing else: every file is /init, modules.load or a listed module,
	// and every module is the kernel's, byte for byte, less its signature.
	listed := map[string]bool{}
	for _, p := range m.Modules {
		listed["lib/modules/"+rel+"/"+p] = true
	}
	kernelModDir := filepath.Join(testKernelDir(t), "lib", "modules", rel)
	for _, e := range entries {
		switch {
		case e.Mode&0o170000 == 0o040000, e.Name == "init", e.Name == "dev/console", e.Name == "dev/null", e.Name == "etc/coffer/modules.load":
		case listed[e.Name]:
			src := readFile(t, filepath.Join(kernelModDir, strings.TrimPrefix(e.Name, "lib/modules/"+rel+"/")))
			if !bytes.HasSuffix(src, []byte(moduleSigMagic)) || bytes.HasSuffix(e.Data, []byte(moduleSigMagic)) {
				t.Errorf("%s: the kernel's copy should be signed and the initrd's not", e.Name)
			}
			if !bytes.HasPrefix(src, e.Data) || len(src)-len(e.Data) > 4096 || e.Mode != 0o100644 {
				t.Errorf("%s: content or mode (%o) differs from the kernel's", e.Name, e.Mode)
			}
			delete(listed, e.Name)
		default:
			t.Errorf("unexpected initrd entry %q", e.Name)
		}
	}
	if len(listed) != 0 {
		t.Errorf("modules missing from the initrd: %v", listed)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBuildCacheHitAndRebuild(t *testing.T) {
	dir := t.TempDir()
	adir := t.TempDir()
	agent := writeFakeAgent(t, adir, "agent-v1", 5000)
	m1 := testBuild(t, dir, agent, nil)

	// Age the outputs so a rewrite would be visible in the mtimes.
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	files := []string{KernelFile, InitrdFile, ManifestFile}
	for _, f := range files {
		if err := os.Chtimes(filepath.Join(dir, f), old, old); err != nil {
			t.Fatal(err)
		}
	}
	m2 := testBuild(t, dir, agent, nil)
	if !m2.Cached || m2.InputsSHA256 != m1.InputsSHA256 {
		t.Fatalf("second build with the same inputs: cached=%v", m2.Cached)
	}
	for _, f := range files {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || !st.ModTime().Equal(old) {
			t.Errorf("%s was rewritten on a cache hit", f)
		}
	}
	// Module names with "-" instead of "_", in another order: same inputs.
	m3 := testBuild(t, dir, agent, func(c *BuildConfig) {
		c.Modules = append([]string{"dm-verity", "dm-crypt"}, DefaultModules()...)
	})
	if !m3.Cached {
		t.Error("equivalent module list caused a rebuild")
	}

	// A new agent triggers a rebuild.
	writeFakeAgent(t, adir, "agent-v2", 5000)
	m4 := testBuild(t, dir, agent, nil)
	if m4.Cached || m4.Agent.SHA256 == m1.Agent.SHA256 || m4.Initrd.SHA256 == m1.Initrd.SHA256 || m4.InputsSHA256 == m1.InputsSHA256 {
		t.Fatalf("changed agent did not rebuild: %+v", m4)
	}
	// So do other inputs.
	m5 := testBuild(t, dir, agent, func(c *BuildConfig) { c.Cmdline = DefaultCmdline + " debug" })
	if m5.Cached || m5.Cmdline != DefaultCmdline+" debug" {
		t.Error("changed cmdline did not rebuild")
	}
	m6 := testBuild(t, dir, agent, func(c *BuildConfig) { c.Modules = []string{"vsock"} })
	if m6.Cached || len(m6.Modules) != 1 {
		t.Errorf("changed module list did not rebuild: %v", m6.Modules)
	}
	// A tampered initrd is detected and rebuilt.
	if err := os.WriteFile(m6.InitrdPath(), append(readFile(t, m6.InitrdPath())[:m6.Initrd.Size-1], 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Verify(m6); err == nil || !strings.Contains(err.Error(), "coffer guest build") {
		t.Errorf("Verify of a tampered initrd: %v", err)
	}
	m7 := testBuild(t, dir, agent, func(c *BuildConfig) { c.Modules = []string{"vsock"} })
	if m7.Cached || Verify(m7) != nil || m7.Initrd.SHA256 != m6.Initrd.SHA256 {
		t.Error("tampered initrd was not rebuilt to the same bytes")
	}
	// Refresh forces a rebuild even when up to date.
	m8 := testBuild(t, dir, agent, func(c *BuildConfig) { c.Modules = []string{"vsock"}; c.Refresh = true })
	if m8.Cached {
		t.Error("Refresh returned the cached image")
	}
	assertNoTempFiles(t, dir)
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") || strings.HasPrefix(e.Name(), ".extract-") || strings.HasPrefix(e.Name(), ".download-") {
			t.Errorf("leftover temporary file %s", filepath.Join(dir, e.Name()))
		}
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	agent := writeFakeAgent(t, t.TempDir(), "a", 100)
	kd := testKernelDir(t)
	tests := []struct {
		name string
		cfg  BuildConfig
		want string
	}{
		{"unknown module", BuildConfig{AgentPath: agent, KernelDir: kd, Modules: []string{"virtio_blk", "definitely_not_a_module"}}, `unknown kernel module(s) "definitely_not_a_module"`},
		{"bad module name", BuildConfig{AgentPath: agent, KernelDir: kd, Modules: []string{"../evil"}}, "invalid kernel module name"},
		{"no agent", BuildConfig{KernelDir: kd}, "no coffer-agent binary"},
		{"missing agent", BuildConfig{AgentPath: filepath.Join(dir, "nope"), KernelDir: kd}, "--agent"},
		{"compression", BuildConfig{AgentPath: agent, KernelDir: kd, Compression: "zstd"}, `unknown initrd compression "zstd"`},
		{"cmdline", BuildConfig{AgentPath: agent, KernelDir: kd, Cmdline: "a\nb"}, "kernel command line"},
		{"kernel dir", BuildConfig{AgentPath: agent, KernelDir: dir}, "no kernel found"},
		{"deb and dir", BuildConfig{AgentPath: agent, KernelDir: kd, KernelDeb: "/x.deb"}, "not both"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.CacheDir = dir
			_, err := Build(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, ManifestFile)); err == nil {
		t.Error("a failed build wrote guest.json")
	}
	assertNoTempFiles(t, dir)
}

func TestBuildSourceDateEpoch(t *testing.T) {
	agent := writeFakeAgent(t, t.TempDir(), "a", 100)
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	m := testBuild(t, t.TempDir(), agent, func(c *BuildConfig) { c.Modules = []string{} })
	entries, err := readNewc(readFile(t, m.InitrdPath()))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Mtime != 1700000000 {
			t.Fatalf("%s: mtime %d, want SOURCE_DATE_EPOCH", e.Name, e.Mtime)
		}
	}
	if len(m.Modules) != 0 || string(entriesByName(entries)["etc/coffer/modules.load"].Data) != "" {
		t.Error("empty module list still put modules in the initrd")
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := Build(context.Background(), BuildConfig{CacheDir: t.TempDir(), AgentPath: agent, KernelDir: testKernelDir(t)}); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: %v", err)
	}
}

func entriesByName(es []newcEntry) map[string]newcEntry {
	m := map[string]newcEntry{}
	for _, e := range es {
		m[e.Name] = e
	}
	return m
}

func TestBuildKernelDirFromEnv(t *testing.T) {
	t.Setenv(TestKernelDirEnv, testKernelDir(t))
	agent := writeFakeAgent(t, t.TempDir(), "a", 100)
	m, err := Build(context.Background(), BuildConfig{CacheDir: t.TempDir(), AgentPath: agent, Modules: []string{"overlay"}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Kernel.Release == "" || m.Agent.Version != "unknown" {
		t.Errorf("unexpected manifest %+v", m)
	}
}

func TestLoad(t *testing.T) {
	empty := t.TempDir()
	_, err := Load(empty)
	if err == nil || !strings.Contains(err.Error(), "coffer guest build") {
		t.Fatalf("Load of an empty dir: %v", err)
	}

	dir := t.TempDir()
	agent := writeFakeAgent(t, t.TempDir(), "a", 100)
	built := testBuild(t, dir, agent, func(c *BuildConfig) { c.Modules = []string{"vsock"} })
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if mustJSON(t, m) != mustJSON(t, built) || m.Dir != dir || m.KernelPath() != filepath.Join(dir, KernelFile) {
		t.Errorf("Load returned %+v, Build %+v", m, built)
	}
	if err := Verify(m); err != nil {
		t.Fatal(err)
	}

	t.Setenv("COFFER_GUEST_DIR", dir)
	if m, err := Load(""); err != nil || m.Dir != dir {
		t.Errorf("Load(\"\") with COFFER_GUEST_DIR: %v", err)
	}

	if err := os.Remove(filepath.Join(dir, InitrdFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "coffer guest build") {
		t.Errorf("Load with initrd missing: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "coffer guest build") {
		t.Errorf("Load with corrupt guest.json: %v", err)
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("COFFER_GUEST_DIR", "/x/guest")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if got := DefaultCacheDir(); got != "/x/guest" {
		t.Errorf("with COFFER_GUEST_DIR: %s", got)
	}
	t.Setenv("COFFER_GUEST_DIR", "")
	if got := DefaultCacheDir(); got != "/xdg/coffer/guest" {
		t.Errorf("with XDG_CACHE_HOME: %s", got)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	want := "/var/lib/coffer/guest"
	if os.Geteuid() != 0 {
		h, _ := os.UserHomeDir()
		want = filepath.Join(h, ".cache", "coffer", "guest")
	}
	if got := DefaultCacheDir(); got != want {
		t.Errorf("default: %s, want %s", got, want)
	}
}

func TestBuildContextCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	unlock, err := lockFile(ctx, filepath.Join(dir, ".lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	agent := writeFakeAgent(t, t.TempDir(), "a", 100)
	_, err = Build(ctx, BuildConfig{CacheDir: dir, AgentPath: agent, KernelDir: testKernelDir(t)})
	if err == nil || !strings.Contains(err.Error(), "another `coffer guest build`") {
		t.Fatalf("Build while locked with a canceled context: %v", err)
	}
}

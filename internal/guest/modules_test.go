package guest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestModuleNameNormalization(t *testing.T) {
	for in, want := range map[string]string{
		"dm-crypt":                         "dm_crypt",
		"dm_crypt":                         "dm_crypt",
		"kernel/drivers/md/dm-crypt.ko":    "dm_crypt",
		"kernel/drivers/md/dm-crypt.ko.xz": "dm_crypt",
		" virtio_pci ":                     "virtio_pci",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", in, got, want)
		}
	}
	got, err := normalizeModules([]string{"vsock", "dm-mod", "dm_mod", "erofs"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"dm_mod", "erofs", "vsock"}; !slices.Equal(got, want) {
		t.Errorf("normalizeModules = %q, want %q", got, want)
	}
	for _, bad := range []string{"", "../x", "a/b", "x y", "virtio_pci.ko"} {
		if _, err := normalizeModules([]string{bad}); err == nil || !strings.Contains(err.Error(), "invalid kernel module name") {
			t.Errorf("normalizeModules(%q): got %v, want invalid-name error", bad, err)
		}
	}
}

func TestParseModulesDep(t *testing.T) {
	in := `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:

# comment
/lib/modules/6.1.0-x/kernel/fs/erofs/erofs.ko: /lib/modules/6.1.0-x/kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
`
	got, err := parseModulesDep(strings.NewReader(in), "/lib/modules/6.1.0-x")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"kernel/drivers/virtio/virtio.ko":      {"kernel/drivers/virtio/virtio_ring.ko"},
		"kernel/drivers/virtio/virtio_ring.ko": {},
		"kernel/fs/erofs/erofs.ko":             {"kernel/lib/libcrc32c.ko"},
		"kernel/lib/libcrc32c.ko":              {},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	for _, bad := range []string{
		"kernel/a.ko kernel/b.ko\n",    // no colon
		"kernel/a.ko:\nkernel/a.ko:\n", // duplicate
		"kernel/a.ko: kernel/a.ko\n",   // self
		"kernel/a.ko: ../b.ko\n",       // escape
		"/etc/a.ko:\n",                 // absolute outside prefix
		"kernel/a.txt:\n",              // not a module
		"kernel/./a.ko:\n",             // not clean
	} {
		if _, err := parseModulesDep(strings.NewReader(bad), "/lib/modules/6.1.0-x"); err == nil {
			t.Errorf("parseModulesDep(%q) accepted bad input", bad)
		}
	}
}

func FuzzParseModulesDep(f *testing.F) {
	f.Add([]byte("kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko\n"))
	f.Add([]byte("kernel/a.ko:\n# c\n\n/lib/modules/r/kernel/b.ko: /lib/modules/r/kernel/a.ko\n"))
	f.Add([]byte("a.ko:b.ko c.ko.xz\nb.ko:\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		deps, err := parseModulesDep(bytes.NewReader(data), "/lib/modules/r")
		if err != nil {
			return
		}
		// Every accepted path is a clean relative module path, and the
		// result survives a round trip through the file format.
		var b strings.Builder
		keys := make([]string, 0, len(deps))
		for k := range deps {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, p := range append([]string{k}, deps[k]...) {
				if strings.HasPrefix(p, "/") || filepath.Clean(p) != p || !isModuleFile(p) || strings.ContainsAny(p, " \t\n:") {
					t.Fatalf("accepted bad module path %q", p)
				}
			}
			fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(deps[k], " "))
		}
		again, err := parseModulesDep(strings.NewReader(b.String()), "/lib/modules/r")
		if err != nil {
			t.Fatalf("re-parse of %q: %v", b.String(), err)
		}
		if fmt.Sprint(again) != fmt.Sprint(deps) {
			t.Fatalf("round trip changed %v into %v", deps, again)
		}
	})
}

func openTestIndex(t *testing.T) *moduleIndex {
	t.Helper()
	k, err := OpenKernelDir(testKernelDir(t))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := openModuleIndex(k.ModulesDir, k.Release)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// checkLoadOrder asserts that every module appears once and after all of
// its dependencies.
func checkLoadOrder(t *testing.T, idx *moduleIndex, load []string) {
	t.Helper()
	pos := map[string]int{}
	for i, p := range load {
		if _, dup := pos[p]; dup {
			t.Errorf("%s listed twice", p)
		}
		pos[p] = i
	}
	for i, p := range load {
		deps, err := idx.depsOf(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range deps {
			j, ok := pos[d]
			if !ok {
				t.Errorf("%s needs %s, which is not in the load list", p, d)
			} else if j > i {
				t.Errorf("%s (position %d) is loaded before its dependency %s (position %d)", p, i, d, j)
			}
		}
	}
}

func TestResolveDefaultModules(t *testing.T) {
	idx := openTestIndex(t)
	mods, _ := normalizeModules(DefaultModules())
	res, err := idx.resolve(mods)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("load order (%d): %s", len(res.Load), strings.Join(res.Load, " "))
	checkLoadOrder(t, idx, res.Load)
	pos := map[string]int{}
	for i, p := range res.Load {
		pos[moduleName(p)] = i
	}
	// Every requested module that is not built in is there.
	for _, m := range mods {
		if _, ok := pos[m]; !ok && !idx.builtin[m] {
			t.Errorf("requested module %s missing", m)
		}
	}
	// Known edges of the Debian 6.1 cloud kernel (from its modules.dep).
	for _, e := range [][2]string{
		{"virtio_ring", "virtio"}, {"virtio", "virtio_pci"}, {"virtio_pci_modern_dev", "virtio_pci"},
		{"virtio_pci_legacy_dev", "virtio_pci"}, {"vsock", "vmw_vsock_virtio_transport"},
		{"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"},
		{"dm_mod", "dm_crypt"}, {"dm_bufio", "dm_verity"}, {"reed_solomon", "dm_verity"},
		{"libcrc32c", "erofs"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"},
	} {
		a, aok := pos[e[0]]
		b, bok := pos[e[1]]
		if !aok || !bok || a > b {
			t.Errorf("want %s before %s in %v", e[0], e[1], res.Load)
		}
	}
	if len(res.Builtin) != 0 {
		t.Errorf("no default module is built into this kernel, got %v", res.Builtin)
	}
}

func TestResolveBuiltinAndUnknown(t *testing.T) {
	idx := openTestIndex(t)
	res, err := idx.resolve([]string{"ext4", "overlay"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Builtin, []string{"ext4"}) || !slices.Equal(res.Load, []string{"kernel/fs/overlayfs/overlay.ko"}) {
		t.Errorf("got load %v builtin %v", res.Load, res.Builtin)
	}
	_, err = idx.resolve([]string{"overlay", "no_such_mod", "virtio_blk"})
	if err == nil || !strings.Contains(err.Error(), `unknown kernel module(s) "no_such_mod"`) || !strings.Contains(err.Error(), idx.release) {
		t.Fatalf("got %v, want a clear unknown-module error", err)
	}
}

// TestModinfoMatchesDepmod cross-checks the .modinfo-based dependency
// reading (used because the .deb has no modules.dep) against the real
// depmod, for every module of the kernel, and checks that both sources give
// the same load order.
func TestModinfoMatchesDepmod(t *testing.T) {
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod"} {
			if _, err := os.Stat(p); err == nil {
				depmod = p
			}
		}
		if depmod == "" {
			t.Skip("depmod (kmod) is not installed")
		}
	}
	kdir := testKernelDir(t)
	k, err := OpenKernelDir(kdir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.dep")); err == nil {
		t.Skip("test kernel directory already has a modules.dep")
	}
	// depmod writes into <base>/lib/modules/<release>: give it a tree of
	// symlinks so the shared kernel directory stays untouched.
	base := t.TempDir()
	md := filepath.Join(base, "lib", "modules", k.Release)
	if err := os.MkdirAll(md, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"kernel", "modules.builtin", "modules.order", "modules.builtin.modinfo"} {
		if err := os.Symlink(filepath.Join(k.ModulesDir, f), filepath.Join(md, f)); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"-b", base}
	if sm := filepath.Join(kdir, "boot", "System.map-"+k.Release); fileExists(sm) {
		args = append(args, "-F", sm)
	}
	if out, err := exec.Command(depmod, append(args, k.Release)...).CombinedOutput(); err != nil {
		t.Fatalf("depmod: %v\n%s", err, out)
	}

	viaDep, err := openModuleIndex(md, k.Release)
	if err != nil {
		t.Fatal(err)
	}
	if !viaDep.fromDep {
		t.Fatal("index did not use modules.dep")
	}
	viaInfo, err := openModuleIndex(k.ModulesDir, k.Release)
	if err != nil {
		t.Fatal(err)
	}
	if viaInfo.fromDep {
		t.Fatal("index used a modules.dep")
	}
	if len(viaDep.byName) != len(viaInfo.byName) {
		t.Fatalf("modules.dep has %d modules, the kernel/ tree %d", len(viaDep.byName), len(viaInfo.byName))
	}
	// Transitive closure via .modinfo == modules.dep's (transitive) list.
	closure := func(p string) []string {
		seen := map[string]bool{}
		var walk func(string)
		walk = func(q string) {
			d, err := viaInfo.depsOf(q)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range d {
				if !seen[x] {
					seen[x] = true
					walk(x)
				}
			}
		}
		walk(p)
		out := make([]string, 0, len(seen))
		for x := range seen {
			out = append(out, x)
		}
		slices.Sort(out)
		return out
	}
	for name, p := range viaDep.byName {
		if viaInfo.byName[name] != p {
			t.Fatalf("module %s: modules.dep path %s, tree path %s", name, p, viaInfo.byName[name])
		}
		want := slices.Sorted(slices.Values(viaDep.deps[p]))
		if got := closure(p); !slices.Equal(got, want) {
			t.Errorf("%s: .modinfo closure %v, modules.dep %v", p, got, want)
		}
	}

	mods, _ := normalizeModules(append(DefaultModules(), "xfs", "nfsv4", "btrfs"))
	a, err := viaDep.resolve(mods)
	if err != nil {
		t.Fatal(err)
	}
	b, err := viaInfo.resolve(mods)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Load, b.Load) {
		t.Errorf("load order differs:\nmodules.dep: %v\n.modinfo:    %v", a.Load, b.Load)
	}
	checkLoadOrder(t, viaDep, a.Load)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

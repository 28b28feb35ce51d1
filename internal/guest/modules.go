package guest

import (
	"bufio"
	"bytes"
	"container/heap"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
)

// DefaultModules returns the kernel modules Coffer loads in every guest when
// BuildConfig.Modules is nil: virtio transport and devices, vsock, the
// filesystems used for container root filesystems, virtio-fs (and FUSE)
// for host volumes, and device-mapper for
// encrypted and integrity-protected disks. ext4 is built into the Debian
// cloud kernel, so it is not listed. Dependencies are added automatically.
func DefaultModules() []string {
	return []string{
		"virtio_pci",
		"virtio_console",
		"virtio_blk",
		"virtio_net",
		"virtio_rng",
		"virtio_balloon",
		"vsock",
		"vmw_vsock_virtio_transport",
		"overlay",
		"erofs",
		"virtiofs",
		"dm_mod",
		"dm_crypt",
		"dm_verity",
	}
}

// moduleName normalises a module name or file name the way the kernel does:
// "dm-crypt", "dm_crypt" and "kernel/drivers/md/dm-crypt.ko" all become
// "dm_crypt".
func moduleName(s string) string {
	s = path.Base(strings.TrimSpace(s))
	s = strings.TrimSuffix(s, moduleExt(s))
	return strings.ReplaceAll(s, "-", "_")
}

// moduleExt returns the kernel module file ending of name (".ko", or a
// compressed ".ko.gz", ".ko.xz", ".ko.zst"), or "" if it has none.
func moduleExt(name string) string {
	for _, ext := range []string{".ko", ".ko.gz", ".ko.xz", ".ko.zst"} {
		if strings.HasSuffix(name, ext) {
			return ext
		}
	}
	return ""
}

// isModuleFile reports whether name ends like a kernel module file and has
// a non-empty stem.
func isModuleFile(name string) bool {
	base := path.Base(name)
	ext := moduleExt(base)
	return ext != "" && len(base) > len(ext)
}

func validModuleName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// normalizeModules validates, normalises, de-duplicates and sorts a module
// list. The result is the canonical form used for hashing and resolution:
// the set of modules, not the order they were asked for, decides the initrd.
func normalizeModules(names []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, raw := range names {
		n := strings.TrimSpace(raw)
		if !validModuleName(n) {
			return nil, fmt.Errorf("invalid kernel module name %q: use a module name such as \"virtio_blk\" (letters, digits, - and _ only)", raw)
		}
		n = moduleName(n)
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// parseModulesDep parses a depmod modules.dep file: one line per module,
// "path/to/mod.ko: dep1.ko dep2.ko ...", with paths relative to the modules
// directory (old depmod versions wrote absolute /lib/modules/<release>/...
// paths; prefix, when non-empty, is stripped from those). It returns, per
// module path, the paths of its dependencies in file order.
func parseModulesDep(r io.Reader, prefix string) (map[string][]string, error) {
	deps := map[string][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	lineNo := 0
	clean := func(p string) (string, error) {
		if prefix != "" && strings.HasPrefix(p, prefix) {
			p = strings.TrimPrefix(strings.TrimPrefix(p, prefix), "/")
		}
		if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") || strings.ContainsFunc(p, func(r rune) bool { return r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
			return "", fmt.Errorf("module path %q is not a clean relative path (no spaces, control characters or colons)", p)
		}
		if !isModuleFile(p) {
			return "", fmt.Errorf("module path %q does not name a .ko file", p)
		}
		return p, nil
	}
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: missing ':' in %q", lineNo, line)
		}
		mp, err := clean(strings.TrimSpace(mod))
		if err != nil {
			return nil, fmt.Errorf("modules.dep line %d: %w", lineNo, err)
		}
		if _, dup := deps[mp]; dup {
			return nil, fmt.Errorf("modules.dep line %d: module %q listed twice", lineNo, mp)
		}
		list := []string{}
		for _, f := range strings.Fields(rest) {
			dp, err := clean(f)
			if err != nil {
				return nil, fmt.Errorf("modules.dep line %d: %w", lineNo, err)
			}
			if dp == mp {
				return nil, fmt.Errorf("modules.dep line %d: module %q depends on itself", lineNo, mp)
			}
			list = append(list, dp)
		}
		deps[mp] = list
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading modules.dep: %w", err)
	}
	return deps, nil
}

// parseModulesBuiltin parses modules.builtin (one "kernel/.../name.ko" per
// line) into a set of normalised module names.
func parseModulesBuiltin(r io.Reader) (map[string]bool, error) {
	set := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		set[moduleName(line)] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading modules.builtin: %w", err)
	}
	return set, nil
}

// modinfoDepends reads the "depends=" field from the .modinfo ELF section of
// an uncompressed kernel module.
func modinfoDepends(file string) ([]string, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading kernel module %s: %w", file, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("kernel module %s has no .modinfo section", file)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("reading .modinfo of %s: %w", file, err)
	}
	var out []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		for _, d := range strings.Split(string(v), ",") {
			if d = strings.TrimSpace(d); d != "" {
				out = append(out, moduleName(d))
			}
		}
	}
	return out, nil
}

// moduleIndex knows, for one kernel release, where each loadable module is,
// what it depends on and which modules are built in.
type moduleIndex struct {
	release string
	dir     string            // /.../lib/modules/<release>
	byName  map[string]string // normalised name -> path relative to dir
	builtin map[string]bool   // normalised names built into vmlinuz
	// deps holds the dependency paths per module path. It is complete when
	// read from modules.dep; otherwise it is filled lazily from each
	// module's .modinfo (the Debian .deb ships no modules.dep: depmod
	// generates it at install time, and we never install).
	deps    map[string][]string
	fromDep bool
}

// openModuleIndex indexes the modules directory of a kernel release.
func openModuleIndex(dir, release string) (*moduleIndex, error) {
	idx := &moduleIndex{release: release, dir: dir, byName: map[string]string{}, deps: map[string][]string{}}

	bf, err := os.Open(filepath.Join(dir, "modules.builtin"))
	switch {
	case err == nil:
		idx.builtin, err = parseModulesBuiltin(bf)
		bf.Close()
		if err != nil {
			return nil, fmt.Errorf("kernel %s: %w", release, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		idx.builtin = map[string]bool{}
	default:
		return nil, fmt.Errorf("kernel %s: %w", release, err)
	}

	df, err := os.Open(filepath.Join(dir, "modules.dep"))
	switch {
	case err == nil:
		deps, perr := parseModulesDep(df, "/lib/modules/"+release)
		df.Close()
		if perr != nil {
			return nil, fmt.Errorf("kernel %s: %s: %w", release, filepath.Join(dir, "modules.dep"), perr)
		}
		idx.deps, idx.fromDep = deps, true
		paths := make([]string, 0, len(deps))
		for p := range deps {
			paths = append(paths, p)
		}
		slices.Sort(paths) // first path wins on (unlikely) duplicate names
		for _, p := range paths {
			if n := moduleName(p); idx.byName[n] == "" {
				idx.byName[n] = p
			}
		}
		return idx, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("kernel %s: %w", release, err)
	}

	// No modules.dep: index the module files themselves (WalkDir visits in
	// lexical order, so the first path wins on duplicates, as above).
	root := filepath.Join(dir, "kernel")
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !isModuleFile(d.Name()) {
			return nil
		}
		n := moduleName(d.Name())
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if idx.byName[n] == "" {
			idx.byName[n] = filepath.ToSlash(rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing kernel modules in %s: %w", root, err)
	}
	return idx, nil
}

// depsOf returns the dependency paths of the module at rel.
func (idx *moduleIndex) depsOf(rel string) ([]string, error) {
	if d, ok := idx.deps[rel]; ok || idx.fromDep {
		return d, nil
	}
	if !strings.HasSuffix(rel, ".ko") {
		return nil, fmt.Errorf("kernel %s: module %s is compressed and %s has no modules.dep to read its dependencies from: run `depmod -b <root> %s` on the extracted kernel, or use an uncompressed-module kernel", idx.release, rel, idx.dir, idx.release)
	}
	names, err := modinfoDepends(filepath.Join(idx.dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", idx.release, err)
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		if idx.builtin[n] {
			continue
		}
		p := idx.byName[n]
		if p == "" {
			return nil, fmt.Errorf("kernel %s: module %s depends on %q, which is neither a module file nor built in: the kernel modules directory %s looks incomplete; re-fetch it with `coffer guest build --refresh`", idx.release, rel, n, idx.dir)
		}
		out = append(out, p)
	}
	idx.deps[rel] = out
	return out, nil
}

// resolution is the outcome of resolving a module list.
type resolution struct {
	// Load lists module paths relative to the modules directory, every
	// dependency before the modules that need it, each exactly once.
	Load []string
	// Builtin lists requested names that are built into the kernel.
	Builtin []string
}

// resolve computes the load order for the requested (normalised) module
// names. The order is canonical: among the modules whose dependencies are
// all loaded, the one with the smallest name goes next. That order depends
// only on the dependency partial order, so modules.dep (which lists
// transitive dependencies) and .modinfo (direct ones) give the same result.
func (idx *moduleIndex) resolve(names []string) (*resolution, error) {
	res := &resolution{}
	var roots, unknown []string
	for _, n := range names {
		switch {
		case idx.builtin[n]:
			res.Builtin = append(res.Builtin, n)
		case idx.byName[n] != "":
			roots = append(roots, idx.byName[n])
		default:
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown kernel module(s) %s: kernel %s has no such loadable or built-in module (looked in %s and modules.builtin); check the spelling, e.g. `find %s -name '*%s*'`",
			strings.Join(quoteAll(unknown), ", "), idx.release, idx.dir, idx.dir, strings.ReplaceAll(unknown[0], "_", "[-_]"))
	}

	// Collect the closure and the reverse edges.
	deps := map[string][]string{}
	var stack []string
	stack = append(stack, roots...)
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, done := deps[p]; done {
			continue
		}
		d, err := idx.depsOf(p)
		if err != nil {
			return nil, err
		}
		deps[p] = d
		for _, q := range d {
			if _, done := deps[q]; !done {
				stack = append(stack, q)
			}
		}
	}

	// Kahn's algorithm with a min-heap keyed by module name.
	pending := map[string]int{}
	users := map[string][]string{}
	for p, d := range deps {
		pending[p] = 0
		for _, q := range slices.Compact(slices.Sorted(slices.Values(d))) {
			pending[p]++
			users[q] = append(users[q], p)
		}
	}
	h := &nameHeap{}
	for p, c := range pending {
		if c == 0 {
			heap.Push(h, p)
		}
	}
	for h.Len() > 0 {
		p := heap.Pop(h).(string)
		res.Load = append(res.Load, p)
		for _, u := range users[p] {
			pending[u]--
			if pending[u] == 0 {
				heap.Push(h, u)
			}
		}
	}
	if len(res.Load) != len(deps) {
		var cyc []string
		for p, c := range pending {
			if c > 0 {
				cyc = append(cyc, p)
			}
		}
		slices.Sort(cyc)
		return nil, fmt.Errorf("kernel %s: dependency cycle among modules %s: the modules metadata is corrupt; re-fetch with `coffer guest build --refresh`", idx.release, strings.Join(cyc, ", "))
	}
	return res, nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// nameHeap orders module paths by module name, then path.
type nameHeap []string

func (h nameHeap) Len() int { return len(h) }
func (h nameHeap) Less(i, j int) bool {
	a, b := moduleName(h[i]), moduleName(h[j])
	if a != b {
		return a < b
	}
	return h[i] < h[j]
}
func (h nameHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *nameHeap) Push(x any)   { *h = append(*h, x.(string)) }
func (h *nameHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

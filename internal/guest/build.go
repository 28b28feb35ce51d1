package guest

import (
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultCmdline is the guest kernel command line unless BuildConfig.Cmdline
// says otherwise: serial console, quiet boot, and a guest panic or reboot
// ends the VM instead of restarting it. no_timer_check skips the boot-time
// check that the timer interrupt arrives through the IO-APIC within a
// few jiffies: on a loaded host a TCG vCPU can miss that window and the
// guest panics ("IO-APIC + timer doesn't work!").
const DefaultCmdline = "console=ttyS0 quiet panic=-1 reboot=t no_timer_check"

// FormatVersion is the version of the guest image layout and of guest.json.
// It is part of the inputs hash: bump it whenever the initrd content or the
// manifest changes for the same inputs, so existing images get rebuilt.
const FormatVersion = 1

// File names inside the guest image directory.
const (
	ManifestFile = "guest.json"
	KernelFile   = "vmlinuz"
	InitrdFile   = "initrd.img"
)

// TestKernelDirEnv names an environment variable holding an already-unpacked
// kernel package directory (see OpenKernelDir). Build uses it when neither
// BuildConfig.KernelDir nor BuildConfig.KernelDeb is set, so that tests and
// air-gapped machines need neither apt nor network.
const TestKernelDirEnv = "COFFER_TEST_KERNEL_DIR"

// BuildConfig says how to build a guest image.
type BuildConfig struct {
	// CacheDir receives vmlinuz, initrd.img and guest.json; the unpacked
	// kernel is cached under CacheDir/kernel. Empty means DefaultCacheDir().
	CacheDir string
	// AgentPath is the statically linked coffer-agent binary, the initrd's
	// /init. Required.
	AgentPath string
	// AgentVersion is recorded in guest.json. Empty means: read it from the
	// Go build information embedded in the agent binary ("unknown" if none).
	AgentVersion string
	// KernelDeb is a versioned linux-image-<release> .deb to use instead of
	// asking apt (offline use).
	KernelDeb string
	// KernelDir is an already-unpacked kernel package (see OpenKernelDir),
	// used as is, without fetching or caching. Mostly for tests; falls back
	// to $COFFER_TEST_KERNEL_DIR.
	KernelDir string
	// Modules to put in the initrd, with their dependencies. nil means
	// DefaultModules(); an empty non-nil slice means none. "-" and "_" are
	// interchangeable; built-in modules are skipped.
	Modules []string
	// Cmdline is the kernel command line; empty means DefaultCmdline.
	Cmdline string
	// Compression of the initrd: "none" (default: decompressing under TCG
	// emulation is slow) or "gzip".
	Compression string
	// KeepModuleSignatures copies modules with their signatures. By default
	// the signatures are stripped: the whole initrd is hashed into
	// guest.json (and measured in confidential mode), so per-module
	// signatures protect nothing more, and checking them is about half of
	// a module's load time under TCG. The kernel logs that it is tainted
	// by unsigned modules; a kernel that enforces signatures
	// (module.sig_enforce, lockdown) needs them kept.
	KeepModuleSignatures bool
	// Refresh downloads the kernel again and rebuilds even when the
	// cached image is up to date.
	Refresh bool
	// Log receives progress messages; nil discards them.
	Log *slog.Logger
}

// Manifest describes a built guest image; it is stored as guest.json. It
// holds only values derived from the build inputs (no timestamps, no
// absolute paths), so identical inputs give a byte-identical guest.json.
type Manifest struct {
	FormatVersion int        `json:"format_version"`
	Kernel        KernelInfo `json:"kernel"`
	Initrd        InitrdInfo `json:"initrd"`
	Cmdline       string     `json:"cmdline"`
	Agent         AgentInfo  `json:"agent"`
	// Modules are the module files in the initrd in load order, relative
	// to /lib/modules/<release>: the content of /etc/coffer/modules.load.
	Modules []string `json:"modules"`
	// ModuleSignatures is "stripped" or "kept".
	ModuleSignatures string `json:"module_signatures"`
	// InputsSHA256 hashes everything the image is built from: format
	// version, kernel (sha256, release, package), agent (sha256,
	// version), requested modules, cmdline, compression and mtime.
	InputsSHA256 string `json:"inputs_sha256"`

	// Dir is the directory the manifest was loaded from or built into.
	Dir string `json:"-"`
	// Cached reports that Build found an up-to-date image and wrote
	// nothing.
	Cached bool `json:"-"`
}

// KernelInfo describes the guest kernel image.
type KernelInfo struct {
	Path           string `json:"path"` // relative to the manifest's directory
	SHA256         string `json:"sha256"`
	Release        string `json:"release"`
	Package        string `json:"package"`
	PackageVersion string `json:"package_version"`
}

// InitrdInfo describes the initrd.
type InitrdInfo struct {
	Path        string `json:"path"` // relative to the manifest's directory
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	Compression string `json:"compression"`
}

// AgentInfo identifies the coffer-agent inside the initrd.
type AgentInfo struct {
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
}

// KernelPath is the absolute path of the kernel image.
func (m *Manifest) KernelPath() string { return filepath.Join(m.Dir, m.Kernel.Path) }

// InitrdPath is the absolute path of the initrd.
func (m *Manifest) InitrdPath() string { return filepath.Join(m.Dir, m.Initrd.Path) }

// DefaultCacheDir is where guest images live unless told otherwise:
// $COFFER_GUEST_DIR if set; else $XDG_CACHE_HOME/coffer/guest if
// XDG_CACHE_HOME is set; else /var/lib/coffer/guest for root; else
// ~/.cache/coffer/guest.
func DefaultCacheDir() string {
	if d := os.Getenv("COFFER_GUEST_DIR"); d != "" {
		return d
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "coffer", "guest")
	}
	if os.Geteuid() == 0 {
		return "/var/lib/coffer/guest"
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "coffer", "guest")
	}
	return filepath.Join(os.TempDir(), "coffer-guest-"+strconv.Itoa(os.Geteuid()))
}

// buildInputs is hashed into Manifest.InputsSHA256.
type buildInputs struct {
	Format               int      `json:"format"`
	KernelSHA256         string   `json:"kernel_sha256"`
	KernelRelease        string   `json:"kernel_release"`
	KernelPackage        string   `json:"kernel_package"`
	KernelPackageVersion string   `json:"kernel_package_version"`
	AgentSHA256          string   `json:"agent_sha256"`
	AgentVersion         string   `json:"agent_version"`
	Modules              []string `json:"modules"`
	Cmdline              string   `json:"cmdline"`
	Compression          string   `json:"compression"`
	KeepModuleSignatures bool     `json:"keep_module_signatures,omitempty"`
	Mtime                int64    `json:"mtime"`
}

func (in buildInputs) sum() string {
	b, _ := json.Marshal(in) // struct of strings and ints: cannot fail
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Build makes sure CacheDir holds a guest image (vmlinuz, initrd.img,
// guest.json) for the given inputs. If guest.json records the same inputs
// and both files still match their recorded hashes, it returns that
// manifest with Cached set and writes nothing. Otherwise it fetches the
// kernel if needed (see FetchKernel), builds a reproducible initrd and
// replaces the three files atomically.
func Build(ctx context.Context, cfg BuildConfig) (*Manifest, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := cfg.CacheDir
	if dir == "" {
		dir = DefaultCacheDir()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	compression := cfg.Compression
	if compression == "" {
		compression = CompressionNone
	}
	if compression != CompressionNone && compression != CompressionGzip {
		return nil, fmt.Errorf("unknown initrd compression %q: use %q or %q", compression, CompressionNone, CompressionGzip)
	}
	cmdline := cfg.Cmdline
	if cmdline == "" {
		cmdline = DefaultCmdline
	}
	if strings.ContainsAny(cmdline, "\x00\n\r") || len(cmdline) >= 2048 {
		return nil, fmt.Errorf("kernel command line %q is invalid: it must be one line shorter than 2048 bytes", cmdline)
	}
	requested := cfg.Modules
	if requested == nil {
		requested = DefaultModules()
	}
	modules, err := normalizeModules(requested)
	if err != nil {
		return nil, err
	}
	mtime, err := sourceDateEpoch()
	if err != nil {
		return nil, err
	}

	if cfg.AgentPath == "" {
		return nil, errors.New("building guest image: no coffer-agent binary given: build it (`make`) and pass its path (--agent)")
	}
	agentPath, err := filepath.Abs(cfg.AgentPath)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(agentPath)
	if err != nil {
		return nil, fmt.Errorf("coffer-agent binary: %w: build it (`make`) or pass its path with --agent", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("coffer-agent binary %s is not a regular file", agentPath)
	}
	checkAgentBinary(agentPath, log)
	agentSHA, _, err := sha256File(agentPath)
	if err != nil {
		return nil, fmt.Errorf("coffer-agent binary: %w", err)
	}
	agentVersion := cfg.AgentVersion
	if agentVersion == "" {
		agentVersion = agentVersionFromBinary(agentPath)
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating guest image directory %s: %w", dir, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	k, err := buildKernel(ctx, cfg, dir, log)
	if err != nil {
		return nil, err
	}
	kernelSHA, _, err := sha256File(k.VmlinuzPath)
	if err != nil {
		return nil, fmt.Errorf("guest kernel: %w", err)
	}
	inputs := buildInputs{
		Format:               FormatVersion,
		KernelSHA256:         kernelSHA,
		KernelRelease:        k.Release,
		KernelPackage:        k.Package,
		KernelPackageVersion: k.PackageVersion,
		AgentSHA256:          agentSHA,
		AgentVersion:         agentVersion,
		Modules:              modules,
		Cmdline:              cmdline,
		Compression:          compression,
		KeepModuleSignatures: cfg.KeepModuleSignatures,
		Mtime:                mtime,
	}
	inputsSum := inputs.sum()

	if !cfg.Refresh {
		if m, err := Load(dir); err == nil && m.InputsSHA256 == inputsSum {
			err := Verify(m)
			if err == nil {
				m.Cached = true
				log.Info("guest image up to date", "dir", dir, "kernel", m.Kernel.Release)
				return m, nil
			}
			log.Info("guest image files changed since built; rebuilding", "err", err)
		}
	}

	idx, err := openModuleIndex(k.ModulesDir, k.Release)
	if err != nil {
		return nil, err
	}
	res, err := idx.resolve(modules)
	if err != nil {
		return nil, err
	}
	if len(res.Builtin) > 0 {
		log.Debug("modules built into the kernel, not copied", "modules", res.Builtin)
	}
	spec := &initrdSpec{release: k.Release, agentPath: agentPath, agentSHA: agentSHA, modulesDir: k.ModulesDir, modules: res.Load, stripSignatures: !cfg.KeepModuleSignatures}
	entries, err := spec.entries()
	if err != nil {
		return nil, err
	}

	log.Info("building guest image", "dir", dir, "kernel", k.Release, "modules", len(res.Load), "compression", compression)
	vmlinuzSHA, _, err := writeFileAtomic(dir, KernelFile, 0o644, func(w *countingHashWriter) error {
		f, err := os.Open(k.VmlinuzPath)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("copying guest kernel: %w", err)
	}
	if vmlinuzSHA != kernelSHA {
		return nil, fmt.Errorf("guest kernel %s changed while being copied: run the build again", k.VmlinuzPath)
	}
	initrdSHA, initrdSize, err := writeFileAtomic(dir, InitrdFile, 0o644, func(w *countingHashWriter) error {
		return writeInitrd(w, entries, compression, mtime)
	})
	if err != nil {
		return nil, err
	}
	m := &Manifest{
		FormatVersion: FormatVersion,
		Kernel: KernelInfo{
			Path: KernelFile, SHA256: kernelSHA, Release: k.Release,
			Package: k.Package, PackageVersion: k.PackageVersion,
		},
		Initrd:           InitrdInfo{Path: InitrdFile, SHA256: initrdSHA, Size: initrdSize, Compression: compression},
		Cmdline:          cmdline,
		Agent:            AgentInfo{Version: agentVersion, SHA256: agentSHA},
		Modules:          append([]string{}, res.Load...),
		ModuleSignatures: moduleSignatures(cfg.KeepModuleSignatures),
		InputsSHA256:     inputsSum,
		Dir:              dir,
	}
	if err := writeJSONAtomic(dir, ManifestFile, m); err != nil {
		return nil, err
	}
	log.Info("guest image built", "dir", dir, "initrd_bytes", initrdSize, "initrd_sha256", initrdSHA)
	return m, nil
}

// moduleSignatures is Manifest.ModuleSignatures for a build.
func moduleSignatures(keep bool) string {
	if keep {
		return "kept"
	}
	return "stripped"
}

// buildKernel finds the kernel for cfg: an unpacked directory if one is
// given (or named by $COFFER_TEST_KERNEL_DIR), else FetchKernel.
func buildKernel(ctx context.Context, cfg BuildConfig, dir string, log *slog.Logger) (*Kernel, error) {
	kd := cfg.KernelDir
	if kd != "" && cfg.KernelDeb != "" {
		return nil, errors.New("building guest image: give either a kernel .deb or an unpacked kernel directory, not both")
	}
	if kd == "" && cfg.KernelDeb == "" {
		if kd = os.Getenv(TestKernelDirEnv); kd != "" {
			log.Warn("using unpacked kernel from environment", "env", TestKernelDirEnv, "dir", kd)
		}
	}
	if kd != "" {
		return OpenKernelDir(kd)
	}
	return FetchKernel(ctx, dir, log, WithKernelDeb(cfg.KernelDeb), WithRefresh(cfg.Refresh))
}

// Load reads the guest image manifest in dir (DefaultCacheDir() if empty)
// and checks that the kernel and initrd it names exist. It does not hash
// them; see Verify.
func Load(dir string) (*Manifest, error) {
	if dir == "" {
		dir = DefaultCacheDir()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(p)
	if errNotExist(err) {
		return nil, fmt.Errorf("no guest image in %s (%s is missing): run `coffer guest build` first", dir, ManifestFile)
	}
	if err != nil {
		return nil, fmt.Errorf("reading guest image manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("guest image manifest %s is corrupt (%v): run `coffer guest build` to rebuild it", p, err)
	}
	if m.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("guest image in %s has format version %d, this coffer needs %d: run `coffer guest build` to rebuild it", dir, m.FormatVersion, FormatVersion)
	}
	for _, f := range []struct{ what, name string }{{"kernel", m.Kernel.Path}, {"initrd", m.Initrd.Path}} {
		if f.name == "" || filepath.Base(f.name) != f.name || f.name == "." || f.name == ".." {
			return nil, fmt.Errorf("guest image manifest %s names an invalid %s file %q: run `coffer guest build` to rebuild it", p, f.what, f.name)
		}
	}
	m.Dir = dir
	if _, err := os.Stat(m.KernelPath()); err != nil {
		return nil, fmt.Errorf("guest image in %s is incomplete (%v): run `coffer guest build`", dir, err)
	}
	st, err := os.Stat(m.InitrdPath())
	if err != nil {
		return nil, fmt.Errorf("guest image in %s is incomplete (%v): run `coffer guest build`", dir, err)
	}
	if st.Size() != m.Initrd.Size {
		return nil, fmt.Errorf("guest image in %s is inconsistent: %s is %d bytes, %s says %d: run `coffer guest build`", dir, m.Initrd.Path, st.Size(), ManifestFile, m.Initrd.Size)
	}
	return &m, nil
}

// Verify checks the kernel and initrd against the SHA-256 sums in m.
func Verify(m *Manifest) error {
	for _, f := range []struct{ path, want string }{{m.KernelPath(), m.Kernel.SHA256}, {m.InitrdPath(), m.Initrd.SHA256}} {
		got, _, err := sha256File(f.path)
		if err != nil {
			return fmt.Errorf("verifying guest image: %w: run `coffer guest build`", err)
		}
		if got != f.want {
			return fmt.Errorf("guest image file %s was modified after it was built (sha256 %s, %s says %s): run `coffer guest build` to rebuild it", f.path, got, ManifestFile, f.want)
		}
	}
	return nil
}

// sourceDateEpoch returns $SOURCE_DATE_EPOCH (the reproducible-builds
// convention) or 0.
func sourceDateEpoch() (int64, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > cpioMaxField {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a Unix time between 0 and %d: fix or unset it", s, int64(cpioMaxField))
	}
	return v, nil
}

// agentVersionFromBinary derives a version from the Go build information in
// the agent binary (so it is a function of the binary's bytes).
func agentVersionFromBinary(p string) string {
	bi, err := buildinfo.ReadFile(p)
	if err != nil {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" {
		v += "+" + rev[:min(12, len(rev))]
		if dirty {
			v += ".dirty"
		}
	}
	return v
}

// checkAgentBinary warns when the agent cannot work as PID 1 of an initrd
// that holds no C library or dynamic loader.
func checkAgentBinary(p string, log *slog.Logger) {
	f, err := elf.Open(p)
	if err != nil {
		log.Warn("coffer-agent is not an ELF executable; the guest will not boot", "path", p)
		return
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		log.Warn("coffer-agent is not an x86-64 binary; the guest will not boot", "path", p, "machine", f.Machine.String())
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			log.Warn("coffer-agent is dynamically linked; the initrd has no C library, build it with CGO_ENABLED=0", "path", p)
			return
		}
	}
}

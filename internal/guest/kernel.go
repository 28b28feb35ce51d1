package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// KernelMetaPackage is the Debian meta-package that points at the current
// cloud kernel. FetchKernel downloads it only to learn which versioned
// linux-image-<release> package to download.
const KernelMetaPackage = "linux-image-cloud-amd64"

// kernelMarker is written into an extracted kernel directory once it is
// complete; a directory without it is ignored.
const kernelMarker = ".coffer-kernel.json"

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	// Release is the kernel release (uname -r), e.g. "6.1.0-56-cloud-amd64".
	Release string
	// Package and PackageVersion name the Debian package it came from.
	// PackageVersion is empty for a kernel directory of unknown origin.
	Package        string
	PackageVersion string
	// VmlinuzPath is the kernel image; ModulesDir is lib/modules/<Release>.
	VmlinuzPath string
	ModulesDir  string
}

// kernelMeta is the content of the kernelMarker file and of current.json.
type kernelMeta struct {
	Release        string `json:"release"`
	Package        string `json:"package"`
	PackageVersion string `json:"package_version"`
	DebSHA256      string `json:"deb_sha256,omitempty"`
}

// FetchOption adjusts FetchKernel.
type FetchOption func(*fetchOptions)

type fetchOptions struct {
	deb     string
	refresh bool
	aptGet  string // command names; tests substitute fakes
	dpkgDeb string
}

// WithKernelDeb makes FetchKernel unpack the given versioned
// linux-image-<release> .deb instead of asking apt (offline use).
func WithKernelDeb(path string) FetchOption {
	return func(o *fetchOptions) { o.deb = path }
}

// WithRefresh makes FetchKernel download and unpack the kernel again even
// when a complete copy is cached.
func WithRefresh(refresh bool) FetchOption {
	return func(o *fetchOptions) { o.refresh = refresh }
}

// withTools substitutes the apt-get and dpkg-deb commands (tests).
func withTools(aptGet, dpkgDeb string) FetchOption {
	return func(o *fetchOptions) { o.aptGet, o.dpkgDeb = aptGet, dpkgDeb }
}

// FetchKernel makes sure an unpacked Debian cloud kernel is in
// <cacheDir>/kernel/<release>/ and returns it. Without options it reuses the
// kernel recorded in <cacheDir>/kernel/current.json when that copy is
// complete (no network); otherwise it runs `apt-get download` for
// KernelMetaPackage, reads its Depends to find the versioned package,
// downloads that and unpacks it with `dpkg-deb -x`. Nothing is installed on
// the host.
func FetchKernel(ctx context.Context, cacheDir string, log *slog.Logger, opts ...FetchOption) (*Kernel, error) {
	o := fetchOptions{aptGet: "apt-get", dpkgDeb: "dpkg-deb"}
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cacheDir == "" {
		return nil, errors.New("fetching guest kernel: empty cache directory")
	}
	kdir := filepath.Join(cacheDir, "kernel")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, fmt.Errorf("creating kernel cache %s: %w", kdir, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(kdir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	removeStale(kdir, log)

	if o.deb != "" {
		return fetchFromDeb(ctx, kdir, o.deb, o, log)
	}
	if !o.refresh {
		if cur, err := readKernelMeta(filepath.Join(kdir, "current.json")); err == nil {
			k, err := openCachedKernel(kdir, cur.Release)
			if err == nil {
				log.Debug("using cached guest kernel", "release", k.Release, "dir", filepath.Join(kdir, k.Release))
				return k, nil
			}
			log.Info("cached guest kernel unusable, fetching again", "err", err)
		}
	}

	tmp, err := os.MkdirTemp(kdir, ".download-")
	if err != nil {
		return nil, fmt.Errorf("creating download directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	log.Info("downloading guest kernel meta-package", "package", KernelMetaPackage)
	meta, err := aptDownload(ctx, o, filepath.Join(tmp, "meta"), KernelMetaPackage)
	if err != nil {
		return nil, err
	}
	f, err := debFields(ctx, o, meta)
	if err != nil {
		return nil, err
	}
	pkg, ver, err := kernelPackageFromDepends(f["Depends"])
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", KernelMetaPackage, f["Version"], err)
	}
	release, err := releaseFromPackage(pkg)
	if err != nil {
		return nil, err
	}
	if !o.refresh {
		if k, err := openCachedKernel(kdir, release); err == nil && (ver == "" || k.PackageVersion == ver) {
			log.Info("guest kernel already unpacked", "release", release)
			if err := writeCurrent(kdir, k); err != nil {
				return nil, err
			}
			return k, nil
		}
	}
	spec := pkg
	if ver != "" {
		spec = pkg + "=" + ver
	}
	log.Info("downloading guest kernel", "package", spec)
	deb, err := aptDownload(ctx, o, filepath.Join(tmp, "kernel"), spec)
	if err != nil {
		return nil, err
	}
	info, err := inspectDeb(ctx, o, deb)
	if err != nil {
		return nil, err
	}
	if info.Package != pkg {
		return nil, fmt.Errorf("`apt-get download %s` produced package %q", spec, info.Package)
	}
	return unpackKernelDeb(ctx, kdir, deb, info, o, log)
}

func fetchFromDeb(ctx context.Context, kdir, deb string, o fetchOptions, log *slog.Logger) (*Kernel, error) {
	if _, err := os.Stat(deb); err != nil {
		return nil, fmt.Errorf("kernel package %s: %w", deb, err)
	}
	info, err := inspectDeb(ctx, o, deb)
	if err != nil {
		return nil, err
	}
	if !o.refresh {
		if m, err := readKernelMeta(filepath.Join(kdir, info.Release, kernelMarker)); err == nil && m.DebSHA256 == info.DebSHA256 {
			if k, err := openCachedKernel(kdir, info.Release); err == nil {
				log.Debug("kernel package already unpacked", "deb", deb, "release", info.Release)
				return k, writeCurrent(kdir, k)
			}
		}
	}
	return unpackKernelDeb(ctx, kdir, deb, info, o, log)
}

// inspectDeb reads the package name and version of a kernel .deb and hashes
// it.
func inspectDeb(ctx context.Context, o fetchOptions, deb string) (*kernelMeta, error) {
	f, err := debFields(ctx, o, deb)
	if err != nil {
		return nil, err
	}
	release, err := releaseFromPackage(f["Package"])
	if err != nil {
		return nil, fmt.Errorf("kernel package %s: %w", deb, err)
	}
	sum, _, err := sha256File(deb)
	if err != nil {
		return nil, err
	}
	return &kernelMeta{Release: release, Package: f["Package"], PackageVersion: f["Version"], DebSHA256: sum}, nil
}

// unpackKernelDeb extracts deb into a staging directory next to its final
// place, checks it, writes the completion marker, then swaps it in.
func unpackKernelDeb(ctx context.Context, kdir, deb string, info *kernelMeta, o fetchOptions, log *slog.Logger) (*Kernel, error) {
	release := info.Release
	staging, err := os.MkdirTemp(kdir, ".extract-")
	if err != nil {
		return nil, fmt.Errorf("creating staging directory: %w", err)
	}
	defer os.RemoveAll(staging) // no-op once renamed
	if err := os.Chmod(staging, 0o755); err != nil {
		return nil, err
	}
	log.Info("unpacking guest kernel", "deb", deb, "release", release)
	if _, err := runTool(ctx, "", o.dpkgDeb, "-x", deb, staging); err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", deb, err)
	}
	if _, err := kernelAt(staging, release); err != nil {
		return nil, fmt.Errorf("kernel package %s: %w", deb, err)
	}
	if err := writeJSONAtomic(staging, kernelMarker, info); err != nil {
		return nil, err
	}
	final := filepath.Join(kdir, release)
	var old string
	if _, err := os.Lstat(final); err == nil {
		old = staging + ".old"
		if err := os.Rename(final, old); err != nil {
			return nil, fmt.Errorf("replacing cached kernel %s: %w", final, err)
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(staging, final); err != nil {
		return nil, fmt.Errorf("installing kernel into cache %s: %w", final, err)
	}
	k, err := openCachedKernel(kdir, release)
	if err != nil {
		return nil, err
	}
	return k, writeCurrent(kdir, k)
}

// removeStale deletes download and staging directories left behind by an
// interrupted FetchKernel (the caller holds the kernel cache lock).
func removeStale(kdir string, log *slog.Logger) {
	ents, err := os.ReadDir(kdir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".download-") || strings.HasPrefix(e.Name(), ".extract-") {
			p := filepath.Join(kdir, e.Name())
			log.Debug("removing leftover from an interrupted kernel fetch", "path", p)
			os.RemoveAll(p)
		}
	}
}

// openCachedKernel opens <kdir>/<release> if its completion marker exists.
func openCachedKernel(kdir, release string) (*Kernel, error) {
	if release == "" || strings.ContainsAny(release, `/\`) || release == "." || release == ".." {
		return nil, fmt.Errorf("invalid kernel release %q in cache %s", release, kdir)
	}
	root := filepath.Join(kdir, release)
	m, err := readKernelMeta(filepath.Join(root, kernelMarker))
	if err != nil {
		return nil, fmt.Errorf("kernel cache %s is incomplete: %w", root, err)
	}
	if m.Release != release {
		return nil, fmt.Errorf("kernel cache %s holds release %q", root, m.Release)
	}
	k, err := kernelAt(root, release)
	if err != nil {
		return nil, err
	}
	k.Package, k.PackageVersion = m.Package, m.PackageVersion
	return k, nil
}

// OpenKernelDir opens an already-extracted kernel package: a directory
// holding boot/vmlinuz-<release> and lib/modules/<release>/ (or
// usr/lib/modules/<release>/), such as the output of `dpkg-deb -x`. When the
// directory came from FetchKernel its package name and version are known;
// otherwise Package is "linux-image-<release>" and PackageVersion is empty.
func OpenKernelDir(root string) (*Kernel, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	var releases []string
	for _, md := range []string{"lib/modules", "usr/lib/modules"} {
		ents, err := os.ReadDir(filepath.Join(abs, md))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(abs, "boot", "vmlinuz-"+e.Name())); err == nil && !slices.Contains(releases, e.Name()) {
				releases = append(releases, e.Name())
			}
		}
	}
	switch len(releases) {
	case 0:
		return nil, fmt.Errorf("no kernel found in %s: expected boot/vmlinuz-<release> and lib/modules/<release>/ as unpacked from a linux-image .deb (`dpkg-deb -x`)", abs)
	case 1:
	default:
		slices.Sort(releases)
		return nil, fmt.Errorf("several kernels found in %s (%s): point at a directory holding exactly one", abs, strings.Join(releases, ", "))
	}
	k, err := kernelAt(abs, releases[0])
	if err != nil {
		return nil, err
	}
	if m, err := readKernelMeta(filepath.Join(abs, kernelMarker)); err == nil && m.Release == k.Release {
		k.Package, k.PackageVersion = m.Package, m.PackageVersion
	}
	return k, nil
}

// kernelAt checks that root holds the kernel image and modules of release.
func kernelAt(root, release string) (*Kernel, error) {
	k := &Kernel{Release: release, Package: "linux-image-" + release}
	k.VmlinuzPath = filepath.Join(root, "boot", "vmlinuz-"+release)
	if st, err := os.Stat(k.VmlinuzPath); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("kernel image boot/vmlinuz-%s missing in %s: not a linux-image package for release %s", release, root, release)
	}
	for _, md := range []string{"lib/modules", "usr/lib/modules"} {
		d := filepath.Join(root, md, release)
		if st, err := os.Stat(filepath.Join(d, "kernel")); err == nil && st.IsDir() {
			k.ModulesDir = d
			return k, nil
		}
	}
	return nil, fmt.Errorf("kernel modules lib/modules/%s/kernel missing in %s: not a linux-image package for release %s", release, root, release)
}

// releaseFromPackage maps "linux-image-6.1.0-56-cloud-amd64" (or its
// "-unsigned" variant) to "6.1.0-56-cloud-amd64".
func releaseFromPackage(pkg string) (string, error) {
	rel, ok := strings.CutPrefix(pkg, "linux-image-")
	rel = strings.TrimSuffix(rel, "-unsigned")
	if !ok || rel == "" || rel[0] < '0' || rel[0] > '9' || strings.ContainsAny(rel, `/\ `) {
		return "", fmt.Errorf("package %q is not a versioned kernel image package (want linux-image-<release>, e.g. linux-image-6.1.0-56-cloud-amd64; the meta-package %s holds no kernel)", pkg, KernelMetaPackage)
	}
	return rel, nil
}

// kernelPackageFromDepends picks the versioned kernel image package out of a
// meta-package's Depends field, e.g.
// "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)".
func kernelPackageFromDepends(depends string) (pkg, version string, err error) {
	for _, dep := range strings.Split(depends, ",") {
		for _, alt := range strings.Split(dep, "|") {
			alt = strings.TrimSpace(alt)
			name, constraint, _ := strings.Cut(alt, " ")
			name, _, _ = strings.Cut(name, ":") // arch qualifier
			if _, err := releaseFromPackage(name); err != nil {
				continue
			}
			constraint = strings.TrimSpace(constraint)
			if v, ok := strings.CutPrefix(constraint, "(="); ok {
				version = strings.TrimSpace(strings.TrimSuffix(v, ")"))
			}
			return name, version, nil
		}
	}
	return "", "", fmt.Errorf("no linux-image-<release> package in Depends %q", depends)
}

// aptDownload runs `apt-get download spec` in a fresh directory dir and
// returns the path of the single .deb it produced.
func aptDownload(ctx context.Context, o fetchOptions, dir, spec string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if _, err := runTool(ctx, dir, o.aptGet, "download", spec); err != nil {
		return "", fmt.Errorf("downloading the guest kernel with `apt-get download %s` failed: %w\n"+
			"Run `apt-get update` (scripts/setup.sh does this) and check that a Debian mirror is reachable, "+
			"or pass a downloaded linux-image-<release>-cloud-amd64 .deb with --kernel-deb", spec, err)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("`apt-get download %s` produced %d .deb files in %s, want 1", spec, len(debs), dir)
	}
	return debs[0], nil
}

// debFields reads the control fields of a .deb with `dpkg-deb -f`.
func debFields(ctx context.Context, o fetchOptions, deb string) (map[string]string, error) {
	out, err := runTool(ctx, "", o.dpkgDeb, "-f", deb)
	if err != nil {
		return nil, fmt.Errorf("reading control fields of %s: %w", deb, err)
	}
	fields := map[string]string{}
	var last string
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last != "" {
				fields[last] += "\n" + strings.TrimSpace(line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		last = strings.TrimSpace(k)
		fields[last] = strings.TrimSpace(v)
	}
	if fields["Package"] == "" {
		return nil, fmt.Errorf("%s is not a Debian package (no Package field)", deb)
	}
	return fields, nil
}

// runTool runs an external command and returns its stdout. The error names
// the command and carries the tail of its stderr.
func runTool(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%s not found: the guest kernel is fetched with Debian's apt-get and dpkg-deb; on a non-Debian host pass an already-unpacked kernel directory: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		if msg != "" {
			return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return nil, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.Bytes(), nil
}

func readKernelMeta(p string) (*kernelMeta, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var m kernelMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if m.Release == "" {
		return nil, fmt.Errorf("%s: no release recorded", p)
	}
	return &m, nil
}

func writeCurrent(kdir string, k *Kernel) error {
	return writeJSONAtomic(kdir, "current.json", kernelMeta{Release: k.Release, Package: k.Package, PackageVersion: k.PackageVersion})
}

func writeJSONAtomic(dir, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, _, err = writeFileAtomic(dir, name, 0o644, func(w *countingHashWriter) error {
		_, err := w.Write(b)
		return err
	})
	return err
}

// errNotExist reports whether err means "file does not exist".
func errNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

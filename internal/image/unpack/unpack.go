package unpack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnsafe marks a layer refused because it tries something no honest
// layer needs (path traversal, links out of the root, duplicates).
var ErrUnsafe = errors.New("unsafe layer")

// ErrLimit marks a layer refused because it exceeds a configured limit.
var ErrLimit = errors.New("layer exceeds a limit")

// Limits bound what one layer (and one image) may make. Zero fields take
// the DefaultLimits value.
type Limits struct {
	MaxLayerBytes int64 // uncompressed tar stream of one layer, headers included
	MaxTotalBytes int64 // uncompressed tar streams of all layers applied by one Unpacker
	MaxFileBytes  int64 // one regular file
	MaxEntries    int   // entries in one layer
	MaxPathLen    int   // entry names and hardlink targets
	MaxLinkTarget int   // symlink targets
	MaxXattrBytes int   // all xattr names and values of one entry
}

// DefaultLimits are generous for real images and still bound a hostile one.
func DefaultLimits() Limits {
	return Limits{
		MaxLayerBytes: 16 << 30,
		MaxTotalBytes: 64 << 30,
		MaxFileBytes:  8 << 30,
		MaxEntries:    1 << 20,
		MaxPathLen:    4096,
		MaxLinkTarget: 4096,
		MaxXattrBytes: 1 << 20,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	OrDefault(&l.MaxLayerBytes, d.MaxLayerBytes)
	OrDefault(&l.MaxTotalBytes, d.MaxTotalBytes)
	OrDefault(&l.MaxFileBytes, d.MaxFileBytes)
	OrDefault(&l.MaxEntries, d.MaxEntries)
	OrDefault(&l.MaxPathLen, d.MaxPathLen)
	OrDefault(&l.MaxLinkTarget, d.MaxLinkTarget)
	OrDefault(&l.MaxXattrBytes, d.MaxXattrBytes)
	return l
}

// OrDefault sets a zero or negative limit to its default.
func OrDefault[T int | int64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Options configure an Unpacker.
type Options struct {
	Limits Limits
	// Root applies ownership and creates device nodes. Default: true when
	// the process runs as uid 0. Without it ownership is ignored, device
	// nodes are skipped and directories stay writable by their owner.
	Root   *bool
	Logger *slog.Logger
}

// Stats describe one applied layer.
type Stats struct {
	Bytes          int64 // uncompressed tar bytes read
	Entries        int
	SkippedDevices int // device nodes not created (not root)
}

// Unpacker applies layers, in order, to one root directory.
type Unpacker struct {
	rootFD int
	root   string
	limits Limits
	asRoot bool
	log    *slog.Logger
	total  int64 // tar bytes read, all layers
	// written counts file bytes written, all layers.
	written int64
	// linkWalk counts checkLinks' steps, all layers (maxLinkWalk).
	linkWalk int
	buf      []byte
}

// Open prepares to unpack into dir, which must exist (normally an empty
// staging directory).
func Open(dir string, o Options) (*Unpacker, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open unpack root %s: %w", dir, err)
	}
	// Probe openat2 once so an old kernel gives one clear error.
	probe, err := openat2(fd, ".", &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags})
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("safe unpack needs openat2 (Linux 5.6 or newer): %w", err)
		}
		return nil, fmt.Errorf("openat2 on %s: %w", dir, err)
	}
	unix.Close(probe)
	asRoot := os.Geteuid() == 0
	if o.Root != nil {
		asRoot = *o.Root
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Unpacker{rootFD: fd, root: dir, limits: o.Limits.withDefaults(), asRoot: asRoot, log: log, buf: make([]byte, 256<<10)}, nil
}

// Close releases the root directory descriptor.
func (u *Unpacker) Close() error {
	if u.rootFD < 0 {
		return nil
	}
	err := unix.Close(u.rootFD)
	u.rootFD = -1
	return err
}

const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// countingReader counts bytes and refuses to read past a limit.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
	what  string
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		// One more byte would exceed the limit: is there one?
		var b [1]byte
		if n, _ := c.r.Read(b[:]); n > 0 {
			return 0, fmt.Errorf("%w: %s is larger than %d bytes (decompression bomb?); raise the limit if the image is legitimate", ErrLimit, c.what, c.limit)
		}
	}
	if int64(len(p)) > c.limit-c.n {
		p = p[:c.limit-c.n]
		if len(p) == 0 {
			return 0, io.EOF
		}
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// layerState is what Apply remembers while it reads one layer.
type layerState struct {
	seen     map[string]bool // entries made by this layer
	written  int64           // file bytes written
	dirTimes []dirTime
}

type dirTime struct {
	name string
	ts   [2]unix.Timespec
}

// Apply reads one uncompressed layer tar from r and applies it. On error
// the root directory is in an undefined state: discard it.
func (u *Unpacker) Apply(ctx context.Context, r io.Reader) (st Stats, err error) {
	limit := min(u.limits.MaxLayerBytes, u.limits.MaxTotalBytes-u.total)
	what := "layer"
	if limit < u.limits.MaxLayerBytes {
		what = "the image (all layers)"
	}
	cr := &countingReader{r: r, limit: limit, what: what}
	defer func() { u.total += cr.n; st.Bytes = cr.n }()
	tr := tar.NewReader(cr)
	ls := &layerState{seen: map[string]bool{}}
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, ErrLimit) {
				return st, err
			}
			return st, fmt.Errorf("read layer tar (entry %d): %w", st.Entries+1, err)
		}
		st.Entries++
		if st.Entries > u.limits.MaxEntries {
			return st, fmt.Errorf("%w: more than %d entries in one layer", ErrLimit, u.limits.MaxEntries)
		}
		skipped, err := u.entry(ls, hdr, tr)
		if err != nil {
			return st, fmt.Errorf("entry %q: %w", clip(hdr.Name), err)
		}
		if skipped {
			st.SkippedDevices++
		}
	}
	// Directory times last, deepest first: making children changes them.
	for i := len(ls.dirTimes) - 1; i >= 0; i-- {
		dt := ls.dirTimes[i]
		if err := u.withParent(dt.name, false, func(pfd int, base string) error {
			return unix.UtimesNanoAt(pfd, base, dt.ts[:], unix.AT_SYMLINK_NOFOLLOW)
		}); err != nil {
			return st, fmt.Errorf("set times of %q: %w", dt.name, err)
		}
	}
	return st, nil
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// CleanName checks a tar entry name and returns it relative to the root,
// without "./" or trailing "/" ("." for the root itself).
func CleanName(name string, maxLen int) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty entry name", ErrUnsafe)
	}
	if len(name) > maxLen {
		return "", fmt.Errorf("%w: name is longer than %d bytes", ErrLimit, maxLen)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL byte in name", ErrUnsafe)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute path", ErrUnsafe)
	}
	parts := strings.Split(name, "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("%w: \"..\" in path", ErrUnsafe)
		}
		if len(p) > 255 {
			return "", fmt.Errorf("%w: path component longer than 255 bytes", ErrLimit)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return ".", nil
	}
	return strings.Join(out, "/"), nil
}

const (
	whPrefix = ".wh."
	whOpaque = ".wh..wh..opq"
)

// entry applies one tar header. It reports whether a device node was skipped.
func (u *Unpacker) entry(ls *layerState, hdr *tar.Header, tr io.Reader) (bool, error) {
	name, err := CleanName(hdr.Name, u.limits.MaxPathLen)
	if err != nil {
		return false, err
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if strings.HasPrefix(base, whPrefix) {
		return false, u.whiteout(ls, dir, base)
	}
	if ls.seen[name] {
		return false, fmt.Errorf("%w: duplicate entry in one layer", ErrUnsafe)
	}
	ls.seen[name] = true
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return false, fmt.Errorf("%w: the root must be a directory", ErrUnsafe)
		}
		return false, u.setMeta(u.rootFD, hdr, true)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeChar, tar.TypeBlock, tar.TypeFifo, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeGNUSparse: // archive/tar expands sparse files; treat as regular
	default:
		return false, fmt.Errorf("%w: unsupported entry type %q", ErrUnsafe, hdr.Typeflag)
	}
	if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeGNUSparse {
		if hdr.Size > u.limits.MaxFileBytes {
			return false, fmt.Errorf("%w: file of %d bytes is larger than %d", ErrLimit, hdr.Size, u.limits.MaxFileBytes)
		}
		// Sparse entries expand beyond the bytes read: count what is written.
		ls.written += hdr.Size
		u.written += hdr.Size
		if ls.written > u.limits.MaxLayerBytes || u.written > u.limits.MaxTotalBytes {
			return false, fmt.Errorf("%w: the layer's files expand to more than %d bytes (image: %d; sparse-file bomb?)", ErrLimit, u.limits.MaxLayerBytes, u.limits.MaxTotalBytes)
		}
	}
	skipped := false
	err = u.withParent(name, true, func(pfd int, base string) error {
		var err error
		skipped, err = u.create(ls, pfd, name, base, hdr, tr)
		return err
	})
	return skipped, err
}

// withParent opens the parent directory of name inside the root (creating
// missing directories when mkdir is set) and calls fn with it.
func (u *Unpacker) withParent(name string, mkdir bool, fn func(pfd int, base string) error) error {
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	pfd, err := u.openDir(dir, mkdir)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	return fn(pfd, base)
}

// openDir resolves dir inside the root (symlinks confined to it). A
// path that goes through a symlink whose relative target climbs above the
// root is refused (ErrUnsafe) before anything is opened or made.
func (u *Unpacker) openDir(dir string, mkdir bool) (int, error) {
	// Fast path: no symlink on the way, nothing to check.
	fd, err := openat2(u.rootFD, dir, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags | unix.RESOLVE_NO_SYMLINKS})
	if err == nil {
		return fd, nil
	}
	if err := u.checkLinks(dir); err != nil {
		return -1, err
	}
	how := &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags}
	fd, err = openat2(u.rootFD, dir, how)
	if err == nil || !mkdir || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return -1, fmt.Errorf("open parent directory %q: %w", dir, err)
		}
		return fd, nil
	}
	// Make the missing directories one component at a time.
	cur := "."
	for _, c := range strings.Split(dir, "/") {
		next := path.Join(cur, c)
		fd, err := openat2(u.rootFD, next, how)
		if errors.Is(err, unix.ENOENT) {
			pfd, perr := openat2(u.rootFD, cur, how)
			if perr != nil {
				return -1, fmt.Errorf("open parent directory %q: %w", cur, perr)
			}
			err = unix.Mkdirat(pfd, c, 0o755)
			unix.Close(pfd)
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return -1, fmt.Errorf("create parent directory %q: %w", next, err)
			}
			fd, err = openat2(u.rootFD, next, how)
		}
		if err != nil {
			return -1, fmt.Errorf("open parent directory %q: %w", next, err)
		}
		if next == dir {
			return fd, nil
		}
		unix.Close(fd)
		cur = next
	}
	return -1, fmt.Errorf("open parent directory %q: not reached", dir)
}

// openat2 is unix.Openat2, retried when the kernel answers EAGAIN: with
// RESOLVE_IN_ROOT it does when a rename anywhere on the system races with
// the resolution of a path holding "..", and asks the caller to retry.
func openat2(dfd int, path string, how *unix.OpenHow) (int, error) {
	for try := 0; ; try++ {
		fd, err := unix.Openat2(dfd, path, how)
		if err != unix.EAGAIN || try == 16 {
			return fd, err
		}
	}
}

// maxLinkWalk bounds the path components checkLinks visits in one unpack
// (all layers): a hostile layer could otherwise make every entry resolve
// through long chains of long symlinks. An image's legitimate writes
// through symlinks take a few components each.
const maxLinkWalk = 1 << 20

// MaxSymlinkHops bounds the symlinks followed to resolve one path, as
// the kernel's MAXSYMLINKS does.
const MaxSymlinkHops = 40

// pathPart is one component still to resolve and, when it comes from a
// symlink's target, that symlink.
type pathPart struct {
	name string
	via  *linkRef
}

// linkRef is a symlink met while resolving: its path inside the root
// (symlinks resolved) and its target.
type linkRef struct {
	path, target string
}

// checkLinks resolves dir inside the root the way openat2(RESOLVE_IN_ROOT)
// does, one component at a time without following anything, and refuses
// (ErrUnsafe) a path that goes through a symlink whose relative target
// climbs above the root ("../../etc" from a directory one level deep):
// RESOLVE_IN_ROOT would confine such a write, but a layer that tries one is
// hostile. Absolute targets ("/run", "/usr/lib") resolve from the root, as
// the container sees them. A missing or non-directory component ends the
// walk: the open that follows reports it. The root is a staging directory
// only this Unpacker changes, so nothing moves between this walk and the
// open.
func (u *Unpacker) checkLinks(dir string) error {
	var todo []pathPart // a stack: the next component is last
	push := func(p string, via *linkRef) {
		parts := strings.Split(p, "/")
		for i := len(parts) - 1; i >= 0; i-- {
			todo = append(todo, pathPart{name: parts[i], via: via})
		}
	}
	push(dir, nil)
	var at []string // real directories from the root to where the walk is
	hops := 0
	for len(todo) > 0 {
		c := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if u.linkWalk++; u.linkWalk > maxLinkWalk {
			return fmt.Errorf("%w: the layers resolve paths through symlinks more than %d steps in all", ErrUnsafe, maxLinkWalk)
		}
		switch c.name {
		case "", ".":
			continue
		case "..":
			if len(at) > 0 {
				at = at[:len(at)-1]
				continue
			}
			if c.via != nil && !strings.HasPrefix(c.via.target, "/") {
				return fmt.Errorf("%w: the path resolves through symlink %q -> %q, which points outside the rootfs", ErrUnsafe, clip(c.via.path), clip(c.via.target))
			}
			continue // ".." of "/" is "/" (an absolute target)
		}
		p := strings.Join(append(at, c.name), "/")
		var st unix.Stat_t
		if err := unix.Fstatat(u.rootFD, p, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				return nil // the open that follows reports it
			}
			return fmt.Errorf("%w: resolve %q: %w", ErrUnsafe, clip(p), err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			at = append(at, c.name)
		case unix.S_IFLNK:
			hops++
			if hops > MaxSymlinkHops {
				return fmt.Errorf("%w: the path resolves through more than %d symlinks (a loop?): %w", ErrUnsafe, MaxSymlinkHops, unix.ELOOP)
			}
			target, err := readlinkAt(u.rootFD, p)
			if err != nil {
				return fmt.Errorf("read symlink %q: %w", clip(p), err)
			}
			if strings.HasPrefix(target, "/") {
				at = at[:0]
			}
			push(target, &linkRef{path: p, target: target})
		default:
			return nil
		}
	}
	return nil
}

// readlinkAt reads the target of the symlink name in dfd.
func readlinkAt(dfd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		if len(buf) > 1<<16 {
			return "", fmt.Errorf("symlink target longer than %d bytes", len(buf))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// whiteout applies ".wh.NAME" or the opaque marker in dir.
func (u *Unpacker) whiteout(ls *layerState, dir, base string) error {
	if base == whOpaque {
		key := dir + "/" + whOpaque
		if ls.seen[key] {
			return fmt.Errorf("%w: duplicate entry in one layer", ErrUnsafe)
		}
		ls.seen[key] = true
		pfd, err := u.openDir(dir, true)
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		names, err := readNames(pfd)
		if err != nil {
			return fmt.Errorf("read opaque directory: %w", err)
		}
		for _, n := range names {
			if ls.seen[joinRel(dir, n)] {
				continue // made by this layer: stays
			}
			if err := removeAllAt(pfd, n); err != nil {
				return fmt.Errorf("opaque directory: remove %q: %w", n, err)
			}
		}
		return nil
	}
	target := strings.TrimPrefix(base, whPrefix)
	if target == "" || target == "." || target == ".." || strings.HasPrefix(target, whPrefix) {
		return fmt.Errorf("%w: bad whiteout name", ErrUnsafe)
	}
	rel := joinRel(dir, target)
	key := joinRel(dir, base)
	if ls.seen[key] {
		return fmt.Errorf("%w: duplicate entry in one layer", ErrUnsafe)
	}
	ls.seen[key] = true
	if ls.seen[rel] {
		return nil // whiteouts hide lower layers only
	}
	pfd, err := u.openDir(dir, false)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil // nothing to hide
	}
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := removeAllAt(pfd, target); err != nil {
		return fmt.Errorf("whiteout: remove %q: %w", rel, err)
	}
	return nil
}

func joinRel(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// create makes one entry named base in the directory pfd.
func (u *Unpacker) create(ls *layerState, pfd int, name, base string, hdr *tar.Header, tr io.Reader) (bool, error) {
	var existing unix.Stat_t
	exists := unix.Fstatat(pfd, base, &existing, unix.AT_SYMLINK_NOFOLLOW) == nil
	if exists && !(hdr.Typeflag == tar.TypeDir && existing.Mode&unix.S_IFMT == unix.S_IFDIR) {
		if err := removeAllAt(pfd, base); err != nil {
			return false, fmt.Errorf("replace existing entry: %w", err)
		}
		exists = false
	}
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !exists {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return false, fmt.Errorf("mkdir: %w", err)
			}
		}
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, fmt.Errorf("open directory: %w", err)
		}
		defer unix.Close(fd)
		if err := u.setMeta(fd, hdr, true); err != nil {
			return false, err
		}
		ls.dirTimes = append(ls.dirTimes, dirTime{name: name, ts: times(hdr)})
		return false, nil
	case tar.TypeReg, tar.TypeGNUSparse:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return false, fmt.Errorf("create file: %w", err)
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		n, err := io.CopyBuffer(f, io.LimitReader(tr, hdr.Size), u.buf)
		if err != nil {
			return false, fmt.Errorf("write file: %w", err)
		}
		if n != hdr.Size {
			return false, fmt.Errorf("write file: short content (%d of %d bytes)", n, hdr.Size)
		}
		if err := u.setMeta(fd, hdr, false); err != nil {
			return false, err
		}
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > u.limits.MaxLinkTarget || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return false, fmt.Errorf("%w: bad symlink target (empty, NUL or longer than %d bytes)", ErrUnsafe, u.limits.MaxLinkTarget)
		}
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return false, fmt.Errorf("symlink: %w", err)
		}
		if u.asRoot {
			if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return false, fmt.Errorf("chown symlink: %w", err)
			}
		}
	case tar.TypeLink:
		if err := u.hardlink(pfd, name, base, hdr.Linkname); err != nil {
			return false, err
		}
		return false, nil // a hardlink shares the target's metadata
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := uint32(unix.S_IFIFO)
		if hdr.Typeflag != tar.TypeFifo {
			if !u.asRoot {
				u.log.Debug("device node skipped: not running as root", "entry", name)
				return true, nil
			}
			typ = unix.S_IFCHR
			if hdr.Typeflag == tar.TypeBlock {
				typ = unix.S_IFBLK
			}
		}
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor > 0xfffff {
			return false, fmt.Errorf("%w: bad device number %d:%d", ErrUnsafe, hdr.Devmajor, hdr.Devminor)
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(pfd, base, typ|0o600, int(dev)); err != nil {
			return false, fmt.Errorf("mknod: %w", err)
		}
		if u.asRoot {
			if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return false, fmt.Errorf("chown: %w", err)
			}
		}
		// base is the node just made (not a symlink): chmod may follow it.
		if err := unix.Fchmodat(pfd, base, u.fileMode(mode, false), 0); err != nil {
			return false, fmt.Errorf("chmod: %w", err)
		}
	}
	ts := times(hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, fmt.Errorf("set times: %w", err)
	}
	return false, nil
}

// hardlink links base (in pfd) to target, an entry already in the root.
func (u *Unpacker) hardlink(pfd int, name, base, linkname string) error {
	target, err := CleanName(linkname, u.limits.MaxPathLen)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", clip(linkname), err)
	}
	if target == "." || target == name {
		return fmt.Errorf("%w: hardlink to itself or to the root", ErrUnsafe)
	}
	opened := false
	err = u.withParent(target, false, func(tfd int, tbase string) error {
		opened = true
		var st unix.Stat_t
		if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%w: hardlink target %q is not in the image: %v", ErrUnsafe, clip(linkname), err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("%w: hardlink to a directory", ErrUnsafe)
		}
		// flags 0: a symlink target is linked itself, never followed.
		if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
			return fmt.Errorf("hardlink to %q: %w", clip(linkname), err)
		}
		return nil
	})
	if !opened && errors.Is(err, ErrUnsafe) {
		return fmt.Errorf("hardlink target %q: %w", clip(linkname), err)
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%w: hardlink target %q is not in the image: %v", ErrUnsafe, clip(linkname), err)
	}
	return err
}

// fileMode is the mode to set; without root, directories stay usable.
func (u *Unpacker) fileMode(mode uint32, dir bool) uint32 {
	if !u.asRoot {
		mode &^= unix.S_ISUID | unix.S_ISGID
		if dir {
			mode |= 0o700
		}
	}
	return mode
}

// setMeta sets ownership, mode and xattrs through an open descriptor.
func (u *Unpacker) setMeta(fd int, hdr *tar.Header, dir bool) error {
	if u.asRoot {
		if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > 1<<32-2 || int64(hdr.Gid) > 1<<32-2 {
			return fmt.Errorf("%w: bad owner %d:%d", ErrUnsafe, hdr.Uid, hdr.Gid)
		}
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	// After chown, which clears setuid/setgid.
	if err := unix.Fchmod(fd, u.fileMode(uint32(hdr.Mode&0o7777), dir)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return u.setXattrs(fd, hdr)
}

const xattrPAX = "SCHILY.xattr."

func (u *Unpacker) setXattrs(fd int, hdr *tar.Header) error {
	var keys []string
	total := 0
	for k, v := range hdr.PAXRecords {
		if !strings.HasPrefix(k, xattrPAX) {
			continue
		}
		total += len(k) + len(v)
		keys = append(keys, k)
	}
	if total > u.limits.MaxXattrBytes {
		return fmt.Errorf("%w: xattrs of %d bytes (limit %d)", ErrLimit, total, u.limits.MaxXattrBytes)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := strings.TrimPrefix(k, xattrPAX)
		switch {
		case strings.HasPrefix(name, "user."), strings.HasPrefix(name, "security."), strings.HasPrefix(name, "trusted."):
		default:
			u.log.Debug("xattr skipped: namespace not allowed", "name", name)
			continue
		}
		err := unix.Fsetxattr(fd, name, []byte(hdr.PAXRecords[k]), 0)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EPERM) && !u.asRoot:
			u.log.Debug("xattr skipped", "name", name, "err", err)
		default:
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

func times(hdr *tar.Header) [2]unix.Timespec {
	m := hdr.ModTime
	a := hdr.AccessTime
	if a.IsZero() {
		a = m
	}
	return [2]unix.Timespec{unix.NsecToTimespec(a.UnixNano()), unix.NsecToTimespec(m.UnixNano())}
}

// readNames lists a directory given by descriptor (without closing it).
func readNames(dfd int) ([]string, error) {
	fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

// removeAllAt removes name in dfd and, if it is a directory, all it holds.
// It never follows symlinks.
func removeAllAt(dfd int, name string) error {
	err := unix.Unlinkat(dfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	for {
		names, err := readNames(fd)
		if err != nil {
			unix.Close(fd)
			return err
		}
		if len(names) == 0 {
			break
		}
		for _, n := range names {
			if err := removeAllAt(fd, n); err != nil {
				unix.Close(fd)
				return err
			}
		}
	}
	unix.Close(fd)
	return unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
}

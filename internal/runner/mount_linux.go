package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// secureJoin resolves unsafePath inside root the way the container would
// see it: symlinks are followed but can never escape root ("..", absolute
// links and link chains are all clamped to root). The result may name a
// path that does not exist yet.
func secureJoin(root, unsafePath string) (string, error) {
	const maxLinks = 255
	var resolved string // relative to root, always clean, never escaping
	rest := unsafePath
	links := 0
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(strings.TrimLeft(rest, "/"), "/")
		switch part {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir("/" + resolved)[1:]
			continue
		}
		next := filepath.Join(resolved, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				resolved = next
				continue
			}
			return "", fmt.Errorf("resolve %s in %s: %w", unsafePath, root, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		links++
		if links > maxLinks {
			return "", fmt.Errorf("resolve %s in %s: too many symlinks", unsafePath, root)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("resolve %s in %s: %w", unsafePath, root, err)
		}
		if filepath.IsAbs(target) {
			resolved = ""
		}
		rest = target + "/" + rest
	}
	return filepath.Join(root, resolved), nil
}

var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"nodiratime": {false, unix.MS_NODIRATIME}, "diratime": {true, unix.MS_NODIRATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "nostrictatime": {true, unix.MS_STRICTATIME},
	"mand": {false, unix.MS_MANDLOCK}, "nomand": {true, unix.MS_MANDLOCK},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"remount": {false, unix.MS_REMOUNT},
}

var propagationFlags = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// parseMountOptions splits OCI mount options into mount(2) flags,
// propagation flags and the filesystem data string.
func parseMountOptions(opts []string) (flags uintptr, prop []uintptr, data string) {
	var extra []string
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if p, ok := propagationFlags[o]; ok {
			prop = append(prop, p)
			continue
		}
		extra = append(extra, o)
	}
	return flags, prop, strings.Join(extra, ",")
}

// mountInRootfs performs one OCI mount below rootfs.
func mountInRootfs(rootfs string, m specs.Mount) error {
	dest, err := secureJoin(rootfs, m.Destination)
	if err != nil {
		return err
	}
	flags, prop, data := parseMountOptions(m.Options)
	typ := m.Type
	if typ == "cgroup" {
		typ = "cgroup2"
	}
	if typ == "bind" {
		flags |= unix.MS_BIND
	}
	if flags&unix.MS_BIND != 0 {
		fi, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("bind mount source %s for %s: %w", m.Source, m.Destination, err)
		}
		if err := makeTarget(dest, fi.IsDir()); err != nil {
			return err
		}
		if err := unix.Mount(m.Source, dest, "", flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
			return fmt.Errorf("bind mount %s on %s: %w", m.Source, m.Destination, err)
		}
		// Other flags (ro, nosuid, ...) only take effect on a remount.
		if rest := flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); rest != 0 {
			if err := unix.Mount("", dest, "", rest|unix.MS_BIND|unix.MS_REMOUNT, ""); err != nil {
				return fmt.Errorf("remount %s with options %v: %w", m.Destination, m.Options, err)
			}
		}
	} else {
		if err := makeTarget(dest, true); err != nil {
			return err
		}
		src := m.Source
		if src == "" {
			src = typ
		}
		if err := unix.Mount(src, dest, typ, flags, data); err != nil {
			return fmt.Errorf("mount %s (type %s, options %v) on %s: %w", src, typ, m.Options, m.Destination, err)
		}
	}
	for _, p := range prop {
		if err := unix.Mount("", dest, "", p, ""); err != nil {
			return fmt.Errorf("set propagation of %s: %w", m.Destination, err)
		}
	}
	return nil
}

func makeTarget(path string, dir bool) error {
	if dir {
		if err := os.MkdirAll(path, 0o755); err != nil {
			return fmt.Errorf("create mount point %s: %w", path, err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create mount point %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return fmt.Errorf("create mount point %s: %w", path, err)
	}
	return f.Close()
}

type devNode struct {
	path         string
	major, minor uint32
}

var defaultDevices = []devNode{
	{"/dev/null", 1, 3}, {"/dev/zero", 1, 5}, {"/dev/full", 1, 7},
	{"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0},
}

// setupDev fills a freshly mounted /dev tmpfs with the standard device
// nodes, the spec's devices and the usual symlinks.
func setupDev(rootfs string, devices []specs.LinuxDevice) error {
	old := unix.Umask(0)
	defer unix.Umask(old)
	mk := func(path string, typ uint32, major, minor uint32, mode os.FileMode, uid, gid uint32) error {
		dest, err := secureJoin(rootfs, path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
		}
		_ = os.Remove(dest)
		if err := unix.Mknod(dest, typ|uint32(mode.Perm()), int(unix.Mkdev(major, minor))); err != nil {
			return fmt.Errorf("create device %s: %w", path, err)
		}
		return os.Lchown(dest, int(uid), int(gid))
	}
	for _, d := range defaultDevices {
		if err := mk(d.path, unix.S_IFCHR, d.major, d.minor, 0o666, 0, 0); err != nil {
			return err
		}
	}
	for _, d := range devices {
		typ := uint32(unix.S_IFCHR)
		switch d.Type {
		case "b":
			typ = unix.S_IFBLK
		case "p":
			typ = unix.S_IFIFO
		case "c", "u":
		default:
			return fmt.Errorf("device %s: unknown type %q", d.Path, d.Type)
		}
		mode := os.FileMode(0o666)
		if d.FileMode != nil {
			mode = *d.FileMode
		}
		var uid, gid uint32
		if d.UID != nil {
			uid = *d.UID
		}
		if d.GID != nil {
			gid = *d.GID
		}
		if err := mk(d.Path, typ, uint32(d.Major), uint32(d.Minor), mode, uid, gid); err != nil {
			return err
		}
	}
	links := [][2]string{
		{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"},
		{"pts/ptmx", "/dev/ptmx"},
	}
	for _, l := range links {
		// Resolve the parent inside the rootfs; the link itself replaces
		// whatever is there (never followed).
		dir, err := secureJoin(rootfs, filepath.Dir(l[1]))
		if err != nil {
			return err
		}
		dest := filepath.Join(dir, filepath.Base(l[1]))
		_ = os.Remove(dest)
		if err := os.Symlink(l[0], dest); err != nil {
			return fmt.Errorf("create symlink %s: %w", l[1], err)
		}
	}
	return nil
}

// prepareRootfs runs in the container's new mount namespace: it mounts
// everything the spec asks for below rootfs and pivots into it.
func prepareRootfs(spec *specs.Spec, rootfs string) error {
	if _, err := mountAndPivot(spec, rootfs, false); err != nil {
		return err
	}
	return finishRootfs(spec)
}

// mountAndPivot performs the spec's mounts below rootfs, fills /dev and
// pivots into rootfs. With deferProc, proc filesystems are not mounted but
// returned (their mount points created), for the C stage to mount in the
// container's pid namespace.
func mountAndPivot(spec *specs.Spec, rootfs string, deferProc bool) ([]procMount, error) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return nil, fmt.Errorf("bind mount rootfs %s: %w", rootfs, err)
	}
	devMounted := false
	var procs []procMount
	for _, m := range spec.Mounts {
		if deferProc && m.Type == "proc" {
			pm, err := procMountPoint(rootfs, m)
			if err != nil {
				return nil, err
			}
			procs = append(procs, pm)
			continue
		}
		if err := mountInRootfs(rootfs, m); err != nil {
			return nil, err
		}
		if filepath.Clean(m.Destination) == "/dev" {
			devMounted = true
		}
	}
	if devMounted {
		var devs []specs.LinuxDevice
		if spec.Linux != nil {
			devs = spec.Linux.Devices
		}
		if err := setupDev(rootfs, devs); err != nil {
			return nil, err
		}
	}
	if err := pivotRoot(rootfs); err != nil {
		return nil, err
	}
	return procs, nil
}

// procMountPoint resolves and creates the mount point of a proc mount
// below rootfs; the returned Dest is the path inside the container.
func procMountPoint(rootfs string, m specs.Mount) (procMount, error) {
	dest, err := secureJoin(rootfs, m.Destination)
	if err != nil {
		return procMount{}, err
	}
	if err := makeTarget(dest, true); err != nil {
		return procMount{}, err
	}
	rel, err := filepath.Rel(rootfs, dest)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return procMount{}, fmt.Errorf("proc mount point %s resolves outside the rootfs", m.Destination)
	}
	flags, _, data := parseMountOptions(m.Options)
	return procMount{Dest: filepath.Join("/", rel), Flags: flags, Data: data}, nil
}

// finishRootfs runs after pivot_root (and the proc mounts): masked and
// read-only paths, and a read-only root.
func finishRootfs(spec *specs.Spec) error {
	if spec.Linux != nil {
		for _, p := range spec.Linux.MaskedPaths {
			if err := maskPath(p); err != nil {
				return err
			}
		}
		for _, p := range spec.Linux.ReadonlyPaths {
			if err := readonlyPath(p); err != nil {
				return err
			}
		}
	}
	if spec.Root != nil && spec.Root.Readonly {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("make rootfs read-only: %w", err)
		}
	}
	return nil
}

// pivotRoot makes rootfs the root of the mount namespace and detaches the
// old root, so nothing of the guest's filesystem stays reachable.
func pivotRoot(rootfs string) error {
	if err := unix.Chdir(rootfs); err != nil {
		return fmt.Errorf("chdir to rootfs: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root to %s: %w", rootfs, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir to new root: %w", err)
	}
	return nil
}

func maskPath(p string) error {
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	if fi.IsDir() {
		err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "size=0")
	} else {
		err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}

func readonlyPath(p string) error {
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("make %s read-only: %w", p, err)
	}
	if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", p, err)
	}
	return nil
}

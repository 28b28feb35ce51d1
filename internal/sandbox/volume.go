package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// SharedFSTag is the virtio-fs tag of a pod's shared directory; the agent
// mounts the same tag.
const SharedFSTag = "coffer"

// Volume is a host file or directory shared with a container.
type Volume struct {
	// Source is the absolute host path.
	Source string `json:"source"`
	// Destination is the absolute path in the container.
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"readonly,omitempty"`
	// NoRecursive shares only Source's own mount, not the mounts below
	// it (an OCI "bind" without "rbind").
	NoRecursive bool `json:"no_recursive,omitempty"`
}

// ParseVolume parses the CLI form HOSTPATH:CTRPATH[:ro|rw] and checks it
// (see Volume.Check).
func ParseVolume(s string) (Volume, error) {
	parts := strings.Split(s, ":")
	var v Volume
	switch len(parts) {
	case 2:
	case 3:
		switch parts[2] {
		case "ro":
			v.ReadOnly = true
		case "rw":
		default:
			return Volume{}, fmt.Errorf("volume %q: mode %q is not ro or rw", s, parts[2])
		}
	default:
		return Volume{}, fmt.Errorf("volume %q: use HOSTPATH:CTRPATH[:ro|rw] (paths cannot contain ':')", s)
	}
	v.Source, v.Destination = parts[0], parts[1]
	if err := v.Check(); err != nil {
		return Volume{}, err
	}
	return v, nil
}

// Check validates both paths: the source must be an absolute path to an
// existing directory or regular file, the destination an absolute
// container path other than "/" whose ".." elements stay inside the root.
func (v Volume) Check() error {
	if !filepath.IsAbs(v.Source) {
		return fmt.Errorf("volume source %q is not an absolute path: give the full host path (e.g. $PWD/%s)", v.Source, v.Source)
	}
	fi, err := os.Stat(v.Source)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("volume source %s does not exist: create it first (volumes are never created on the host)", v.Source)
		}
		return fmt.Errorf("volume source %s: %w", v.Source, err)
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		return fmt.Errorf("volume source %s is %s: only directories and regular files can be shared", v.Source, fileKind(fi.Mode()))
	}
	return CheckContainerPath(v.Destination)
}

// fileKind names a file type for error messages.
func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeDevice != 0:
		return "a device"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSymlink != 0:
		return "a symlink"
	}
	return "not a regular file"
}

// CheckContainerPath rejects container paths that are relative, the root
// itself, or climb out of the root with "..".
func CheckContainerPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("volume destination %q is not an absolute container path", p)
	}
	depth := 0
	for _, part := range strings.Split(p, "/") {
		switch part {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return fmt.Errorf("volume destination %q resolves outside the container's root filesystem", p)
			}
		default:
			depth++
		}
	}
	if depth == 0 {
		return fmt.Errorf("volume destination %q is the container's root: mount volumes below it", p)
	}
	return nil
}

// CheckVolumeTarget resolves dest inside the host rootfs directory the way
// the container will, and fails when a symlink on the way leads outside
// the rootfs (a relative link with too many ".."); an absolute link is
// relative to the container's root, as in the container. The guest clamps
// such paths anyway; this turns a silent surprise into an error.
func CheckVolumeTarget(rootfs, dest string) error {
	if err := CheckContainerPath(dest); err != nil {
		return err
	}
	const maxLinks = 40
	var resolved []string
	rest := strings.Split(strings.Trim(dest, "/"), "/")
	links := 0
	for len(rest) > 0 {
		part := rest[0]
		rest = rest[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			if len(resolved) == 0 {
				return fmt.Errorf("volume destination %s resolves outside the container's root filesystem", dest)
			}
			resolved = resolved[:len(resolved)-1]
			continue
		}
		next := append(slices.Clone(resolved), part)
		host := filepath.Join(append([]string{rootfs}, next...)...)
		fi, err := os.Lstat(host)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			// Missing parts are created in the container's writable
			// layer; nothing below them can be a link.
			resolved = next
			continue
		}
		if links++; links > maxLinks {
			return fmt.Errorf("volume destination %s: too many symlinks", dest)
		}
		target, err := os.Readlink(host)
		if err != nil {
			return fmt.Errorf("volume destination %s: %w", dest, err)
		}
		if strings.HasPrefix(target, "/") {
			resolved = nil
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	if len(resolved) == 0 {
		return fmt.Errorf("volume destination %s resolves to the container's root: mount volumes below it", dest)
	}
	return nil
}

// sharedName is the name of the i-th volume in a pod's shared directory.
func sharedName(i int) string { return fmt.Sprintf("v%d", i) }

// bindVolume mounts v.Source on target (an existing empty file or
// directory) as one detached copy of its mount tree, marked read-only
// (when asked), nosuid and nodev before it becomes visible: the guest
// never sees a writable moment of a read-only volume, nodev keeps
// virtiofsd from opening host devices through device nodes in the
// volume, and nosuid keeps set-id files in it from granting privileges
// on the host through this path.
func bindVolume(v Volume, target string) error {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	setattr := uint(unix.AT_EMPTY_PATH)
	if !v.NoRecursive {
		flags |= unix.AT_RECURSIVE
		setattr |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, v.Source, flags)
	if err != nil {
		return fmt.Errorf("bind volume %s: clone its mount: %w", v.Source, err)
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if v.ReadOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", setattr, attr); err != nil {
		return fmt.Errorf("bind volume %s: set mount attributes: %w", v.Source, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind volume %s on %s: %w", v.Source, target, err)
	}
	return nil
}

// makeMountPoint creates an empty directory or file at path.
func makeMountPoint(path string, dir bool) error {
	if dir {
		return os.Mkdir(path, 0o755)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// UnmountUnder detaches every mount at or below dir, deepest first, and
// fails if any is left: removing a directory with a volume still mounted
// in it would delete the volume's host files.
func UnmountUnder(dir string) error {
	dir = filepath.Clean(dir)
	// The mount table holds resolved paths: a symlink in dir (say a
	// runtime dir below a linked /tmp) must not hide the mounts.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	for range 3 {
		ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		if err != nil {
			return fmt.Errorf("read the mount table: %w", err)
		}
		if len(ms) == 0 {
			return nil
		}
		slices.SortFunc(ms, func(a, b *mountinfo.Info) int { return len(b.Mountpoint) - len(a.Mountpoint) })
		for _, m := range ms {
			if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m.Mountpoint, err)
			}
		}
	}
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); len(ms) > 0 {
		return fmt.Errorf("%s still has %d mounts below it (first: %s): not removing it", dir, len(ms), ms[0].Mountpoint)
	}
	return nil
}

// RemoveTree unmounts everything below dir, then removes it. Use it for
// every directory that may hold a pod's shared volumes.
func RemoveTree(dir string) error {
	if err := UnmountUnder(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// VolumeMount is the OCI mount that delivers a shared volume: type bind,
// its source the volume's name in the pod's share (the agent resolves it
// and refuses bind mounts of anything else).
func VolumeMount(name string, v Volume) specs.Mount {
	opts := []string{"rbind"}
	if v.NoRecursive {
		opts = []string{"bind"}
	}
	if v.ReadOnly {
		opts = append(opts, "ro")
	} else {
		opts = append(opts, "rw")
	}
	return specs.Mount{Destination: v.Destination, Type: "bind", Source: name, Options: opts}
}

// sharedFS is the host side of a pod's virtio-fs share:
//
//	<pod>/mounts  the host mounts each volume here (a shared mount, so
//	              mounts made after virtiofsd started reach it)
//	<pod>/shared  a read-only slave view of mounts/: what virtiofsd
//	              exports. Its root is read-only, so the guest cannot
//	              create, rename or replace the volumes' mount points;
//	              each volume keeps its own ro/rw flag.
type sharedFS struct {
	mounts, shared string
	vfsd           *virtiofsd

	mu     sync.Mutex
	next   int
	owners map[string]string // volume name → owner (container id)
}

// setupShare creates the two directories and their mounts below stateDir.
func setupShare(stateDir string) (_ *sharedFS, err error) {
	s := &sharedFS{mounts: filepath.Join(stateDir, "mounts"), shared: filepath.Join(stateDir, "shared"), owners: map[string]string{}}
	defer func() {
		if err != nil {
			_ = s.unmount()
		}
	}()
	for _, d := range []string{s.mounts, s.shared} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("create the pod's shared directory: %w", err)
		}
	}
	steps := []struct {
		src, target string
		flags       uintptr
	}{
		{s.mounts, s.mounts, unix.MS_BIND},
		{"", s.mounts, unix.MS_PRIVATE},
		{"", s.mounts, unix.MS_SHARED},
		{s.mounts, s.shared, unix.MS_BIND},
		{"", s.shared, unix.MS_SLAVE},
		{"", s.shared, unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV},
	}
	for _, st := range steps {
		if err := unix.Mount(st.src, st.target, "", st.flags, ""); err != nil {
			return nil, fmt.Errorf("set up the pod's shared directory (mount %s flags %#x): %w", st.target, st.flags, err)
		}
	}
	return s, nil
}

// add mounts v as a new volume owned by owner and returns its name.
func (s *sharedFS) add(owner string, v Volume) (string, error) {
	if err := v.Check(); err != nil {
		return "", err
	}
	fi, err := os.Stat(v.Source)
	if err != nil {
		return "", fmt.Errorf("volume source %s: %w", v.Source, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := sharedName(s.next)
	s.next++
	target := filepath.Join(s.mounts, name)
	if err := makeMountPoint(target, fi.IsDir()); err != nil {
		return "", fmt.Errorf("create the mount point of volume %s: %w", v.Source, err)
	}
	if err := bindVolume(v, target); err != nil {
		_ = os.Remove(target)
		return "", err
	}
	s.owners[name] = owner
	return name, nil
}

// release unmounts the volumes of owner.
func (s *sharedFS) release(owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for name, o := range s.owners {
		if o != owner {
			continue
		}
		target := filepath.Join(s.mounts, name)
		if err := UnmountUnder(target); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.owners, name)
		if err := os.Remove(target); err != nil {
			errs = append(errs, fmt.Errorf("remove the mount point of volume %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// unmount detaches every volume and both directories' mounts, then
// removes the (now empty) directories. os.Remove, never RemoveAll: if
// anything is still mounted the directory is not empty and stays.
func (s *sharedFS) unmount() error {
	if err := UnmountUnder(s.shared); err != nil {
		return err
	}
	if err := UnmountUnder(s.mounts); err != nil {
		return err
	}
	var errs []error
	entries, _ := os.ReadDir(s.mounts)
	for _, e := range entries {
		if err := os.Remove(filepath.Join(s.mounts, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range []string{s.mounts, s.shared} {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove the pod's shared directory: %w", err)
	}
	return nil
}

// close stops virtiofsd (the VM must be gone) and unmounts everything.
func (s *sharedFS) close(ctx context.Context) error {
	var errs []error
	if s.vfsd != nil {
		errs = append(errs, s.vfsd.Stop(ctx))
	}
	errs = append(errs, s.unmount())
	return errors.Join(errs...)
}

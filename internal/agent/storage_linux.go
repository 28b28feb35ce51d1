package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	storageRoot    = "/run/coffer/storage"
	containersRoot = "/run/coffer/containers"
)

// safeID reports whether s is a container, exec or disk identifier the
// agent accepts: they become path components and cgroup names. It is
// ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$, written out: a regexp compiled at
// package init costs every process started from the agent binary (the
// containers' init stages too) tens of milliseconds under TCG.
func safeID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func checkID(kind, id string) error {
	if !safeID(id) {
		return fmt.Errorf("invalid %s %q: use 1-128 letters, digits, '_', '.', '-'", kind, id)
	}
	return nil
}

// findDiskBySerial returns /dev/vdX for the virtio-blk disk whose serial
// is serial, waiting for it to appear until ctx is done.
func findDiskBySerial(ctx context.Context, serial string) (string, error) {
	for {
		matches, _ := filepath.Glob("/sys/block/*/serial")
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err == nil && strings.TrimSpace(string(b)) == serial {
				return "/dev/" + filepath.Base(filepath.Dir(m)), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no virtio-blk disk with serial %q in the guest: %w", serial, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// storageMounts mounts shared read-only disks once and counts their users.
type storageMounts struct {
	// ready, when set, blocks until the disk and filesystem drivers are
	// loaded (they load in the background at boot).
	ready  func(context.Context) error
	mu     sync.Mutex
	mounts map[string]*diskMount // by serial
}

type diskMount struct {
	path string
	refs int
}

func newStorageMounts() *storageMounts {
	return &storageMounts{mounts: map[string]*diskMount{}}
}

// acquire mounts the disk read-only (once) and returns its mount point.
func (s *storageMounts) acquire(ctx context.Context, serial, fstype string, options []string) (string, error) {
	if err := checkID("disk serial", serial); err != nil {
		return "", err
	}
	switch fstype {
	case "ext4", "erofs", "squashfs", "xfs":
	default:
		return "", fmt.Errorf("unsupported rootfs filesystem %q (want ext4 or erofs)", fstype)
	}
	if s.ready != nil {
		if err := s.ready(ctx); err != nil {
			return "", err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.mounts[serial]; ok {
		m.refs++
		return m.path, nil
	}
	dev, err := findDiskBySerial(ctx, serial)
	if err != nil {
		return "", err
	}
	target := filepath.Join(storageRoot, serial)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return "", err
	}
	data := strings.Join(options, ",")
	if fstype == "ext4" {
		// Never replay a journal or touch the disk in any way.
		data = strings.TrimPrefix(data+",noload", ",")
	}
	if err := unix.Mount(dev, target, fstype, unix.MS_RDONLY|unix.MS_NODEV, data); err != nil {
		_ = os.Remove(target)
		return "", fmt.Errorf("mount %s (%s, serial %s) read-only: %w", dev, fstype, serial, err)
	}
	s.mounts[serial] = &diskMount{path: target, refs: 1}
	return target, nil
}

// release drops one user and unmounts the disk after the last one.
func (s *storageMounts) release(serial string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.mounts[serial]
	if !ok {
		return nil
	}
	m.refs--
	if m.refs > 0 {
		return nil
	}
	delete(s.mounts, serial)
	if err := unix.Unmount(m.path, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w", m.path, err)
	}
	return os.Remove(m.path)
}

// overlayRootfs builds the container's writable rootfs: lower is the
// read-only disk, upper and work live on the guest's tmpfs.
func overlayRootfs(id, lower string) (string, error) {
	dir := filepath.Join(containersRoot, id)
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("create %s: %w", d, err)
		}
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("mount overlay rootfs for %s: %w", id, err)
	}
	return merged, nil
}

// removeContainerDir unmounts the rootfs and deletes the container's
// scratch space.
func removeContainerDir(id string) error {
	dir := filepath.Join(containersRoot, id)
	merged := filepath.Join(dir, "rootfs")
	if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount rootfs of %s: %w", id, err)
	}
	return os.RemoveAll(dir)
}

package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	api "github.com/coffer-project/coffer/api/agent"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Host volumes reach the guest through one virtio-fs share per pod.
const (
	// sharedFSTag is the virtio-fs tag the host gives the pod's share.
	sharedFSTag = "coffer"
	// sharedRoot is where the agent mounts the share.
	sharedRoot = "/run/coffer/shared"
)

// virtiofsModules are loaded when the first volume arrives, not at boot:
// pods without volumes never pay for them.
var virtiofsModules = map[string]bool{"fuse": true, "virtiofs": true}

// shareMount mounts the pod's virtio-fs share once, on first use.
type shareMount struct {
	mu      sync.Mutex
	mounted bool
}

// ensure loads the FUSE and virtio-fs modules and mounts the share at
// sharedRoot (nodev: device numbers from the host mean other devices
// here).
func (m *shareMount) ensure(log *slog.Logger) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mounted {
		return nil
	}
	if err := loadModules(log, func(name string) bool { return virtiofsModules[name] }); err != nil {
		return fmt.Errorf("load the virtio-fs modules: %w", err)
	}
	if err := os.MkdirAll(sharedRoot, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", sharedRoot, err)
	}
	if err := unix.Mount(sharedFSTag, sharedRoot, "virtiofs", unix.MS_NODEV, ""); err != nil {
		hint := ""
		if errors.Is(err, unix.ENODEV) {
			hint = " (the guest kernel has no virtiofs: rebuild the guest image with `coffer guest build`)"
		} else if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			hint = " (no virtio-fs device with that tag: the pod was started without a shared filesystem)"
		}
		return fmt.Errorf("mount the pod's virtio-fs share %q: %w%s", sharedFSTag, err, hint)
	}
	m.mounted = true
	log.Info("virtio-fs share mounted", "tag", sharedFSTag, "path", sharedRoot)
	return nil
}

// isBindMount reports whether an OCI mount binds an existing path.
func isBindMount(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// resolveVolumes points every bind mount of spec at its shared volume
// below root and enforces the volume's read-only flag (and nodev). Bind
// mounts that name no declared volume are refused: the host must not be
// able to bind the guest's own files (the agent, other containers'
// filesystems) into a container. It returns whether any volume is used.
func resolveVolumes(spec *specs.Spec, vols []*api.SharedVolume, root string) (bool, error) {
	byName := map[string]*api.SharedVolume{}
	for _, v := range vols {
		if err := checkID("volume name", v.GetName()); err != nil {
			return false, err
		}
		if byName[v.Name] != nil {
			return false, fmt.Errorf("volume %q is declared twice", v.Name)
		}
		byName[v.Name] = v
	}
	used := false
	for i, m := range spec.Mounts {
		if !isBindMount(m) {
			continue
		}
		v := byName[m.Source]
		if v == nil {
			return false, fmt.Errorf("bind mount of %q on %s: the source is not a shared volume of this container (the guest's own files cannot be bound into containers)", m.Source, m.Destination)
		}
		opts := slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "dev" })
		opts = append(opts, "nodev")
		if v.Readonly {
			opts = append(opts, "ro")
		}
		spec.Mounts[i].Source = filepath.Join(root, v.Name)
		spec.Mounts[i].Options = opts
		used = true
	}
	return used, nil
}

// checkVolumeSources makes sure each used volume is in the share and is
// not a symlink (a mount point on the host, so it cannot be one unless the
// host lies).
func checkVolumeSources(spec *specs.Spec, root string) error {
	for _, m := range spec.Mounts {
		if !isBindMount(m) || filepath.Dir(m.Source) != root {
			continue
		}
		fi, err := os.Lstat(m.Source)
		if err != nil {
			return fmt.Errorf("shared volume %s for %s: %w", filepath.Base(m.Source), m.Destination, err)
		}
		if fi.Mode()&os.ModeSymlink != 0 || (!fi.IsDir() && !fi.Mode().IsRegular()) {
			return fmt.Errorf("shared volume %s for %s is a %s, not a directory or file", filepath.Base(m.Source), m.Destination, fi.Mode().Type())
		}
	}
	return nil
}

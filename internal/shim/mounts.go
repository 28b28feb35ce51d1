package shim

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/sandbox"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Bind mounts in the OCI spec name host paths. The guest cannot see the
// host, so each becomes a volume of the pod's virtio-fs share (see
// sandbox.Sandbox.AddVolume), read-only when the mount says "ro".

// removePodDir removes a pod directory, unmounting its volumes first:
// never remove one with os.RemoveAll, which would delete the files of a
// volume still mounted in it.
func removePodDir(dir string) error { return sandbox.RemoveTree(dir) }

// isBind reports whether an OCI mount binds a host path.
func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// isShmBind is CRI's bind of the pod's shared /dev/shm (a tmpfs the CRI
// plugin mounts on the host): a guest tmpfs serves the same purpose
// without a round trip to the host for every access.
func isShmBind(m specs.Mount) bool {
	return isBind(m) && filepath.Clean(m.Destination) == "/dev/shm"
}

// podNeedsSharedFS decides whether the pod VM started for this (first)
// container gets a virtio-fs share: always when the container has bind
// mounts; for a CRI pod sandbox, whose later containers may bring
// volumes (/etc/hosts, /etc/resolv.conf, Kubernetes volumes), when
// shared_fs is on. The share cannot be added to a running VM.
func podNeedsSharedFS(cfg Config, spec *specs.Spec) bool {
	for _, m := range spec.Mounts {
		if isBind(m) && !isShmBind(m) {
			return true
		}
	}
	return cfg.SharedFS && spec.Annotations[AnnotationContainerType] == containerTypeSandbox
}

// shareVolumes delivers spec's bind mounts to container id: the host
// paths are mounted in the pod's share and the mounts rewritten to name
// them (the agent resolves the names); /dev/shm binds become a guest
// tmpfs. On error the volumes added so far are released.
func shareVolumes(sb *sandbox.Sandbox, id string, spec *specs.Spec) (_ []*api.SharedVolume, err error) {
	var vols []*api.SharedVolume
	defer func() {
		if err != nil {
			err = errors.Join(err, sb.ReleaseVolumes(id))
		}
	}()
	for i, m := range spec.Mounts {
		if !isBind(m) {
			continue
		}
		if isShmBind(m) {
			spec.Mounts[i] = specs.Mount{Destination: m.Destination, Type: "tmpfs", Source: "shm",
				Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}
			continue
		}
		v := sandbox.Volume{
			Source: m.Source, Destination: m.Destination,
			ReadOnly:    slices.Contains(m.Options, "ro"),
			NoRecursive: !slices.Contains(m.Options, "rbind"),
		}
		if !sb.HasSharedFS() {
			return nil, fmt.Errorf("bind mount %s on %s: this pod's VM has no shared filesystem (it started without volumes); set shared_fs = true in %s so pods get one from the start: %w",
				m.Source, m.Destination, DefaultConfigFile, errdefs.ErrFailedPrecondition)
		}
		if err := v.Check(); err != nil {
			return nil, fmt.Errorf("bind mount %s on %s: %w: %w", m.Source, m.Destination, err, errdefs.ErrInvalidArgument)
		}
		mount, sv, err := sb.AddVolume(id, v)
		if err != nil {
			return nil, err
		}
		// Keep the spec's other options (nosuid, noexec, propagation)
		// for the guest's mount.
		mount.Options = append(mount.Options, slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool {
			return o == "bind" || o == "rbind" || o == "ro" || o == "rw"
		})...)
		spec.Mounts[i] = mount
		vols = append(vols, sv)
	}
	return vols, nil
}

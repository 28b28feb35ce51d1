package sandbox

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// SpecOptions are the knobs `coffer run` exposes.
type SpecOptions struct {
	Args       []string
	Env        []string // K=V
	Cwd        string
	UID, GID   uint32
	Terminal   bool
	Hostname   string
	MemoryMax  int64 // bytes; 0 = no limit
	CPUs       float64
	PidsMax    int64
	Sysctls    map[string]string
	Privileged bool
	ReadOnly   bool
}

// defaultCaps is the capability set runc and Docker give by default.
var defaultCaps = []string{
	// No CAP_MKNOD, unlike runc's defaults: the guest has no device cgroup
	// yet, so a device node would give access to the pod's other disks.
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// allCaps is every capability the guest kernel (6.1) knows.
var allCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// DefaultPath is the PATH a container gets when the caller sets none.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BuildSpec returns the OCI runtime spec for a container, with the same
// defaults as runc's `spec` (mounts, masked and read-only paths, default
// capabilities, RLIMIT_NOFILE) adjusted by o.
func BuildSpec(o SpecOptions) (*specs.Spec, error) {
	if len(o.Args) == 0 {
		return nil, fmt.Errorf("no command given: add -- CMD [ARGS...]")
	}
	env := []string{DefaultPath, "HOME=/root"}
	if o.Terminal {
		env = append(env, "TERM=xterm")
	}
	for _, e := range o.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("bad environment variable %q: use KEY=VALUE", e)
		}
		env = setEnv(env, e)
	}
	cwd := o.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !strings.HasPrefix(cwd, "/") {
		return nil, fmt.Errorf("working directory %q must be an absolute path", cwd)
	}
	caps := defaultCaps
	if o.Privileged {
		caps = allCaps
	}
	spec := &specs.Spec{
		Version:  specs.Version,
		Hostname: o.Hostname,
		Root:     &specs.Root{Path: "rootfs", Readonly: o.ReadOnly},
		Process: &specs.Process{
			Terminal: o.Terminal,
			Args:     o.Args,
			Env:      env,
			Cwd:      cwd,
			User:     specs.User{UID: o.UID, GID: o.GID},
			Capabilities: &specs.LinuxCapabilities{
				Bounding: slices.Clone(caps), Effective: slices.Clone(caps), Permitted: slices.Clone(caps),
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1048576, Soft: 1048576}},
			NoNewPrivileges: !o.Privileged,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", sysfsMode(o.Privileged)}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", sysfsMode(o.Privileged)}},
		},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{},
			Sysctl:    o.Sysctls,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
			},
		},
	}
	if !o.Privileged {
		spec.Linux.MaskedPaths = []string{
			"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
			"/proc/scsi", "/sys/devices/virtual/powercap",
		}
		spec.Linux.ReadonlyPaths = []string{
			"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
		}
	}
	if o.MemoryMax > 0 {
		spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &o.MemoryMax}
	}
	if o.CPUs > 0 {
		period := uint64(100000)
		quota := int64(o.CPUs * float64(period))
		spec.Linux.Resources.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if o.PidsMax > 0 {
		spec.Linux.Resources.Pids = &specs.LinuxPids{Limit: &o.PidsMax}
	}
	return spec, nil
}

func sysfsMode(privileged bool) string {
	if privileged {
		return "rw"
	}
	return "ro"
}

func setEnv(env []string, kv string) []string {
	k, _, _ := strings.Cut(kv, "=")
	for i, e := range env {
		if strings.HasPrefix(e, k+"=") {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

// ParseMemory parses sizes like 256M, 1G, 512k, 1048576 (bytes).
func ParseMemory(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	// Accept 256M, 256MB and 256MiB (and k, g, t likewise) and 100B,
	// nothing else.
	if u, ok := strings.CutSuffix(t, "IB"); ok && u != "" && strings.ContainsRune("KMGT", rune(u[len(u)-1])) {
		t = u
	} else if u, ok := strings.CutSuffix(t, "B"); ok && u != "" && strings.ContainsRune("KMGT0123456789", rune(u[len(u)-1])) {
		t = u
	}
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q: use a positive number with an optional k, m, g suffix (e.g. 256m)", s)
	}
	return n * mult, nil
}

// ParseUser parses UID[:GID] (numeric).
func ParseUser(s string) (uid, gid uint32, err error) {
	u, g, hasG := strings.Cut(s, ":")
	uv, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("bad user %q: use numeric UID[:GID]", s)
	}
	gv := uint64(0)
	if hasG {
		if gv, err = strconv.ParseUint(g, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("bad user %q: use numeric UID[:GID]", s)
		}
	}
	return uint32(uv), uint32(gv), nil
}

// ParseSysctls parses k=v pairs.
func ParseSysctls(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, "/ ") || strings.Contains(k, "..") {
			return nil, fmt.Errorf("bad sysctl %q: use name=value, e.g. net.ipv4.ip_forward=1", kv)
		}
		out[k] = v
	}
	return out, nil
}

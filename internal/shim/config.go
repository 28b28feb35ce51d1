package shim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/coffer-project/coffer/internal/guest"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/sandbox"
	"github.com/containerd/containerd/errdefs"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// RuntimeName is the containerd runtime this shim implements.
const RuntimeName = "io.containerd.coffer.v2"

// Defaults for the pod VM when neither the config file nor an
// annotation says otherwise.
const (
	defaultMemoryMiB = 256
	defaultVCPUs     = 1
)

// DefaultConfigFile is the shim's configuration file. containerd's
// runtime option ConfigPath names another file instead.
const DefaultConfigFile = "/etc/coffer/config.toml"

// Limits on VM sizes from the config file or pod annotations.
const (
	minMemoryMiB = 64
	maxMemoryMiB = 1 << 20 // 1 TiB
	maxVCPUs     = 240
)

// Pod annotations the shim honours (the allow-list; every other
// annotation is ignored). They are read from the OCI spec of the pod's
// first container.
const (
	// AnnotationMemoryMiB sets the VM's memory in MiB.
	AnnotationMemoryMiB = "io.coffer.vm.memory_mib"
	// AnnotationVCPUs sets the VM's vCPU count.
	AnnotationVCPUs = "io.coffer.vm.vcpus"
	// AnnotationCRISandboxMemory is set by containerd's CRI plugin (1.7+)
	// to the sum of the pod's container memory limits in bytes; it is
	// added to the configured memory unless AnnotationMemoryMiB is set.
	AnnotationCRISandboxMemory = "io.kubernetes.cri.sandbox-memory"
)

// Config is what the shim needs to boot pod VMs.
type Config struct {
	// GuestDir holds the guest image (`coffer guest build`).
	GuestDir string
	// RuntimeDir holds one directory per pod.
	RuntimeDir string
	// ConfigFile is the config file read when containerd passes no
	// ConfigPath option; a missing file means built-in defaults.
	ConfigFile string
	// HypervisorPath is the QEMU binary; empty means the default.
	HypervisorPath string
	// Accel is kvm, tcg or auto.
	Accel     hypervisor.Accel
	MemoryMiB int
	VCPUs     int
	LogLevel  slog.Level
	// SharedFS gives CRI pod sandboxes a virtio-fs share for their
	// containers' volumes from the start (see podNeedsSharedFS).
	SharedFS bool
	// Transport is the agent transport (sandbox.Config.Transport):
	// sandbox.TransportAuto (serial), TransportSerial or TransportVsock.
	Transport string
}

// FileConfig is the TOML configuration file (/etc/coffer/config.toml).
// Absent keys keep their defaults; unknown keys are errors.
type FileConfig struct {
	// HypervisorPath is the QEMU binary (default qemu-system-x86_64 on PATH).
	HypervisorPath string `toml:"hypervisor_path"`
	// GuestDir holds the guest kernel and initrd (`coffer guest build`).
	GuestDir string `toml:"guest_dir"`
	// MemoryMiB is the VM's memory (default 256).
	MemoryMiB int `toml:"memory_mib"`
	// VCPUs is the VM's vCPU count (default 1).
	VCPUs int `toml:"vcpus"`
	// Accelerator is kvm, tcg or auto (default auto).
	Accelerator string `toml:"accelerator"`
	// LogLevel is debug, info, warn or error (default info).
	LogLevel string `toml:"log_level"`
	// SharedFS starts CRI pod sandboxes with a virtio-fs share for
	// volumes (default true); pods of one container get one exactly when
	// they have bind mounts.
	SharedFS bool `toml:"shared_fs"`
	// Transport is how the shim reaches the guest agent: serial, vsock
	// (needs /dev/vhost-vsock; any host process can connect to a guest's
	// vsock port) or auto, which is serial (default auto).
	Transport string `toml:"transport"`
}

// DefaultConfig is the built-in configuration, before any config file:
// the environment picks the directories: COFFER_GUEST_DIR (else the
// guest cache dir) and COFFER_RUNTIME_DIR (pods under its shim/
// subdirectory, else /run/coffer/shim).
func DefaultConfig() Config {
	rt := "/run/coffer/shim"
	if d := os.Getenv("COFFER_RUNTIME_DIR"); d != "" {
		rt = filepath.Join(d, "shim")
	}
	return Config{
		GuestDir: guest.DefaultCacheDir(), RuntimeDir: rt, ConfigFile: DefaultConfigFile,
		Accel: hypervisor.AccelAuto, MemoryMiB: defaultMemoryMiB, VCPUs: defaultVCPUs, LogLevel: slog.LevelInfo,
		SharedFS: true,
	}
}

// Resolve returns the configuration for one pod, in increasing
// precedence: c (built-in defaults), the config file (configPath, the
// runtime option ConfigPath, or else c.ConfigFile, which may be
// missing), then the allow-listed pod annotations. Errors wrap
// errdefs.ErrInvalidArgument and name the file or annotation at fault.
func (c Config) Resolve(configPath string, annotations map[string]string) (Config, error) {
	out := c
	path, required := c.ConfigFile, false
	if configPath != "" {
		path, required = configPath, true
	}
	if path != "" {
		fc, err := readConfigFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && !required:
		case err != nil:
			return Config{}, err
		default:
			if err := out.apply(path, fc); err != nil {
				return Config{}, err
			}
		}
	}
	if err := out.applyAnnotations(annotations); err != nil {
		return Config{}, err
	}
	return out, nil
}

// fileConfig is a parsed config file and which keys it set.
type fileConfig struct {
	FileConfig
	defined map[string]bool
}

func readConfigFile(path string) (*fileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read the Coffer config file %s: %w", path, err)
		}
		return nil, fmt.Errorf("read the Coffer config file %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	fc := &fileConfig{defined: map[string]bool{}}
	md, err := toml.Decode(string(b), &fc.FileConfig)
	if err != nil {
		return nil, fmt.Errorf("parse the Coffer config file %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if u := md.Undecoded(); len(u) > 0 {
		keys := make([]string, len(u))
		for i, k := range u {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config file %s: unknown keys %s (known: hypervisor_path, guest_dir, memory_mib, vcpus, accelerator, log_level, shared_fs, transport): %w",
			path, strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
	}
	for _, k := range md.Keys() {
		fc.defined[k.String()] = true
	}
	return fc, nil
}

func (c *Config) apply(path string, fc *fileConfig) error {
	bad := func(key string, why string) error {
		return fmt.Errorf("config file %s: %s: %s: %w", path, key, why, errdefs.ErrInvalidArgument)
	}
	if fc.defined["hypervisor_path"] {
		if !filepath.IsAbs(fc.HypervisorPath) {
			return bad("hypervisor_path", fmt.Sprintf("%q is not an absolute path", fc.HypervisorPath))
		}
		c.HypervisorPath = fc.HypervisorPath
	}
	if fc.defined["guest_dir"] {
		if !filepath.IsAbs(fc.GuestDir) {
			return bad("guest_dir", fmt.Sprintf("%q is not an absolute path", fc.GuestDir))
		}
		c.GuestDir = fc.GuestDir
	}
	if fc.defined["memory_mib"] {
		if err := checkMemory(fc.MemoryMiB); err != nil {
			return bad("memory_mib", err.Error())
		}
		c.MemoryMiB = fc.MemoryMiB
	}
	if fc.defined["vcpus"] {
		if err := checkVCPUs(fc.VCPUs); err != nil {
			return bad("vcpus", err.Error())
		}
		c.VCPUs = fc.VCPUs
	}
	if fc.defined["accelerator"] {
		a, err := hypervisor.ParseAccel(fc.Accelerator)
		if err != nil {
			return bad("accelerator", err.Error())
		}
		c.Accel = a
	}
	if fc.defined["log_level"] {
		var l slog.Level
		if err := l.UnmarshalText([]byte(fc.LogLevel)); err != nil {
			return bad("log_level", fmt.Sprintf("%q: use debug, info, warn or error", fc.LogLevel))
		}
		c.LogLevel = l
	}
	if fc.defined["shared_fs"] {
		c.SharedFS = fc.SharedFS
	}
	if fc.defined["transport"] {
		t, err := sandbox.ParseTransport(fc.Transport)
		if err != nil {
			return bad("transport", err.Error())
		}
		c.Transport = t
	}
	return nil
}

func checkMemory(n int) error {
	if n < minMemoryMiB || n > maxMemoryMiB {
		return fmt.Errorf("%d MiB is out of range: use %d to %d", n, minMemoryMiB, maxMemoryMiB)
	}
	return nil
}

func checkVCPUs(n int) error {
	if n < 1 || n > maxVCPUs {
		return fmt.Errorf("%d is out of range: use 1 to %d", n, maxVCPUs)
	}
	return nil
}

func (c *Config) applyAnnotations(a map[string]string) error {
	bad := func(key, val, why string) error {
		return fmt.Errorf("pod annotation %s=%q: %s: %w", key, val, why, errdefs.ErrInvalidArgument)
	}
	if v, ok := a[AnnotationMemoryMiB]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return bad(AnnotationMemoryMiB, v, "not a whole number of MiB")
		}
		if err := checkMemory(n); err != nil {
			return bad(AnnotationMemoryMiB, v, err.Error())
		}
		c.MemoryMiB = n
	} else if v, ok := a[AnnotationCRISandboxMemory]; ok {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return bad(AnnotationCRISandboxMemory, v, "not a whole number of bytes")
		}
		// 0 means the pod sets no memory limit.
		extra := (n + (1<<20 - 1)) >> 20
		if extra > 0 {
			if extra > maxMemoryMiB || checkMemory(c.MemoryMiB+int(extra)) != nil {
				return bad(AnnotationCRISandboxMemory, v, fmt.Sprintf("%d MiB for the VM + %d MiB for the pod exceeds %d MiB", c.MemoryMiB, extra, maxMemoryMiB))
			}
			c.MemoryMiB += int(extra)
		}
	}
	if v, ok := a[AnnotationVCPUs]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return bad(AnnotationVCPUs, v, "not a whole number")
		}
		if err := checkVCPUs(n); err != nil {
			return bad(AnnotationVCPUs, v, err.Error())
		}
		c.VCPUs = n
	}
	return nil
}

// configPathOption returns ConfigPath from containerd's runtime options
// (CreateTaskRequest.Options): the runtimeoptions.v1.Options message
// that containerd's CRI plugin sends for a non-runc runtime with
// `options.ConfigPath`, and that `ctr run --runtime-config-path` sends.
// No options give "".
func configPathOption(opts *anypb.Any) (string, error) {
	if opts == nil || (opts.GetTypeUrl() == "" && len(opts.GetValue()) == 0) {
		return "", nil
	}
	want := string((&runtimeoptions.Options{}).ProtoReflect().Descriptor().FullName())
	url := opts.GetTypeUrl()
	if url[strings.LastIndex(url, "/")+1:] != want {
		return "", fmt.Errorf("runtime options of type %q are not understood by %s: use %s (options.ConfigPath in containerd's runtime config): %w",
			url, RuntimeName, want, errdefs.ErrInvalidArgument)
	}
	var o runtimeoptions.Options
	if err := proto.Unmarshal(opts.GetValue(), &o); err != nil {
		return "", fmt.Errorf("decode the runtime options (%s): %w: %w", url, err, errdefs.ErrInvalidArgument)
	}
	return o.GetConfigPath(), nil
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$`)

// PodDir is the directory of pod id in namespace ns. Long or unusual ids
// (CRI uses 64 hex digits) are hashed: the VM's unix sockets live below
// this directory and socket paths are limited to 107 bytes.
func (c Config) PodDir(ns, id string) string {
	name := id
	if !safeName.MatchString(id) {
		sum := sha256.Sum256([]byte(id))
		name = hex.EncodeToString(sum[:8])
	}
	if !safeName.MatchString(ns) {
		sum := sha256.Sum256([]byte(ns))
		ns = hex.EncodeToString(sum[:8])
	}
	return filepath.Join(c.RuntimeDir, ns, name)
}

// podRecord is written to <pod dir>/shim.json once the VM runs, and
// rewritten as containers join and leave the pod, so that
// `containerd-shim-coffer-v2 delete` can clean up after a dead shim.
type podRecord struct {
	ID       string `json:"id"`
	ShimPID  int    `json:"shim_pid"`
	QEMUPID  int    `json:"qemu_pid"`
	Bundle   string `json:"bundle"`
	Accel    string `json:"accel,omitempty"`
	GuestDir string `json:"guest_dir"`
	// Joined lists the containers that joined the pod and the disks
	// hot-plugged for them.
	Joined []joinedDisk `json:"joined,omitempty"`
}

// joinedDisk is a joining container's hot-plugged rootfs disk.
type joinedDisk struct {
	Container string `json:"container"`
	Serial    string `json:"serial"`
	Image     string `json:"image"`
}

const recordFile = "shim.json"

func writeRecord(dir string, r *podRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, recordFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("record the pod state in %s: %w", dir, err)
	}
	return os.Rename(tmp, filepath.Join(dir, recordFile))
}

func readRecord(dir string) (*podRecord, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return nil, err
	}
	var r podRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, recordFile), err)
	}
	return &r, nil
}

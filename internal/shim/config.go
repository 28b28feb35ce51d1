package shim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/coffer-project/coffer/internal/guest"
)

// RuntimeName is the containerd runtime this shim implements.
const RuntimeName = "io.containerd.coffer.v2"

// Defaults for the pod VM until /etc/coffer/config.toml exists.
const (
	defaultMemoryMiB = 256
	defaultVCPUs     = 1
)

// Config is what the shim needs to boot pod VMs.
type Config struct {
	// GuestDir holds the guest image (`coffer guest build`).
	GuestDir string
	// RuntimeDir holds one directory per pod.
	RuntimeDir string
	MemoryMiB  int
	VCPUs      int
}

// DefaultConfig reads the environment: COFFER_GUEST_DIR (else the guest
// cache dir) and COFFER_RUNTIME_DIR (pods under its shim/ subdirectory,
// else /run/coffer/shim).
func DefaultConfig() Config {
	rt := "/run/coffer/shim"
	if d := os.Getenv("COFFER_RUNTIME_DIR"); d != "" {
		rt = filepath.Join(d, "shim")
	}
	return Config{GuestDir: guest.DefaultCacheDir(), RuntimeDir: rt, MemoryMiB: defaultMemoryMiB, VCPUs: defaultVCPUs}
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

// podRecord is written to <pod dir>/shim.json once the VM runs, so that
// `containerd-shim-coffer-v2 delete` can clean up after a dead shim.
type podRecord struct {
	ID       string `json:"id"`
	ShimPID  int    `json:"shim_pid"`
	QEMUPID  int    `json:"qemu_pid"`
	Bundle   string `json:"bundle"`
	Accel    string `json:"accel,omitempty"`
	GuestDir string `json:"guest_dir"`
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

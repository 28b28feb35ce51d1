package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Pod statuses recorded in state.json.
const (
	StatusStarting = "starting"
	StatusRunning  = "running"
	StatusExited   = "exited"
	// StatusDead is reported (never stored) for a pod whose owner process
	// is gone without recording an exit: a crash.
	StatusDead = "dead"
)

// State is a pod's record in the runtime directory.
type State struct {
	Name    string    `json:"name"`
	ID      string    `json:"id"`
	Status  string    `json:"status"`
	Created time.Time `json:"created"`
	Command []string  `json:"command"`
	Rootfs  string    `json:"rootfs"`
	// OwnerPID owns the VM (the coffer process); OwnerStart is its start
	// time in clock ticks since boot, to detect PID reuse.
	OwnerPID   int    `json:"owner_pid"`
	OwnerStart uint64 `json:"owner_start"`
	QEMUPID    int    `json:"qemu_pid,omitempty"`
	Accel      string `json:"accel,omitempty"`
	ExitStatus *int   `json:"exit_status,omitempty"`
	Detached   bool   `json:"detached"`
	// Error is why a detached pod failed to start or ended abnormally
	// (its VM died, the agent stopped answering).
	Error string `json:"error,omitempty"`
	// Request is what `coffer run -d` hands to the detached owner.
	Request json.RawMessage `json:"request,omitempty"`
}

// RuntimeDir is where pod state lives: $COFFER_RUNTIME_DIR, else
// /run/coffer for root, else $XDG_RUNTIME_DIR/coffer.
func RuntimeDir() string {
	if d := os.Getenv("COFFER_RUNTIME_DIR"); d != "" {
		return d
	}
	if os.Geteuid() != 0 {
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			return filepath.Join(d, "coffer")
		}
	}
	return "/run/coffer"
}

var nameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// CheckName validates a pod name.
func CheckName(name string) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("invalid name %q: use 1-63 letters, digits, '_', '.', '-' (starting with a letter or digit)", name)
	}
	return nil
}

// PodDir is the directory of the named pod.
func PodDir(runtimeDir, name string) string { return filepath.Join(runtimeDir, "pods", name) }

// ProxySocket is the agent API socket the pod's owner serves for
// `coffer exec/kill`.
func ProxySocket(podDir string) string { return filepath.Join(podDir, "agent.sock") }

// CreatePodDir creates the pod's directory; the name must be free (a stale
// pod of the same name is cleaned up first).
func CreatePodDir(runtimeDir, name string) (string, error) {
	dir := PodDir(runtimeDir, name)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return "", fmt.Errorf("create runtime dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("create pod dir: %w", err)
		}
		st, rerr := ReadState(dir)
		if rerr == nil && st.OwnerAlive() {
			return "", fmt.Errorf("a pod named %q already exists (status %s): pick another --name or `coffer rm %s`", name, st.Status, name)
		}
		if rerr == nil && st.Status == StatusExited {
			return "", fmt.Errorf("a stopped pod named %q exists: `coffer rm %s` first or pick another --name", name, name)
		}
		// A pod being handed to its owner (coffer run -d) has no owner
		// yet, and a directory without state may be seconds old: neither
		// is stale until it has been left alone for a while.
		if fi, err := os.Stat(dir); err == nil && time.Since(fi.ModTime()) < 2*time.Minute &&
			(rerr != nil || (st.OwnerPID == 0 && st.Status == StatusStarting)) {
			return "", fmt.Errorf("a pod named %q is being created: pick another --name", name)
		}
		if err := RemovePodDir(dir); err != nil {
			return "", err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return "", fmt.Errorf("create pod dir: %w", err)
		}
	}
	return dir, nil
}

// WriteState atomically replaces state.json in dir.
func WriteState(dir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, ".state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write pod state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "state.json")); err != nil {
		return fmt.Errorf("write pod state: %w", err)
	}
	return nil
}

// ReadState reads state.json from dir.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("corrupt pod state %s: %w", dir, err)
	}
	return &st, nil
}

// ProcessStart returns the start time of pid (clock ticks since boot), or
// 0 if there is no such process or it has exited and waits to be reaped (a
// zombie: a dead owner re-parented to an init that does not reap).
func ProcessStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command may contain spaces and parentheses: fields start after
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// OwnerAlive reports whether the process that owns the pod still runs.
func (st *State) OwnerAlive() bool {
	if st.OwnerPID <= 0 {
		return false
	}
	start := ProcessStart(st.OwnerPID)
	return start != 0 && start == st.OwnerStart
}

// EffectiveStatus is Status, or StatusDead if the owner vanished without
// recording an exit.
func (st *State) EffectiveStatus() string {
	if st.Status != StatusExited && !st.OwnerAlive() {
		return StatusDead
	}
	return st.Status
}

// ListPods returns the state of every pod, sorted by creation time.
func ListPods(runtimeDir string) ([]*State, error) {
	entries, err := os.ReadDir(filepath.Join(runtimeDir, "pods"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	var out []*State
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := ReadState(filepath.Join(runtimeDir, "pods", e.Name()))
		if err != nil {
			// A pod dir without state: its creator died before writing it.
			st = &State{Name: e.Name(), Status: StatusStarting}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// RemovePodDir removes a pod directory whose owner is gone, killing a QEMU
// left behind if its command line still names this directory.
func RemovePodDir(dir string) error {
	if st, err := ReadState(dir); err == nil && st.QEMUPID > 0 {
		if cmd, err := os.ReadFile("/proc/" + strconv.Itoa(st.QEMUPID) + "/cmdline"); err == nil &&
			strings.Contains(string(cmd), VMDir(dir)) {
			_ = unix.Kill(st.QEMUPID, unix.SIGKILL)
		}
	}
	if err := RemoveTree(dir); err != nil {
		return fmt.Errorf("remove pod dir %s: %w", dir, err)
	}
	return nil
}

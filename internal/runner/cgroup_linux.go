package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// CgroupMount is where the agent mounts the cgroup2 hierarchy in the guest.
const CgroupMount = "/sys/fs/cgroup"

// CgroupParentDir is the parent cgroup SetupCgroupRoot makes below root.
func CgroupParentDir(root string) string { return filepath.Join(root, "coffer") }

// SetupCgroupRoot enables the controllers containers need and creates the
// parent cgroup that holds every container (CgroupParentDir).
func SetupCgroupRoot(root string) (string, error) {
	avail, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return "", fmt.Errorf("read cgroup2 controllers at %s (is cgroup2 mounted?): %w", root, err)
	}
	var enable []string
	for _, c := range strings.Fields(string(avail)) {
		switch c {
		case "cpu", "memory", "pids", "io", "cpuset":
			enable = append(enable, "+"+c)
		}
	}
	parent := CgroupParentDir(root)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup %s: %w", parent, err)
	}
	for _, dir := range []string{root, parent} {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
			return "", fmt.Errorf("enable cgroup controllers %v in %s: %w", enable, dir, err)
		}
	}
	return parent, nil
}

// Cgroup is one container's cgroup v2 directory.
type Cgroup struct {
	Path string
}

// NewCgroup creates parent/id and applies the OCI resource limits.
func NewCgroup(parent, id string, res *specs.LinuxResources) (*Cgroup, error) {
	cg := &Cgroup{Path: filepath.Join(parent, id)}
	if err := os.Mkdir(cg.Path, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", cg.Path, err)
	}
	if err := cg.Apply(res); err != nil {
		_ = os.Remove(cg.Path)
		return nil, err
	}
	return cg, nil
}

func (c *Cgroup) write(file, val string) error {
	if err := os.WriteFile(filepath.Join(c.Path, file), []byte(val), 0); err != nil {
		return fmt.Errorf("set cgroup %s to %q: %w", file, val, err)
	}
	return nil
}

// Apply writes the limits of res (memory, cpu, pids) to the cgroup.
func (c *Cgroup) Apply(res *specs.LinuxResources) error {
	if res == nil {
		return nil
	}
	if m := res.Memory; m != nil {
		if m.Limit != nil && *m.Limit > 0 {
			if err := c.write("memory.max", strconv.FormatInt(*m.Limit, 10)); err != nil {
				return err
			}
			// The guest has no swap; make the limit a hard one regardless.
			if _, err := os.Stat(filepath.Join(c.Path, "memory.swap.max")); err == nil {
				if err := c.write("memory.swap.max", "0"); err != nil {
					return err
				}
			}
		}
		if m.Reservation != nil && *m.Reservation > 0 {
			if err := c.write("memory.low", strconv.FormatInt(*m.Reservation, 10)); err != nil {
				return err
			}
		}
	}
	if cpu := res.CPU; cpu != nil {
		if cpu.Quota != nil && *cpu.Quota > 0 {
			period := uint64(100000)
			if cpu.Period != nil && *cpu.Period > 0 {
				period = *cpu.Period
			}
			if err := c.write("cpu.max", fmt.Sprintf("%d %d", *cpu.Quota, period)); err != nil {
				return err
			}
		}
		if cpu.Shares != nil && *cpu.Shares > 0 {
			if err := c.write("cpu.weight", strconv.FormatUint(sharesToWeight(*cpu.Shares), 10)); err != nil {
				return err
			}
		}
		if cpu.Cpus != "" {
			if err := c.write("cpuset.cpus", cpu.Cpus); err != nil {
				return err
			}
		}
	}
	if p := res.Pids; p != nil && p.Limit != nil && *p.Limit > 0 {
		if err := c.write("pids.max", strconv.FormatInt(*p.Limit, 10)); err != nil {
			return err
		}
	}
	return nil
}

// sharesToWeight converts cgroup v1 cpu.shares [2, 262144] to cgroup v2
// cpu.weight [1, 10000], the conversion runc and crun use.
func sharesToWeight(shares uint64) uint64 {
	if shares < 2 {
		shares = 2
	}
	if shares > 262144 {
		shares = 262144
	}
	return 1 + ((shares-2)*9999)/262142
}

// Open returns a directory fd for CLONE_INTO_CGROUP. The caller closes it.
func (c *Cgroup) Open() (*os.File, error) {
	f, err := os.OpenFile(c.Path, unix.O_DIRECTORY|unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", c.Path, err)
	}
	return f, nil
}

// Kill sends SIGKILL to every process in the cgroup (cgroup.kill).
func (c *Cgroup) Kill() error {
	return c.write("cgroup.kill", "1")
}

// Freeze stops (frozen) or resumes every process of the cgroup
// (cgroup.freeze) and waits until cgroup.events reports the new state.
func (c *Cgroup) Freeze(ctx context.Context, frozen bool) error {
	val := "0"
	if frozen {
		val = "1"
	}
	if err := c.write("cgroup.freeze", val); err != nil {
		return err
	}
	err := c.waitFrozen(ctx, frozen)
	if err != nil && frozen {
		// A pause that failed must not complete later behind the
		// caller's back: the container would stop while reported running.
		_ = c.write("cgroup.freeze", "0")
	}
	return err
}

// waitFrozen polls cgroup.events until its frozen field is frozen.
func (c *Cgroup) waitFrozen(ctx context.Context, frozen bool) error {
	for {
		now, err := c.Frozen()
		if err != nil || now == frozen {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroup %s: waiting for frozen=%t: %w", c.Path, frozen, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// FreezeRequested reports whether the cgroup is frozen or being frozen
// (cgroup.freeze is 1), as opposed to Frozen, which is true only once the
// kernel has stopped every process.
func (c *Cgroup) FreezeRequested() (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.freeze"))
	if err != nil {
		return false, fmt.Errorf("read cgroup %s freeze state: %w", c.Path, err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// Frozen reports the "frozen" field of cgroup.events.
func (c *Cgroup) Frozen() (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("read cgroup %s events: %w", c.Path, err)
	}
	return parseFrozen(string(b)), nil
}

// parseFrozen reads the frozen field of a cgroup.events text.
func parseFrozen(events string) bool {
	for _, line := range strings.Split(events, "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == "frozen" {
			return strings.TrimSpace(v) == "1"
		}
	}
	return false
}

// Pids lists the processes in the cgroup.
func (c *Cgroup) Pids() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", c.Path, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// Remove kills what is left in the cgroup and removes it, waiting up to
// the context's deadline for the processes to go.
func (c *Cgroup) Remove(ctx context.Context) error {
	for {
		err := removeCgroupTree(c.Path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("remove cgroup %s: %w", c.Path, err)
		}
		_ = c.Kill()
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: processes still running: %w", c.Path, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stats is a snapshot of the cgroup's counters.
type Stats struct {
	CPUUsageUsec, CPUUserUsec, CPUSystemUsec uint64
	CPUNrThrottled, CPUThrottledUsec         uint64
	MemoryCurrent, MemoryMax, MemoryPeak     uint64
	MemoryOOM, MemoryOOMKill                 uint64
	PidsCurrent, PidsMax                     uint64
	MemoryStat                               map[string]uint64
}

// Stats reads cpu.stat, memory.* and pids.* of the cgroup.
func (c *Cgroup) Stats() (*Stats, error) {
	s := &Stats{}
	cpu, err := readKeyed(filepath.Join(c.Path, "cpu.stat"))
	if err != nil {
		return nil, err
	}
	s.CPUUsageUsec, s.CPUUserUsec, s.CPUSystemUsec = cpu["usage_usec"], cpu["user_usec"], cpu["system_usec"]
	s.CPUNrThrottled, s.CPUThrottledUsec = cpu["nr_throttled"], cpu["throttled_usec"]
	s.MemoryCurrent = readUint(filepath.Join(c.Path, "memory.current"))
	s.MemoryMax = readUint(filepath.Join(c.Path, "memory.max"))
	s.MemoryPeak = readUint(filepath.Join(c.Path, "memory.peak"))
	if ev, err := readKeyed(filepath.Join(c.Path, "memory.events")); err == nil {
		s.MemoryOOM, s.MemoryOOMKill = ev["oom"], ev["oom_kill"]
	}
	if ms, err := readKeyed(filepath.Join(c.Path, "memory.stat")); err == nil {
		s.MemoryStat = ms
	}
	s.PidsCurrent = readUint(filepath.Join(c.Path, "pids.current"))
	s.PidsMax = readUint(filepath.Join(c.Path, "pids.max"))
	return s, nil
}

// OOMKills returns memory.events oom_kill.
func (c *Cgroup) OOMKills() uint64 {
	ev, err := readKeyed(filepath.Join(c.Path, "memory.events"))
	if err != nil {
		return 0
	}
	return ev["oom_kill"]
}

// readUint reads a single-value cgroup file; "max" and errors read as 0.
func readUint(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// readKeyed reads a flat-keyed cgroup file ("key value" per line).
func readKeyed(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, sc.Err()
}

// removeCgroupTree removes a cgroup and the child cgroups a (privileged)
// container may have created in it, deepest first.
func removeCgroupTree(path string) error {
	var dirs []string
	err := filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

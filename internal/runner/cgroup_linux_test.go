package runner

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestSharesToWeight(t *testing.T) {
	tests := []struct{ shares, weight uint64 }{
		{0, 1}, {1, 1}, {2, 1},
		{1024, 39},
		{262144, 10000}, {262145, 10000}, {1 << 40, 10000},
		{131073, 5000},
	}
	for _, tt := range tests {
		if got := sharesToWeight(tt.shares); got != tt.weight {
			t.Errorf("sharesToWeight(%d) = %d, want %d", tt.shares, got, tt.weight)
		}
	}
	// Monotonic and always within cpu.weight's range [1, 10000].
	prev := uint64(0)
	for s := uint64(0); s <= 270000; s += 97 {
		w := sharesToWeight(s)
		if w < 1 || w > 10000 || w < prev {
			t.Fatalf("sharesToWeight(%d) = %d (previous %d)", s, w, prev)
		}
		prev = w
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadKeyed(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"cpu.stat": "usage_usec 1234\nuser_usec 1000\nsystem_usec  234\n" +
			"garbage\nnr_throttled notanumber\nneg -1\n\nbig 18446744073709551615\n",
	})
	got, err := readKeyed(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"usage_usec": 1234, "user_usec": 1000, "system_usec": 234, "big": 1<<64 - 1}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("readKeyed = %v, want %v", got, want)
	}
	_, err = readKeyed(filepath.Join(dir, "missing"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("readKeyed(missing) error = %v, want ErrNotExist naming the file", err)
	}
}

func TestReadUint(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a": "42\n", "max": "max\n", "bad": "x"})
	for name, want := range map[string]uint64{"a": 42, "max": 0, "bad": 0, "missing": 0} {
		if got := readUint(filepath.Join(dir, name)); got != want {
			t.Errorf("readUint(%s) = %d, want %d", name, got, want)
		}
	}
}

// fakeCgroup is a directory with the interface files of a cgroup v2 leaf
// (a plain directory: writes just replace the file content).
func fakeCgroup(t *testing.T, withSwap bool) *Cgroup {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{}
	for _, f := range []string{"memory.max", "memory.low", "cpu.max", "cpu.weight", "cpuset.cpus", "pids.max", "cgroup.kill"} {
		files[f] = ""
	}
	if withSwap {
		files["memory.swap.max"] = "max"
	}
	writeFiles(t, dir, files)
	return &Cgroup{Path: dir}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCgroupApply(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	cg := fakeCgroup(t, true)
	res := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(256 << 20), Reservation: i64(64 << 20)},
		CPU:    &specs.LinuxCPU{Quota: i64(50000), Period: u64(200000), Shares: u64(1024), Cpus: "0-1"},
		Pids:   &specs.LinuxPids{Limit: i64(100)},
	}
	if err := cg.Apply(res); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"memory.max": "268435456", "memory.swap.max": "0", "memory.low": "67108864",
		"cpu.max": "50000 200000", "cpu.weight": "39", "cpuset.cpus": "0-1", "pids.max": "100",
	}
	for f, v := range want {
		if got := readFile(t, filepath.Join(cg.Path, f)); got != v {
			t.Errorf("%s = %q, want %q", f, got, v)
		}
	}

	// Default period; no swap file means none is created; zero and
	// negative values are "unset".
	cg = fakeCgroup(t, false)
	res = &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(-1)},
		CPU:    &specs.LinuxCPU{Quota: i64(150000), Shares: u64(0)},
		Pids:   &specs.LinuxPids{Limit: i64(0)},
	}
	if err := cg.Apply(res); err != nil {
		t.Fatal(err)
	}
	want = map[string]string{"memory.max": "", "cpu.max": "150000 100000", "cpu.weight": "", "pids.max": ""}
	for f, v := range want {
		if got := readFile(t, filepath.Join(cg.Path, f)); got != v {
			t.Errorf("%s = %q, want %q", f, got, v)
		}
	}
	if _, err := os.Stat(filepath.Join(cg.Path, "memory.swap.max")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("memory.swap.max was created: %v", err)
	}
	if err := cg.Apply(nil); err != nil {
		t.Errorf("Apply(nil) = %v", err)
	}
}

func TestCgroupApplyErrorNamesFile(t *testing.T) {
	cg := &Cgroup{Path: filepath.Join(t.TempDir(), "gone")}
	limit := int64(100)
	err := cg.Apply(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}})
	if err == nil || !strings.Contains(err.Error(), "pids.max") || !strings.Contains(err.Error(), `"100"`) {
		t.Fatalf("Apply to a missing cgroup: error = %v, want it to name pids.max and the value", err)
	}
}

func TestCgroupStatsAndPids(t *testing.T) {
	cg := fakeCgroup(t, false)
	writeFiles(t, cg.Path, map[string]string{
		"cpu.stat":       "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_throttled 2\nthrottled_usec 7\n",
		"memory.current": "4096\n",
		"memory.max":     "max\n",
		"memory.peak":    "8192\n",
		"memory.events":  "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n",
		"memory.stat":    "anon 100\nfile 200\n",
		"pids.current":   "3\n",
		"pids.max":       "50\n",
		"cgroup.procs":   "1\n25\n300\n",
	})
	st, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := &Stats{
		CPUUsageUsec: 10, CPUUserUsec: 6, CPUSystemUsec: 4, CPUNrThrottled: 2, CPUThrottledUsec: 7,
		MemoryCurrent: 4096, MemoryMax: 0, MemoryPeak: 8192, MemoryOOM: 2, MemoryOOMKill: 1,
		PidsCurrent: 3, PidsMax: 50, MemoryStat: map[string]uint64{"anon": 100, "file": 200},
	}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
	if got := cg.OOMKills(); got != 1 {
		t.Fatalf("OOMKills = %d, want 1", got)
	}
	pids, err := cg.Pids()
	if err != nil || !reflect.DeepEqual(pids, []int{1, 25, 300}) {
		t.Fatalf("Pids = %v, %v", pids, err)
	}
	if err := cg.Kill(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(cg.Path, "cgroup.kill")); got != "1" {
		t.Fatalf("cgroup.kill = %q, want 1", got)
	}

	// Without cpu.stat (no cgroup there) Stats fails; OOMKills reads 0.
	empty := &Cgroup{Path: t.TempDir()}
	if _, err := empty.Stats(); err == nil {
		t.Fatal("Stats without cpu.stat: want an error")
	}
	if got := empty.OOMKills(); got != 0 {
		t.Fatalf("OOMKills without memory.events = %d", got)
	}
}

func TestCgroupRemove(t *testing.T) {
	// An empty directory is removed; a missing one is not an error.
	cg := &Cgroup{Path: filepath.Join(t.TempDir(), "c")}
	if err := os.Mkdir(cg.Path, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cg.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cg.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("cgroup dir still there: %v", err)
	}
	if err := cg.Remove(ctx); err != nil {
		t.Fatalf("Remove of a missing cgroup = %v", err)
	}
	// A non-empty plain directory (ENOTEMPTY, not EBUSY) fails at once.
	cg = fakeCgroup(t, false)
	if err := cg.Remove(ctx); err == nil || !strings.Contains(err.Error(), "remove cgroup") {
		t.Fatalf("Remove of a non-empty dir = %v, want an error", err)
	}
}

func TestNewCgroup(t *testing.T) {
	parent := t.TempDir()
	limit := int64(10)
	_, err := NewCgroup(filepath.Join(parent, "missing-parent"), "c1", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}})
	if err == nil || !strings.Contains(err.Error(), "create cgroup") {
		t.Fatalf("NewCgroup under a missing parent = %v", err)
	}
	cg, err := NewCgroup(parent, "c2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cg.Path != filepath.Join(parent, "c2") {
		t.Fatalf("Path = %q", cg.Path)
	}
	if _, err := NewCgroup(parent, "c2", nil); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("NewCgroup of an existing id = %v, want ErrExist", err)
	}
}

func TestParseFrozen(t *testing.T) {
	for in, want := range map[string]bool{
		"populated 1\nfrozen 1\n": true,
		"populated 1\nfrozen 0\n": false,
		"frozen 1":                true,
		"populated 0\n":           false,
		"":                        false,
	} {
		if got := parseFrozen(in); got != want {
			t.Errorf("parseFrozen(%q) = %v, want %v", in, got, want)
		}
	}
}

package sandbox

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func mountByDest(s *specs.Spec, dest string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dest {
			return &s.Mounts[i]
		}
	}
	return nil
}

func TestBuildSpecDefaults(t *testing.T) {
	s, err := BuildSpec(SpecOptions{Args: []string{"sh", "-c", "echo hi"}})
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if s.Version != specs.Version || s.Root.Path != "rootfs" || s.Root.Readonly || s.Hostname != "" {
		t.Errorf("spec header = %+v %+v", s.Version, s.Root)
	}
	if !reflect.DeepEqual(p.Args, []string{"sh", "-c", "echo hi"}) || p.Cwd != "/" || p.Terminal {
		t.Errorf("process = %+v", p)
	}
	if want := []string{DefaultPath, "HOME=/root"}; !reflect.DeepEqual(p.Env, want) {
		t.Errorf("env = %q, want %q", p.Env, want)
	}
	if p.User.UID != 0 || p.User.GID != 0 || !p.NoNewPrivileges {
		t.Errorf("user = %+v, no_new_privileges = %v", p.User, p.NoNewPrivileges)
	}
	c := p.Capabilities
	if !reflect.DeepEqual(c.Bounding, defaultCaps) || !reflect.DeepEqual(c.Effective, defaultCaps) ||
		!reflect.DeepEqual(c.Permitted, defaultCaps) || c.Inheritable != nil || c.Ambient != nil {
		t.Errorf("capabilities = %+v", c)
	}
	if len(defaultCaps) != 13 || slices.Contains(defaultCaps, "CAP_SYS_ADMIN") || slices.Contains(defaultCaps, "CAP_NET_ADMIN") || slices.Contains(defaultCaps, "CAP_MKNOD") {
		t.Errorf("default capabilities = %q", defaultCaps)
	}
	if want := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1048576, Soft: 1048576}}; !reflect.DeepEqual(p.Rlimits, want) {
		t.Errorf("rlimits = %+v", p.Rlimits)
	}
	var dests []string
	for _, m := range s.Mounts {
		dests = append(dests, m.Destination)
	}
	if want := []string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"}; !reflect.DeepEqual(dests, want) {
		t.Errorf("mounts = %q, want %q", dests, want)
	}
	for _, d := range []string{"/sys", "/sys/fs/cgroup"} {
		if m := mountByDest(s, d); !slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "rw") {
			t.Errorf("%s options = %q, want ro", d, m.Options)
		}
	}
	if m := mountByDest(s, "/dev/pts"); !slices.Contains(m.Options, "newinstance") {
		t.Errorf("/dev/pts must be a new devpts instance: %q", m.Options)
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.MaskedPaths, "/sys/firmware") ||
		!slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sysrq-trigger") {
		t.Errorf("masked %q, read-only %q", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	var ns []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		ns = append(ns, n.Type)
		if n.Path != "" {
			t.Errorf("namespace %s joins %s", n.Type, n.Path)
		}
	}
	if want := []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.CgroupNamespace}; !reflect.DeepEqual(ns, want) {
		t.Errorf("namespaces = %v", ns)
	}
	r := s.Linux.Resources
	if r == nil || r.Memory != nil || r.CPU != nil || r.Pids != nil || s.Linux.Sysctl != nil {
		t.Errorf("resources without limits = %+v, sysctl %v", r, s.Linux.Sysctl)
	}
}

func TestBuildSpecPrivileged(t *testing.T) {
	s, err := BuildSpec(SpecOptions{Args: []string{"sh"}, Privileged: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil {
		t.Errorf("privileged: masked %q, read-only %q; want none", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	c := s.Process.Capabilities
	if !reflect.DeepEqual(c.Bounding, allCaps) || !reflect.DeepEqual(c.Effective, allCaps) || !reflect.DeepEqual(c.Permitted, allCaps) {
		t.Errorf("privileged capabilities = %+v", c)
	}
	if s.Process.NoNewPrivileges {
		t.Error("privileged container has no_new_privileges")
	}
	for _, d := range []string{"/sys", "/sys/fs/cgroup"} {
		if m := mountByDest(s, d); !slices.Contains(m.Options, "rw") || slices.Contains(m.Options, "ro") {
			t.Errorf("%s options = %q, want rw", d, m.Options)
		}
	}
}

func TestCapabilityLists(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range allCaps {
		if seen[c] || !strings.HasPrefix(c, "CAP_") {
			t.Errorf("allCaps: duplicate or malformed %q", c)
		}
		seen[c] = true
	}
	// Linux 6.1 knows 41 capabilities (0..CAP_CHECKPOINT_RESTORE=40).
	if len(allCaps) != 41 {
		t.Errorf("allCaps has %d entries, want 41", len(allCaps))
	}
	for _, c := range defaultCaps {
		if !seen[c] {
			t.Errorf("default capability %q is not in allCaps", c)
		}
	}
}

func TestBuildSpecOptions(t *testing.T) {
	o := SpecOptions{
		Args:      []string{"app"},
		Env:       []string{"PATH=/opt/bin", "FOO=bar", "HOME=/home/u", "FOO=baz", "EMPTY=", "EQ=a=b"},
		Cwd:       "/work",
		UID:       1000,
		GID:       100,
		Terminal:  true,
		Hostname:  "box",
		MemoryMax: 256 << 20,
		CPUs:      1.5,
		PidsMax:   64,
		Sysctls:   map[string]string{"net.ipv4.ip_forward": "1"},
		ReadOnly:  true,
	}
	s, err := BuildSpec(o)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	// PATH and HOME are replaced in place, TERM comes with a terminal,
	// a repeated key keeps its first position with the last value.
	want := []string{"PATH=/opt/bin", "HOME=/home/u", "TERM=xterm", "FOO=baz", "EMPTY=", "EQ=a=b"}
	if !reflect.DeepEqual(p.Env, want) {
		t.Errorf("env = %q, want %q", p.Env, want)
	}
	if p.Cwd != "/work" || p.User.UID != 1000 || p.User.GID != 100 || !p.Terminal || s.Hostname != "box" || !s.Root.Readonly {
		t.Errorf("spec = %+v, process %+v", s, p)
	}
	r := s.Linux.Resources
	if r.Memory == nil || *r.Memory.Limit != 256<<20 {
		t.Errorf("memory = %+v", r.Memory)
	}
	if r.CPU == nil || *r.CPU.Quota != 150000 || *r.CPU.Period != 100000 {
		t.Errorf("cpu = %+v", r.CPU)
	}
	if r.Pids == nil || *r.Pids.Limit != 64 {
		t.Errorf("pids = %+v", r.Pids)
	}
	if s.Linux.Sysctl["net.ipv4.ip_forward"] != "1" {
		t.Errorf("sysctl = %v", s.Linux.Sysctl)
	}

	// TERM from the caller wins over the default one.
	s, err = BuildSpec(SpecOptions{Args: []string{"sh"}, Terminal: true, Env: []string{"TERM=vt100"}})
	if err != nil || !slices.Contains(s.Process.Env, "TERM=vt100") || slices.Contains(s.Process.Env, "TERM=xterm") {
		t.Errorf("env = %q, %v", s.Process.Env, err)
	}
	// A half CPU; negative and zero limits mean none.
	s, err = BuildSpec(SpecOptions{Args: []string{"sh"}, CPUs: 0.5, MemoryMax: -1, PidsMax: -1})
	if err != nil || *s.Linux.Resources.CPU.Quota != 50000 || s.Linux.Resources.Memory != nil || s.Linux.Resources.Pids != nil {
		t.Errorf("resources = %+v, %v", s.Linux.Resources, err)
	}
}

func TestBuildSpecErrors(t *testing.T) {
	tests := []struct {
		o    SpecOptions
		want string
	}{
		{SpecOptions{}, "no command given"},
		{SpecOptions{Args: []string{}}, "no command given"},
		{SpecOptions{Args: []string{"sh"}, Cwd: "work"}, `working directory "work" must be an absolute path`},
		{SpecOptions{Args: []string{"sh"}, Cwd: "./x"}, "must be an absolute path"},
		{SpecOptions{Args: []string{"sh"}, Env: []string{"NOEQUALS"}}, `bad environment variable "NOEQUALS": use KEY=VALUE`},
		{SpecOptions{Args: []string{"sh"}, Env: []string{"=value"}}, `bad environment variable "=value"`},
	}
	for _, tt := range tests {
		s, err := BuildSpec(tt.o)
		if err == nil || s != nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("BuildSpec(%+v) = %v, %v; want %q", tt.o, s, err, tt.want)
		}
	}
}

// TestBuildSpecDoesNotAliasDefaults: the capability lists of a returned
// spec share their backing array with the package-level defaults, so a
// caller that edits its spec changes every later spec.
func TestBuildSpecDoesNotAliasDefaults(t *testing.T) {
	s, err := BuildSpec(SpecOptions{Args: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	s.Process.Capabilities.Bounding[0] = "CAP_SYS_ADMIN"
	s2, err := BuildSpec(SpecOptions{Args: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	if s2.Process.Capabilities.Bounding[0] != "CAP_CHOWN" {
		t.Fatalf("editing one spec changed the defaults: %q", s2.Process.Capabilities.Bounding)
	}
}

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"1048576", 1048576},
		{"1", 1},
		{"256m", 256 << 20},
		{"256M", 256 << 20},
		{"256mb", 256 << 20},
		{"256MiB", 256 << 20},
		{"1G", 1 << 30},
		{"1g", 1 << 30},
		{"2GiB", 2 << 30},
		{"512k", 512 << 10},
		{"512K", 512 << 10},
		{"512KB", 512 << 10},
		{"1t", 1 << 40},
		{"100b", 100},
		{"100B", 100},
		{" 64m ", 64 << 20},
		{"+5", 5},
		{"007", 7},
		// The largest accepted sizes: 2^62 bytes.
		{"4611686018427387904", 1 << 62},
		{"4194304t", 1 << 62},
		{"4294967296g", 1 << 62},
	}
	for _, tt := range tests {
		got, err := ParseMemory(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	bad := []string{
		"", " ", "0", "0m", "-1", "-5m", "abc", "m", "k", "b", "ib", "1.5g", "1e9", "0x10", "1 m", "1mm", "1p", "1kk",
		"10gb5", "4611686018427387905", "4194305t", "4294967297g", "9223372036854775807", "99999999999999999999", "1__0",
	}
	for _, in := range bad {
		got, err := ParseMemory(in)
		if err == nil {
			t.Errorf("ParseMemory(%q) = %d, want an error", in, got)
			continue
		}
		if got != 0 || !strings.Contains(err.Error(), "bad size") || !strings.Contains(err.Error(), "256m") {
			t.Errorf("ParseMemory(%q) = %d, %v", in, got, err)
		}
	}
}

func FuzzParseMemory(f *testing.F) {
	for _, s := range []string{"256m", "1G", "512k", "1048576", "0", "-1", "1GiB", "4611686018427387904", "4194304t", "99999999999999999999k", "+1b", " 1 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseMemory(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("ParseMemory(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n <= 0 || n > 1<<62 {
			t.Fatalf("ParseMemory(%q) = %d, outside (0, 2^62]", s, n)
		}
		// The plain byte count parses back to the same value.
		if m, err := ParseMemory(strconv.FormatInt(n, 10)); err != nil || m != n {
			t.Fatalf("ParseMemory(%q) = %d, but ParseMemory(%d) = %d, %v", s, n, n, m, err)
		}
	})
}

func TestParseUser(t *testing.T) {
	tests := []struct {
		in       string
		uid, gid uint32
	}{
		{"0", 0, 0},
		{"1000", 1000, 0},
		{"1000:100", 1000, 100},
		{"0:0", 0, 0},
		{"4294967295:4294967295", 1<<32 - 1, 1<<32 - 1},
		{"007:010", 7, 10},
	}
	for _, tt := range tests {
		uid, gid, err := ParseUser(tt.in)
		if err != nil || uid != tt.uid || gid != tt.gid {
			t.Errorf("ParseUser(%q) = %d, %d, %v; want %d, %d", tt.in, uid, gid, err, tt.uid, tt.gid)
		}
	}
	for _, in := range []string{"", ":", "root", "1000:", ":100", "1000:users", "-1", "1:-1", "4294967296", "1:4294967296", "1:2:3", " 1", "1.0", "+1"} {
		uid, gid, err := ParseUser(in)
		if err == nil || uid != 0 || gid != 0 || err.Error() != "bad user "+strconv.Quote(in)+": use numeric UID[:GID]" {
			t.Errorf("ParseUser(%q) = %d, %d, %v; want a bad user error", in, uid, gid, err)
		}
	}
}

func TestParseSysctls(t *testing.T) {
	got, err := ParseSysctls(nil)
	if got != nil || err != nil {
		t.Fatalf("ParseSysctls(nil) = %v, %v", got, err)
	}
	got, err = ParseSysctls([]string{"net.ipv4.ip_forward=1", "kernel.msgmax=65536", "x.y=a=b", "e=", "net.ipv4.ip_forward=0"})
	want := map[string]string{"net.ipv4.ip_forward": "0", "kernel.msgmax": "65536", "x.y": "a=b", "e": ""}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseSysctls = %v, %v; want %v", got, err, want)
	}
	for _, kv := range []string{"novalue", "=1", "net/ipv4=1", "../../etc/passwd=x", "a..b=1", "a b=1", " a=1"} {
		got, err := ParseSysctls([]string{"ok=1", kv})
		if err == nil || got != nil || err.Error() != "bad sysctl "+strconv.Quote(kv)+": use name=value, e.g. net.ipv4.ip_forward=1" {
			t.Errorf("ParseSysctls(%q) = %v, %v; want a bad sysctl error", kv, got, err)
		}
	}
}

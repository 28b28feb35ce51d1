package shim

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	api "github.com/coffer-project/coffer/api/agent"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestPodDir(t *testing.T) {
	c := Config{RuntimeDir: "/run/coffer/shim"}
	if got := c.PodDir("default", "c1"); got != "/run/coffer/shim/default/c1" {
		t.Errorf("PodDir(default, c1) = %s", got)
	}
	long := strings.Repeat("ab", 32) // a CRI id: 64 hex digits
	got := c.PodDir("k8s.io", long)
	if filepath.Dir(got) != "/run/coffer/shim/k8s.io" || len(filepath.Base(got)) != 16 {
		t.Errorf("PodDir of a 64-char id = %s, want a 16-char hashed name", got)
	}
	if got == c.PodDir("k8s.io", strings.Repeat("ba", 32)) {
		t.Error("two ids hash to the same pod dir")
	}
	for _, bad := range []string{"../x", "a/b", ".hidden"} {
		if d := c.PodDir(bad, bad); !strings.HasPrefix(d, "/run/coffer/shim/") || strings.Count(d[len("/run/coffer/shim/"):], "/") != 1 {
			t.Errorf("PodDir(%q) = %s escapes or nests", bad, d)
		}
	}
}

func TestGuestSpecDropsHostResources(t *testing.T) {
	s := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/data", Source: "/srv/data", Options: []string{"bind"}},
	}, Linux: &specs.Linux{
		CgroupsPath: "/default/c1",
		Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"},
		},
	}}
	guestSpec(s)
	if len(s.Mounts) != 2 {
		t.Errorf("mounts = %+v: bind mounts stay for shareVolumes", s.Mounts)
	}
	if s.Linux.CgroupsPath != "" {
		t.Errorf("cgroups path kept: %q", s.Linux.CgroupsPath)
	}
	if len(s.Linux.Namespaces) != 1 || s.Linux.Namespaces[0].Type != specs.PIDNamespace {
		t.Errorf("namespaces = %+v, want only the pid namespace", s.Linux.Namespaces)
	}
	guestSpec(&specs.Spec{}) // no Linux section: no panic
}

func TestMetricsV2(t *testing.T) {
	m := metricsV2(&api.CgroupStats{
		CpuUsageUsec: 10, PidsCurrent: 2, PidsMax: 0, MemoryCurrent: 4096, MemoryMax: 1 << 20,
		MemoryOomKill: 1, MemoryStat: map[string]uint64{"anon": 7, "file": 8},
	})
	if m.CPU.UsageUsec != 10 || m.Pids.Current != 2 || m.Pids.Limit != math.MaxUint64 {
		t.Errorf("cpu/pids = %+v %+v", m.CPU, m.Pids)
	}
	if m.Memory.Usage != 4096 || m.Memory.UsageLimit != 1<<20 || m.Memory.Anon != 7 || m.Memory.File != 8 {
		t.Errorf("memory = %+v", m.Memory)
	}
	if m.MemoryEvents.OomKill != 1 {
		t.Errorf("oom kills = %d, want 1", m.MemoryEvents.OomKill)
	}
	if metricsV2(nil) == nil {
		t.Error("nil stats gave nil metrics")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := &podRecord{ID: "c1", ShimPID: 10, QEMUPID: 11, Bundle: "/b", GuestDir: "/g",
		Joined: []joinedDisk{{Container: "c2", Serial: "c-0011", Image: dir + "/c-0011.img"}}}
	if err := writeRecord(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := readRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("record = %+v, want %+v", got, want)
	}
}

func TestRecordJoined(t *testing.T) {
	r := &podRecord{Joined: []joinedDisk{{Container: "c2"}, {Container: "c3"}}}
	if !r.joined("c3") || r.joined("c4") || (&podRecord{}).joined("c2") {
		t.Error("joined() disagrees with the record")
	}
}

func TestDecodeResources(t *testing.T) {
	good := &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
		Value: []byte(`{"memory":{"limit":104857600},"cpu":{"quota":50000,"period":100000}}`)}
	b, err := decodeResources(good)
	if err != nil || !strings.Contains(string(b), `"limit":104857600`) {
		t.Fatalf("decodeResources = %s, %v", b, err)
	}
	for name, a := range map[string]*anypb.Any{
		"windows":  {TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/WindowsResources", Value: []byte(`{}`)},
		"bad json": {TypeUrl: good.TypeUrl, Value: []byte(`{"memory":`)},
		"too big":  {TypeUrl: good.TypeUrl, Value: make([]byte, maxResources+1)},
	} {
		if _, err := decodeResources(a); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// An agent call that fails because the container (or its whole pod) was
// deleted meanwhile reports NotFound, not a dead VM.
func TestAgentErrAfterDelete(t *testing.T) {
	s := &Service{containers: map[string]*container{"c1": {id: "c1", init: &process{cid: "c1"}, execs: map[string]*process{}}}}
	closed := errors.New("ttrpc: closed")
	// The container is still listed but its pod is gone.
	if err := s.agentErr("c1", "", nil, closed); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "pod of container c1 was removed") {
		t.Errorf("pod gone: %v", err)
	}
	// The container itself was deleted.
	if err := s.agentErr("c2", "", nil, closed); !errdefs.IsNotFound(err) {
		t.Errorf("container gone: %v", err)
	}
	// So was the exec.
	if err := s.agentErr("c1", "e1", nil, closed); !errdefs.IsNotFound(err) {
		t.Errorf("exec gone: %v", err)
	}
}

// After the pod VM is gone (Shutdown with Now), Exec and Start of a
// listed container answer FailedPrecondition instead of dereferencing the
// missing pod.
func TestExecStartWithoutPod(t *testing.T) {
	s := &Service{containers: map[string]*container{"c1": {id: "c1",
		init: &process{cid: "c1", status: task.Status_CREATED}, execs: map[string]*process{}}}}
	spec, _ := json.Marshal(&specs.Process{Args: []string{"true"}, Cwd: "/"})
	_, err := s.Exec(context.Background(), &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1",
		Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: spec}})
	if err == nil || !errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) {
		t.Errorf("exec without a pod: %v", err)
	}
	if _, err := s.Start(context.Background(), &taskAPI.StartRequest{ID: "c1"}); err == nil || !errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) {
		t.Errorf("start without a pod: %v", err)
	}
}

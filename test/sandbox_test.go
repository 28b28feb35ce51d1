//go:build integration

package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/guest"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/sandbox"
)

// startSandbox boots a pod VM with the busybox rootfs disk through the
// sandbox package directly (the CLI runs one container per pod).
func startSandbox(t *testing.T, name string) *sandbox.Sandbox {
	t.Helper()
	m, err := guest.Load("") // $COFFER_GUEST_DIR, else the default cache dir
	if err != nil {
		t.Fatal(err)
	}
	podDir, err := sandbox.CreatePodDir(runtimeDir, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(podDir) })
	img := filepath.Join(podDir, "rootfs.img")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := sandbox.BuildRootfsImage(ctx, busybox, img, sandbox.FSErofs); err != nil {
		t.Fatal(err)
	}
	sb, err := sandbox.Start(ctx, sandbox.Config{
		ID: name, StateDir: podDir, Kernel: m.KernelPath(), Initrd: m.InitrdPath(), Cmdline: m.Cmdline,
		Disks: []hypervisor.Disk{{Serial: "rootfs0", Path: img, ReadOnly: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sb.Stop(ctx); err != nil {
			t.Errorf("stop sandbox: %v", err)
		}
	})
	if _, err := sb.Agent.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: name, Hostname: name}); err != nil {
		t.Fatal(err)
	}
	return sb
}

func createContainer(t *testing.T, ctx context.Context, sb *sandbox.Sandbox, id, hostname string, args ...string) {
	t.Helper()
	spec, err := sandbox.BuildSpec(sandbox.SpecOptions{Args: args, Hostname: hostname})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(spec)
	if _, err := sb.Agent.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: id, OciSpec: b,
		Rootfs: &api.Storage{Driver: "blk", Source: "rootfs0", Fstype: sandbox.FSErofs}}); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	if _, err := sb.Agent.StartContainer(ctx, &api.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
}

func execOutput(t *testing.T, ctx context.Context, sb *sandbox.Sandbox, cid, execID string, args ...string) (string, int32) {
	t.Helper()
	spec, _ := sandbox.BuildSpec(sandbox.SpecOptions{Args: args})
	p, _ := json.Marshal(spec.Process)
	if _, err := sb.Agent.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: cid, ExecId: execID, Process: p}); err != nil {
		t.Fatalf("exec in %s: %v", cid, err)
	}
	var out bytes.Buffer
	if err := sandbox.CopyOutput(ctx, sb.Agent, cid, execID, false, &out); err != nil {
		t.Fatal(err)
	}
	w, err := sb.Agent.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: cid, ExecId: execID})
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), w.ExitStatus
}

func TestTwoContainersOneSandbox(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t, "two")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	createContainer(t, ctx, sb, "a", "alpha", "sleep", "600")
	createContainer(t, ctx, sb, "b", "beta", "sleep", "600")

	bootA, _ := execOutput(t, ctx, sb, "a", "e1", "cat", "/proc/sys/kernel/random/boot_id")
	bootB, _ := execOutput(t, ctx, sb, "b", "e1", "cat", "/proc/sys/kernel/random/boot_id")
	hostBoot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if bootA == "" || bootA != bootB {
		t.Fatalf("containers of one pod must share the VM kernel: boot ids %q vs %q", bootA, bootB)
	}
	if bootA == string(hostBoot) {
		t.Fatal("the containers run on the host kernel")
	}
	// Each container has its own mount and ipc namespaces.
	for _, ns := range []string{"mnt", "ipc"} {
		nsA, _ := execOutput(t, ctx, sb, "a", "ns-"+ns, "readlink", "/proc/self/ns/"+ns)
		nsB, _ := execOutput(t, ctx, sb, "b", "ns-"+ns, "readlink", "/proc/self/ns/"+ns)
		if nsA == "" || nsA == nsB {
			t.Fatalf("%s namespaces %q and %q: each container needs its own", ns, nsA, nsB)
		}
	}
	hA, _ := execOutput(t, ctx, sb, "a", "e2", "hostname")
	hB, _ := execOutput(t, ctx, sb, "b", "e2", "hostname")
	if hA != "alpha\n" || hB != "beta\n" {
		t.Fatalf("hostnames %q %q: each container has its own uts namespace", hA, hB)
	}
	// Separate pid namespaces: each sees only its own processes.
	// (echo is a builtin: the shell and the container's sleep are all.)
	psA, _ := execOutput(t, ctx, sb, "a", "e3", "sh", "-c", "echo /proc/[0-9]*")
	if n := len(strings.Fields(psA)); n != 2 {
		t.Fatalf("container a sees %d processes (%q), want 2: its own pid namespace", n, psA)
	}
	if out, code := execOutput(t, ctx, sb, "a", "e4", "sh", "-c", "exit 9"); code != 9 {
		t.Fatalf("exec exit %d (%q), want 9", code, out)
	}
	st, err := sb.Agent.StatsContainer(ctx, &api.StatsContainerRequest{ContainerId: "a"})
	if err != nil || st.Cgroup.PidsCurrent == 0 || st.Cgroup.MemoryCurrent == 0 {
		t.Fatalf("stats: %+v, %v", st, err)
	}
	list, err := sb.Agent.ListContainers(ctx, &api.ListContainersRequest{})
	if err != nil || len(list.Containers) != 2 {
		t.Fatalf("list: %+v, %v", list, err)
	}
	// Removing one container leaves the other running.
	if _, err := sb.Agent.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "a", Force: true}); err != nil {
		t.Fatal(err)
	}
	if out, code := execOutput(t, ctx, sb, "b", "e5", "echo", "still here"); code != 0 || out != "still here\n" {
		t.Fatalf("b after removing a: %q %d", out, code)
	}
	if _, err := sb.Agent.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "a", ExecId: "x", Process: []byte(`{"args":["true"],"cwd":"/"}`)}); err == nil {
		t.Fatal("exec into a removed container succeeded")
	}
	// Stop goes through the agent: the guest powers itself off (QEMU
	// reports a guest shutdown, not the host's quit or a kill).
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if r := sb.ShutdownReason(); r != "guest-shutdown" {
		t.Fatalf("the pod VM ended with %q, want a guest power-off through the agent", r)
	}
}

// The agent refuses malformed requests from the host with clear errors
// and keeps serving.
func TestAgentRejectsBadRequests(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t, "badreq")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cases := []struct {
		name string
		req  *api.CreateContainerRequest
		want string
	}{
		{"traversal id", &api.CreateContainerRequest{ContainerId: "../../etc", OciSpec: []byte(`{}`)}, "invalid container id"},
		{"not json", &api.CreateContainerRequest{ContainerId: "c", OciSpec: []byte(`{`), Rootfs: &api.Storage{Driver: "blk", Source: "rootfs0", Fstype: "erofs"}}, "decode OCI spec"},
		{"no process", &api.CreateContainerRequest{ContainerId: "c", OciSpec: []byte(`{"ociVersion":"1.0.2"}`), Rootfs: &api.Storage{Driver: "blk", Source: "rootfs0", Fstype: "erofs"}}, "no process"},
		{"no rootfs", &api.CreateContainerRequest{ContainerId: "c", OciSpec: []byte(`{"process":{"args":["true"]}}`)}, "rootfs"},
		{"bad disk", &api.CreateContainerRequest{ContainerId: "c", OciSpec: []byte(`{"process":{"args":["true"],"cwd":"/"}}`), Rootfs: &api.Storage{Driver: "blk", Source: "../x", Fstype: "erofs"}}, "invalid disk serial"},
		{"bad fstype", &api.CreateContainerRequest{ContainerId: "c", OciSpec: []byte(`{"process":{"args":["true"],"cwd":"/"}}`), Rootfs: &api.Storage{Driver: "blk", Source: "rootfs0", Fstype: "vfat"}}, "unsupported rootfs filesystem"},
	}
	for _, c := range cases {
		_, err := sb.Agent.CreateContainer(ctx, c.req)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	if _, err := sb.Agent.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "nope"}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("wait on unknown container: %v", err)
	}
	if _, err := sb.Agent.Check(ctx, &api.CheckRequest{}); err != nil {
		t.Fatalf("agent stopped serving after bad requests: %v", err)
	}
}

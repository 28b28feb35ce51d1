//go:build integration

package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pauseImage is the pod sandbox image the CRI tests build locally (no
// registry here): the busybox rootfs sleeping forever.
const pauseImage = "coffer.test/pause:1"

// criConfig is the CRI part of the test containerd's config: the
// `coffer` runtime handler, the local sandbox image, no host CNI
// directories and no AppArmor profile (the container runs in the VM).
func criConfig(dir string) string {
	return fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.coffer]
      runtime_type = "io.containerd.coffer.v2"
`, pauseImage, filepath.Join(dir, "cni-bin"), filepath.Join(dir, "cni-conf"))
}

// crictl runs crictl against c's CRI socket.
func (c *containerd) crictl(t *testing.T, args ...string) result {
	t.Helper()
	ep := "unix://" + c.sock
	return runCmd(t, nil, "", filepath.Join(toolsDir, "crictl"),
		append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "2m"}, args...)...)
}

// mustCrictl runs crictl and returns its trimmed stdout; failure is fatal.
func (c *containerd) mustCrictl(t *testing.T, args ...string) string {
	t.Helper()
	r := c.crictl(t, args...)
	if r.code != 0 {
		t.Fatalf("crictl %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func writeJSON(t *testing.T, path string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCRIPod: through containerd's CRI plugin and crictl, a pod sandbox
// of the `coffer` runtime handler runs two containers in one VM (one
// qemu, one shim, the same guest boot id and a guest kernel, not the
// host's); stopping and removing the pod leaves no VM, shim, pod dir or
// mount. The pod uses the node's network namespace (NamespaceMode NODE),
// so no CNI plugin is needed. On containerd 1.6 and 2 (whose CRI reads
// the same version 2 config).
func TestCRIPod(t *testing.T) {
	if _, err := exec.LookPath(filepath.Join(toolsDir, "crictl")); err != nil {
		t.Skipf("crictl is not installed (scripts/setup.sh builds it into %s): %v", toolsDir, err)
	}
	for _, rel := range []containerdRelease{containerd16, containerd2} {
		t.Run(rel.name, func(t *testing.T) { testCRIPod(t, rel) })
	}
}

func testCRIPod(t *testing.T, rel containerdRelease) {
	dir := t.TempDir()
	for _, d := range []string{"cni-bin", "cni-conf", "logs"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	c := startContainerdRelease(t, rel, criConfig(dir))
	c.importImage(t, "k8s.io", pauseImage, []string{"/bin/sleep", "2147483647"})
	c.importImage(t, "k8s.io", busyboxImage, []string{"sh"})
	qemuBefore, shimsBefore, mountsBefore := len(ourQEMUs()), len(c.shims()), c.ourMounts()

	const nodeNetwork = 2 // runtime.v1.NamespaceMode NODE
	podCfg := writeJSON(t, filepath.Join(dir, "pod.json"), map[string]any{
		"metadata":      map[string]any{"name": "coffer-pod", "namespace": "default", "uid": "coffer-pod-uid", "attempt": 0},
		"hostname":      "coffer-pod",
		"log_directory": filepath.Join(dir, "logs"),
		"linux": map[string]any{"security_context": map[string]any{
			"namespace_options": map[string]any{"network": nodeNetwork},
		}},
	})
	pod := c.mustCrictl(t, "runp", "--runtime", "coffer", podCfg)
	// On failure, end the pod while containerd still runs (cleanups run
	// last-in first-out), so no shim or qemu outlives the test.
	t.Cleanup(func() {
		if t.Failed() {
			c.crictl(t, "stopp", pod)
			c.crictl(t, "rmp", "-f", pod)
		}
	})
	const script = "cat /proc/sys/kernel/random/boot_id; uname -r; echo ready; exec sleep 1000"
	var ids []string
	for _, name := range []string{"app1", "app2"} {
		cfg := writeJSON(t, filepath.Join(dir, name+".json"), map[string]any{
			"metadata": map[string]any{"name": name},
			"image":    map[string]any{"image": busyboxImage},
			"command":  []string{"sh", "-c", script},
			"log_path": name + ".log",
			"linux":    map[string]any{},
		})
		id := c.mustCrictl(t, "create", pod, cfg, podCfg)
		c.mustCrictl(t, "start", id)
		ids = append(ids, id)
	}
	var boots, kernels []string
	for _, id := range ids {
		var logs string
		waitFor(t, 60*time.Second, func() bool {
			logs = c.crictl(t, "logs", id).stdout
			return strings.Contains(logs, "ready")
		})
		f := strings.Fields(logs)
		if len(f) < 3 {
			t.Fatalf("container %s logs = %q, want boot id, kernel release, ready", id, logs)
		}
		boots, kernels = append(boots, f[0]), append(kernels, f[1])
	}
	hostBoot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	if boots[0] != boots[1] || boots[0] == strings.TrimSpace(string(hostBoot)) {
		t.Errorf("boot ids %v (host %s): want the two containers in one guest", boots, strings.TrimSpace(string(hostBoot)))
	}
	if kernels[0] != kernels[1] || kernels[0] == hostKernel(t) {
		t.Errorf("kernels %v (host %s): want one guest kernel", kernels, hostKernel(t))
	}
	if n := len(ourQEMUs()) - qemuBefore; n != 1 {
		t.Errorf("%d qemu processes for the pod, want 1", n)
	}
	if n := len(c.shims()) - shimsBefore; n != 1 {
		t.Errorf("%d shims for the pod, want 1", n)
	}
	// Exec (CRI ExecSync) in the second container reaches the same VM.
	if out := c.mustCrictl(t, "exec", "-s", ids[1], "cat", "/proc/sys/kernel/random/boot_id"); out != boots[0] {
		t.Errorf("crictl exec boot id = %q, want %q", out, boots[0])
	}
	if ps := c.mustCrictl(t, "ps", "-q", "--pod", pod); len(strings.Fields(ps)) != 2 {
		t.Errorf("crictl ps = %q, want the two containers", ps)
	}
	c.mustCrictl(t, "stopp", pod)
	c.mustCrictl(t, "rmp", pod)
	if out := c.mustCrictl(t, "pods", "-q"); out != "" {
		t.Errorf("pods left after rmp: %q", out)
	}
	if out := c.mustCrictl(t, "ps", "-a", "-q"); out != "" {
		t.Errorf("containers left after rmp: %q", out)
	}
	waitFor(t, 20*time.Second, func() bool {
		return len(ourQEMUs()) == qemuBefore && len(c.shims()) == shimsBefore && len(shimPodsLeft()) == 0 &&
			strings.Join(c.ourMounts(), "\n") == strings.Join(mountsBefore, "\n")
	})
}

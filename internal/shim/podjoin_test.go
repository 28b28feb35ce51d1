package shim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/namespaces"
	cshim "github.com/containerd/containerd/runtime/v2/shim"
)

func TestPodRole(t *testing.T) {
	for _, tc := range []struct {
		ann     map[string]string
		id      string
		joining bool
	}{
		{nil, "", false},
		{map[string]string{AnnotationContainerType: "sandbox", AnnotationSandboxID: "p1"}, "p1", false},
		{map[string]string{AnnotationContainerType: "container", AnnotationSandboxID: "p1"}, "p1", true},
		{map[string]string{AnnotationContainerType: "container"}, "", false},
	} {
		id, joining := podRole(tc.ann)
		if id != tc.id || joining != tc.joining {
			t.Errorf("podRole(%v) = %q, %v; want %q, %v", tc.ann, id, joining, tc.id, tc.joining)
		}
	}
}

func TestDiskSerial(t *testing.T) {
	a, b := diskSerial("c2"), diskSerial("c3")
	if a == b || a != diskSerial("c2") {
		t.Errorf("serials %q, %q: want stable and distinct per id", a, b)
	}
	long := diskSerial(strings.Repeat("x", 200))
	if len(long) > 20 || len(a) > 20 || a == "rootfs0" {
		t.Errorf("serial %q / %q: want at most 20 bytes and not rootfs0", a, long)
	}
}

func TestBundleAnnotations(t *testing.T) {
	dir := t.TempDir()
	if _, err := bundleAnnotations(dir); err == nil {
		t.Error("no config.json: want an error")
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"annotations":{"`+AnnotationSandboxID+`":"p"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ann, err := bundleAnnotations(dir)
	if err != nil || ann[AnnotationSandboxID] != "p" {
		t.Errorf("annotations = %v, %v; want the sandbox id", ann, err)
	}
}

// A container joining a pod whose shim is not running fails with an
// error naming the pod, and spawns nothing.
func TestJoinPodWithoutShim(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	ctx := namespaces.WithNamespace(context.Background(), "coffer-test")
	m := NewManager(Config{}, nil)
	_, err := m.joinPod(ctx, "c2", "no-such-pod-"+filepath.Base(dir), cshim.StartOpts{Address: filepath.Join(dir, "containerd.sock")})
	if err == nil || !strings.Contains(err.Error(), "no Coffer shim serves that pod") {
		t.Fatalf("joinPod = %v, want an error saying the pod's shim is not running", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "address")); !os.IsNotExist(err) {
		t.Errorf("address file written for a failed join: %v", err)
	}
}

// Only a CRI pod sandbox pays for hot-plug root ports.
func TestPodHotplugSlots(t *testing.T) {
	for ann, want := range map[string]int{"sandbox": hotplugSlots, "container": 0, "": 0} {
		if got := podHotplugSlots(map[string]string{AnnotationContainerType: ann}); got != want {
			t.Errorf("container-type %q: %d slots, want %d", ann, got, want)
		}
	}
	if got := podHotplugSlots(nil); got != 0 {
		t.Errorf("no annotations: %d slots", got)
	}
}

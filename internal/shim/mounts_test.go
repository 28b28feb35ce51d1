package shim

import (
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestPodNeedsSharedFS(t *testing.T) {
	bind := specs.Mount{Destination: "/data", Type: "bind", Source: "/srv", Options: []string{"rbind", "ro"}}
	optBind := specs.Mount{Destination: "/data", Type: "none", Source: "/srv", Options: []string{"rbind"}}
	shm := specs.Mount{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/shm", Options: []string{"rbind"}}
	tmpfs := specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs"}
	sandboxAnn := map[string]string{AnnotationContainerType: containerTypeSandbox}
	on, off := Config{SharedFS: true}, Config{SharedFS: false}
	for _, tc := range []struct {
		name string
		cfg  Config
		spec specs.Spec
		want bool
	}{
		{"pod of one with a bind", off, specs.Spec{Mounts: []specs.Mount{tmpfs, bind}}, true},
		{"bind by option", off, specs.Spec{Mounts: []specs.Mount{optBind}}, true},
		{"pod of one without binds", on, specs.Spec{Mounts: []specs.Mount{tmpfs}}, false},
		{"only the shm bind", on, specs.Spec{Mounts: []specs.Mount{shm}}, false},
		{"CRI sandbox, shared_fs on", on, specs.Spec{Annotations: sandboxAnn}, true},
		{"CRI sandbox, shared_fs off", off, specs.Spec{Annotations: sandboxAnn}, false},
	} {
		if got := podNeedsSharedFS(tc.cfg, &tc.spec); got != tc.want {
			t.Errorf("%s: podNeedsSharedFS = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestConfigSharedFS(t *testing.T) {
	if !DefaultConfig().SharedFS {
		t.Error("shared_fs is off by default")
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("shared_fs = false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := DefaultConfig().Resolve(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.SharedFS {
		t.Error("shared_fs = false was ignored")
	}
	if err := os.WriteFile(path, []byte("shared_fs = \"yes\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := DefaultConfig().Resolve(path, nil); err == nil {
		t.Error("shared_fs = \"yes\" was accepted")
	}
}

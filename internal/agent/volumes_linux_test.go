package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	api "github.com/coffer-project/coffer/api/agent"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestResolveVolumes(t *testing.T) {
	root := "/run/coffer/shared"
	spec := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/data", Type: "bind", Source: "v0", Options: []string{"rbind", "rw", "dev"}},
		{Destination: "/conf", Type: "none", Source: "v1", Options: []string{"rbind", "rw"}},
	}}
	vols := []*api.SharedVolume{{Name: "v0"}, {Name: "v1", Readonly: true}}
	used, err := resolveVolumes(spec, vols, root)
	if err != nil || !used {
		t.Fatalf("resolveVolumes = %v, %v", used, err)
	}
	if m := spec.Mounts[1]; m.Source != root+"/v0" || !slices.Equal(m.Options, []string{"rbind", "rw", "nodev"}) {
		t.Errorf("rw volume mount = %+v", m)
	}
	// A read-only volume ends in "ro" whatever the spec said before.
	if m := spec.Mounts[2]; m.Source != root+"/v1" || m.Options[len(m.Options)-1] != "ro" {
		t.Errorf("ro volume mount = %+v", m)
	}
	if spec.Mounts[0].Source != "proc" {
		t.Errorf("non-bind mount changed: %+v", spec.Mounts[0])
	}

	for name, tc := range map[string]struct {
		mounts []specs.Mount
		vols   []*api.SharedVolume
		want   string
	}{
		"undeclared bind":      {[]specs.Mount{{Destination: "/x", Type: "bind", Source: "/"}}, nil, "not a shared volume"},
		"guest path":           {[]specs.Mount{{Destination: "/x", Type: "bind", Source: "/run/coffer/containers"}}, vols, "not a shared volume"},
		"bind option only":     {[]specs.Mount{{Destination: "/x", Source: "/etc", Options: []string{"bind"}}}, vols, "not a shared volume"},
		"traversal name":       {nil, []*api.SharedVolume{{Name: "../etc"}}, "invalid volume name"},
		"empty name":           {nil, []*api.SharedVolume{{Name: ""}}, "invalid volume name"},
		"duplicate":            {nil, []*api.SharedVolume{{Name: "v0"}, {Name: "v0"}}, "declared twice"},
		"name with slash path": {[]specs.Mount{{Destination: "/x", Type: "bind", Source: "v0/../../etc"}}, vols, "not a shared volume"},
	} {
		_, err := resolveVolumes(&specs.Spec{Mounts: tc.mounts}, tc.vols, root)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
	if used, err := resolveVolumes(&specs.Spec{}, nil, root); used || err != nil {
		t.Errorf("no mounts: %v, %v", used, err)
	}
}

func TestCheckVolumeSources(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "v0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(root, "v1")); err != nil {
		t.Fatal(err)
	}
	ok := &specs.Spec{Mounts: []specs.Mount{{Destination: "/d", Type: "bind", Source: filepath.Join(root, "v0")}}}
	if err := checkVolumeSources(ok, root); err != nil {
		t.Errorf("directory volume: %v", err)
	}
	for _, name := range []string{"v1", "v2"} {
		bad := &specs.Spec{Mounts: []specs.Mount{{Destination: "/d", Type: "bind", Source: filepath.Join(root, name)}}}
		if err := checkVolumeSources(bad, root); err == nil {
			t.Errorf("volume %s accepted", name)
		}
	}
}

// FuzzResolveVolumes: whatever mounts and volume names the host sends,
// an accepted spec binds only declared volumes, directly below the share,
// read-only ones with "ro" as the last word.
func FuzzResolveVolumes(f *testing.F) {
	f.Add("v0", false, "v0", "bind", "rbind,rw", "/data")
	f.Add("v1", true, "v1", "none", "rbind", "/conf")
	f.Add("..", false, "..", "bind", "bind", "/x")
	f.Add("v0", false, "/etc", "bind", "rbind", "/x")
	f.Fuzz(func(t *testing.T, name string, ro bool, source, typ, opts, dest string) {
		root := "/run/coffer/shared"
		spec := &specs.Spec{Mounts: []specs.Mount{{Destination: dest, Type: typ, Source: source, Options: strings.Split(opts, ",")}}}
		vols := []*api.SharedVolume{{Name: name, Readonly: ro}}
		used, err := resolveVolumes(spec, vols, root)
		if err != nil {
			return
		}
		m := spec.Mounts[0]
		if !isBindMount(m) {
			if used || m.Source != source {
				t.Fatalf("a non-bind mount was changed: %+v", m)
			}
			return
		}
		if !used || filepath.Dir(m.Source) != root || filepath.Base(m.Source) != name || !safeID(name) {
			t.Fatalf("bind mount accepted with source %q (volume %q)", m.Source, name)
		}
		if ro && m.Options[len(m.Options)-1] != "ro" {
			t.Fatalf("read-only volume mounted with %v", m.Options)
		}
		if !slices.Contains(m.Options, "nodev") || slices.Contains(m.Options, "dev") {
			t.Fatalf("options %v", m.Options)
		}
	})
}

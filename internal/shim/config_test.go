package shim

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/sandbox"
	"github.com/containerd/containerd/errdefs"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func baseConfig(file string) Config {
	return Config{GuestDir: "/builtin/guest", RuntimeDir: "/run/x", ConfigFile: file,
		Accel: hypervisor.AccelAuto, MemoryMiB: defaultMemoryMiB, VCPUs: defaultVCPUs, LogLevel: slog.LevelInfo}
}

// TestResolvePrecedence: built-in defaults < default config file <
// ConfigPath file (which replaces the default file) < annotations.
func TestResolvePrecedence(t *testing.T) {
	dir := t.TempDir()
	def := writeFile(t, dir, "config.toml", `
hypervisor_path = "/opt/qemu/bin/qemu-system-x86_64"
guest_dir = "/var/lib/coffer/guest"
memory_mib = 512
vcpus = 2
accelerator = "tcg"
log_level = "debug"
`)
	other := writeFile(t, dir, "other.toml", "memory_mib = 1024\n")

	// No file at all: the built-in defaults.
	got, err := baseConfig(filepath.Join(dir, "missing.toml")).Resolve("", nil)
	if err != nil {
		t.Fatalf("missing default file: %v", err)
	}
	if got != baseConfig(filepath.Join(dir, "missing.toml")) {
		t.Errorf("missing default file changed the config: %+v", got)
	}

	// The default file overrides every built-in value.
	got, err = baseConfig(def).Resolve("", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{GuestDir: "/var/lib/coffer/guest", RuntimeDir: "/run/x", ConfigFile: def,
		HypervisorPath: "/opt/qemu/bin/qemu-system-x86_64", Accel: hypervisor.AccelTCG,
		MemoryMiB: 512, VCPUs: 2, LogLevel: slog.LevelDebug}
	if got != want {
		t.Errorf("default file:\n got %+v\nwant %+v", got, want)
	}

	// ConfigPath replaces the default file: only its keys apply on top
	// of the built-in defaults.
	got, err = baseConfig(def).Resolve(other, nil)
	if err != nil {
		t.Fatal(err)
	}
	want = baseConfig(def)
	want.MemoryMiB = 1024
	if got != want {
		t.Errorf("ConfigPath:\n got %+v\nwant %+v", got, want)
	}

	// Annotations win over both files.
	got, err = baseConfig(def).Resolve("", map[string]string{AnnotationMemoryMiB: "768", AnnotationVCPUs: "3", "io.coffer.other": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if got.MemoryMiB != 768 || got.VCPUs != 3 || got.Accel != hypervisor.AccelTCG {
		t.Errorf("annotations: memory %d vcpus %d accel %s, want 768 3 tcg", got.MemoryMiB, got.VCPUs, got.Accel)
	}

	// CRI's sandbox memory (bytes, rounded up to MiB) adds to the
	// configured memory...
	got, err = baseConfig(def).Resolve("", map[string]string{AnnotationCRISandboxMemory: "134217729"})
	if err != nil {
		t.Fatal(err)
	}
	if got.MemoryMiB != 512+129 {
		t.Errorf("sandbox-memory: %d MiB, want %d", got.MemoryMiB, 512+129)
	}
	// ... 0 means no pod limit ...
	if got, _ := baseConfig(def).Resolve("", map[string]string{AnnotationCRISandboxMemory: "0"}); got.MemoryMiB != 512 {
		t.Errorf("sandbox-memory 0: %d MiB, want 512", got.MemoryMiB)
	}
	// ... and the explicit Coffer annotation wins over it.
	got, err = baseConfig(def).Resolve("", map[string]string{AnnotationCRISandboxMemory: "134217728", AnnotationMemoryMiB: "300"})
	if err != nil || got.MemoryMiB != 300 {
		t.Errorf("memory_mib + sandbox-memory: %d MiB (%v), want 300", got.MemoryMiB, err)
	}
}

// TestResolveErrors: every bad input is an invalid-argument error that
// names the file or annotation and the key.
func TestResolveErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, file, configPath string
		ann                    map[string]string
		want                   []string
	}{
		{name: "unknown key", file: "memory_mib = 512\nmemroy_mib = 1\n", want: []string{"unknown keys memroy_mib"}},
		{name: "unknown table", file: "[vm]\nmemory_mib = 1\n", want: []string{"unknown keys", "vm.memory_mib"}},
		{name: "syntax", file: "memory_mib = \n", want: []string{"parse"}},
		{name: "wrong type", file: "vcpus = \"two\"\n", want: []string{"parse", "vcpus"}},
		{name: "memory zero", file: "memory_mib = 0\n", want: []string{"memory_mib", "out of range"}},
		{name: "vcpus too many", file: "vcpus = 1000\n", want: []string{"vcpus", "out of range"}},
		{name: "accelerator", file: "accelerator = \"hvf\"\n", want: []string{"accelerator", "hvf"}},
		{name: "log level", file: "log_level = \"loud\"\n", want: []string{"log_level", "loud"}},
		{name: "transport", file: "transport = \"tcp\"\n", want: []string{"transport", `"tcp"`, "auto, serial or vsock"}},
		{name: "transport type", file: "transport = 1\n", want: []string{"parse", "transport"}},
		{name: "relative path", file: "hypervisor_path = \"qemu\"\n", want: []string{"hypervisor_path", "absolute"}},
		{name: "missing ConfigPath", configPath: filepath.Join(dir, "nope.toml"), want: []string{"nope.toml", "no such file"}},
		{name: "annotation memory", ann: map[string]string{AnnotationMemoryMiB: "lots"}, want: []string{AnnotationMemoryMiB, "lots"}},
		{name: "annotation memory small", ann: map[string]string{AnnotationMemoryMiB: "8"}, want: []string{AnnotationMemoryMiB, "out of range"}},
		{name: "annotation vcpus", ann: map[string]string{AnnotationVCPUs: "0"}, want: []string{AnnotationVCPUs, "out of range"}},
		{name: "sandbox memory", ann: map[string]string{AnnotationCRISandboxMemory: "-1"}, want: []string{AnnotationCRISandboxMemory}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := baseConfig(filepath.Join(dir, "absent.toml"))
			if tc.file != "" {
				c.ConfigFile = writeFile(t, dir, strings.Repeat("x", i+1)+".toml", tc.file)
			}
			_, err := c.Resolve(tc.configPath, tc.ann)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.configPath == "" && !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not invalid-argument", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestResolveTransport: the transport key selects the agent transport;
// without it the shim uses auto (serial).
func TestResolveTransport(t *testing.T) {
	dir := t.TempDir()
	if got, err := baseConfig(filepath.Join(dir, "absent.toml")).Resolve("", nil); err != nil || got.Transport != sandbox.TransportAuto {
		t.Errorf("no key: %q, %v", got.Transport, err)
	}
	for i, tc := range []struct{ value, want string }{
		{"vsock", sandbox.TransportVsock}, {"serial", sandbox.TransportSerial}, {"Serial", sandbox.TransportSerial},
		{"auto", sandbox.TransportAuto}, {"", sandbox.TransportAuto},
	} {
		f := writeFile(t, dir, fmt.Sprintf("t%d.toml", i), fmt.Sprintf("transport = %q\n", tc.value))
		got, err := baseConfig(f).Resolve("", nil)
		if err != nil || got.Transport != tc.want {
			t.Errorf("transport = %q: %q, %v; want %q", tc.value, got.Transport, err, tc.want)
		}
	}
}

func TestConfigPathOption(t *testing.T) {
	if p, err := configPathOption(nil); p != "" || err != nil {
		t.Errorf("nil options: %q, %v", p, err)
	}
	b, err := proto.Marshal(&runtimeoptions.Options{ConfigPath: "/etc/coffer/pod.toml"})
	if err != nil {
		t.Fatal(err)
	}
	// containerd 1.6 (gogo) and 1.7 use the bare full name as type URL.
	for _, url := range []string{"runtimeoptions.v1.Options", "type.googleapis.com/runtimeoptions.v1.Options"} {
		p, err := configPathOption(&anypb.Any{TypeUrl: url, Value: b})
		if err != nil || p != "/etc/coffer/pod.toml" {
			t.Errorf("%s: %q, %v", url, p, err)
		}
	}
	_, err = configPathOption(&anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: b})
	if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "containerd.runc.v1.Options") {
		t.Errorf("runc options: %v, want an invalid-argument error naming the type", err)
	}
}

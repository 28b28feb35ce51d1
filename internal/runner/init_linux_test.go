package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func writeExec(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
}

func TestLookPath(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	writeExec(t, filepath.Join(d1, "noexec"), 0o644)
	writeExec(t, filepath.Join(d2, "noexec"), 0o755)
	if err := os.Mkdir(filepath.Join(d1, "isdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeExec(t, filepath.Join(d2, "isdir"), 0o755)
	writeExec(t, filepath.Join(d1, "both"), 0o700)
	writeExec(t, filepath.Join(d2, "both"), 0o755)
	writeExec(t, filepath.Join(d2, "only2"), 0o001) // any x bit counts
	path := "PATH=" + d1 + ":" + d2

	tests := []struct {
		file string
		env  []string
		want string
	}{
		{"noexec", []string{path}, filepath.Join(d2, "noexec")},
		{"isdir", []string{path}, filepath.Join(d2, "isdir")},
		{"both", []string{path}, filepath.Join(d1, "both")},
		{"only2", []string{"HOME=/", path}, filepath.Join(d2, "only2")},
		// With PATH set twice the last one wins.
		{"only2", []string{"PATH=/nonexistent", path}, filepath.Join(d2, "only2")},
		// A name with a slash is not searched.
		{filepath.Join(d2, "both"), []string{"PATH=/nonexistent"}, filepath.Join(d2, "both")},
	}
	for _, tt := range tests {
		got, err := lookPath(tt.file, tt.env)
		if err != nil || got != tt.want {
			t.Errorf("lookPath(%q, %q) = %q, %v; want %q", tt.file, tt.env, got, err, tt.want)
		}
	}

	errTests := []struct {
		file string
		env  []string
		want string
	}{
		{"missing", []string{path}, fmt.Sprintf(`executable file "missing" not found in $PATH (%s:%s)`, d1, d2)},
		{"isdir", []string{"PATH=" + d1}, `executable file "isdir" not found`},
		{"noexec", []string{"PATH=" + d1}, `executable file "noexec" not found`},
		{"both", []string{"PATH="}, `executable file "both" not found in $PATH ()`},
		{filepath.Join(d1, "noexec"), nil, "permission denied (not executable)"},
		{filepath.Join(d1, "isdir"), nil, "is a directory"},
		{filepath.Join(d1, "missing"), nil, "no such file or directory"},
	}
	for _, tt := range errTests {
		_, err := lookPath(tt.file, tt.env)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("lookPath(%q, %q) error = %v, want %q", tt.file, tt.env, err, tt.want)
		}
	}
	if _, err := lookPath(filepath.Join(d1, "missing"), nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lookPath of a missing absolute path = %v, want ErrNotExist", err)
	}
}

func TestLookPathDefaultAndRelative(t *testing.T) {
	// Without PATH the runc default is used; every Debian has sh there.
	got, err := lookPath("sh", []string{"HOME=/"})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(got) != "sh" || !strings.HasPrefix(got, "/") {
		t.Fatalf("lookPath(sh) = %q", got)
	}

	dir := t.TempDir()
	writeExec(t, filepath.Join(dir, "here"), 0o755)
	t.Chdir(dir)
	// An empty PATH element is the current directory.
	got, err = lookPath("here", []string{"PATH=/nonexistent::/also-not"})
	if err != nil || got != "here" {
		t.Fatalf("lookPath with an empty PATH element = %q, %v; want here", got, err)
	}
	got, err = lookPath("./here", nil)
	if err != nil || got != "./here" {
		t.Fatalf("lookPath(./here) = %q, %v", got, err)
	}
}

func TestValidateRlimits(t *testing.T) {
	ok := []specs.POSIXRlimit{
		{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 4096},
		{Type: "RLIMIT_CORE", Soft: 0, Hard: 0},
		{Type: "RLIMIT_STACK", Soft: 1 << 63, Hard: 1<<64 - 1},
	}
	if err := validateRlimits(ok); err != nil {
		t.Fatal(err)
	}
	if err := validateRlimits(nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rl   specs.POSIXRlimit
		want string
	}{
		{specs.POSIXRlimit{Type: "RLIMIT_FOO"}, `unknown rlimit "RLIMIT_FOO"`},
		{specs.POSIXRlimit{Type: "rlimit_nofile"}, `unknown rlimit "rlimit_nofile"`},
		{specs.POSIXRlimit{Type: ""}, `unknown rlimit ""`},
		{specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: 10, Hard: 9}, "rlimit RLIMIT_NOFILE: soft limit 10 is above hard limit 9"},
	}
	for _, tt := range tests {
		err := validateRlimits([]specs.POSIXRlimit{ok[0], tt.rl})
		if err == nil || err.Error() != tt.want {
			t.Errorf("validateRlimits(%+v) = %v, want %q", tt.rl, err, tt.want)
		}
	}
	if err := setRlimit(specs.POSIXRlimit{Type: "RLIMIT_NOPE"}); err == nil || !strings.Contains(err.Error(), "unknown rlimit") {
		t.Errorf("setRlimit of an unknown type = %v", err)
	}
}

func TestApplySysctlsRejectsBadNames(t *testing.T) {
	// Each bad name is rejected before anything is written under /proc/sys.
	for _, k := range []string{"", "..", "kernel..hostname", "../../etc/passwd", "kernel/hostname", "a\x00b", "/abs"} {
		err := applySysctls(map[string]string{k: "1"})
		if err == nil || !strings.Contains(err.Error(), "bad sysctl name") {
			t.Errorf("applySysctls(%q) = %v, want bad sysctl name", k, err)
		}
	}
	if err := applySysctls(nil); err != nil {
		t.Errorf("applySysctls(nil) = %v", err)
	}
}

func TestRunStageRejectsEmptyProcess(t *testing.T) {
	for _, cfg := range []*initConfig{{Mode: "init"}, {Mode: "exec", Process: &specs.Process{}}} {
		err := runStage(nil, cfg, nil)
		if err == nil || !strings.Contains(err.Error(), "args are empty") {
			t.Errorf("runStage(%+v) = %v", cfg, err)
		}
	}
}

func TestIsInit(t *testing.T) {
	if IsInit() {
		t.Fatal("IsInit is true in the test binary")
	}
}

func TestStageTimes(t *testing.T) {
	got := stageTimes(100, []int64{150, 170, 200, 210})
	want := StageTimes{Start: 50, Config: 20, Rootfs: 30, Ready: 10}
	if got != want {
		t.Errorf("stageTimes = %+v, want %+v", got, want)
	}
	if got := stageTimes(100, []int64{1, 2}); got != (StageTimes{}) {
		t.Errorf("stageTimes with missing marks = %+v", got)
	}
}

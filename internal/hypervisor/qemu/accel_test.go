package qemu

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/testlog"
)

// TestChooseAccelLogs: the accelerator Start uses is logged once, at Info
// (what `coffer --log-level info` shows), with the reason: no vmx/svm,
// no usable /dev/kvm, an explicit choice or COFFER_ACCEL. No case here
// runs QEMU.
func TestChooseAccelLogs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	noVirt := write("cpuinfo-novirt", "processor\t: 0\nflags\t\t: fpu vme de pse sse2 hypervisor\n")
	vmx := write("cpuinfo-vmx", "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n")
	noEnv := func(string) string { return "" }
	tests := []struct {
		name   string
		opts   hypervisor.DetectOptions
		want   hypervisor.Accel
		reason []string
	}{
		{"no vmx/svm", hypervisor.DetectOptions{Getenv: noEnv, CPUInfoPath: noVirt}, hypervisor.AccelTCG,
			[]string{"tcg:", "no vmx/svm flag", "nested virtualisation"}},
		{"no /dev/kvm", hypervisor.DetectOptions{Getenv: noEnv, CPUInfoPath: vmx, KVMDevice: filepath.Join(dir, "kvm-missing")}, hypervisor.AccelTCG,
			[]string{"tcg:", "kvm-missing", "kvm_intel"}},
		{"requested kvm", hypervisor.DetectOptions{Requested: hypervisor.AccelKVM, Getenv: noEnv, CPUInfoPath: noVirt}, hypervisor.AccelKVM,
			[]string{"kvm:", "requested by the caller"}},
		{"requested tcg", hypervisor.DetectOptions{Requested: hypervisor.AccelTCG, Getenv: noEnv}, hypervisor.AccelTCG,
			[]string{"tcg:", "requested by the caller"}},
		{"COFFER_ACCEL", hypervisor.DetectOptions{Getenv: func(k string) string {
			if k == hypervisor.EnvAccel {
				return "tcg"
			}
			return ""
		}}, hypervisor.AccelTCG, []string{"COFFER_ACCEL=tcg"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &testlog.Recorder{}
			a, err := chooseAccel(context.Background(), tt.opts, slog.New(rec))
			if err != nil || a != tt.want {
				t.Fatalf("chooseAccel = %q, %v; want %q", a, err, tt.want)
			}
			got := rec.Find("accelerator chosen")
			if len(got) != 1 {
				t.Fatalf("%d \"accelerator chosen\" records, want 1 (all: %v)", len(got), rec.Records())
			}
			if got[0].Level != slog.LevelInfo {
				t.Errorf("logged at %v, want INFO", got[0].Level)
			}
			attrs := testlog.Attrs(got[0])
			if attrs["accel"] != string(tt.want) {
				t.Errorf("accel attribute %q, want %q", attrs["accel"], tt.want)
			}
			for _, w := range tt.reason {
				if !strings.Contains(attrs["reason"], w) {
					t.Errorf("reason %q does not mention %q", attrs["reason"], w)
				}
			}
		})
	}

	// A bad COFFER_ACCEL is an error, and nothing is claimed as chosen.
	rec := &testlog.Recorder{}
	_, err := chooseAccel(context.Background(), hypervisor.DetectOptions{Getenv: func(string) string { return "hvf" }}, slog.New(rec))
	if err == nil || !strings.Contains(err.Error(), "COFFER_ACCEL") {
		t.Errorf("COFFER_ACCEL=hvf: %v", err)
	}
	if n := len(rec.Find("accelerator chosen")); n != 0 {
		t.Errorf("%d \"accelerator chosen\" records after an error", n)
	}
}

package runner

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestParseCaps(t *testing.T) {
	tests := []struct {
		names []string
		want  capSet
	}{
		{nil, 0},
		{[]string{"CAP_CHOWN"}, 1 << unix.CAP_CHOWN},
		{[]string{"CAP_CHOWN", "cap_kill", "Cap_Sys_Admin"}, 1<<unix.CAP_CHOWN | 1<<unix.CAP_KILL | 1<<unix.CAP_SYS_ADMIN},
		{[]string{"CAP_KILL", "CAP_KILL"}, 1 << unix.CAP_KILL},
		{[]string{"CAP_CHECKPOINT_RESTORE"}, 1 << 40},
	}
	for _, tt := range tests {
		got, err := parseCaps(tt.names)
		if err != nil || got != tt.want {
			t.Errorf("parseCaps(%q) = %#x, %v; want %#x", tt.names, got, err, tt.want)
		}
	}
	for _, bad := range [][]string{{"CAP_FOO"}, {"CAP_CHOWN", "CHOWN"}, {""}, {"CAP_CHOWN "}} {
		_, err := parseCaps(bad)
		if err == nil || !strings.Contains(err.Error(), "unknown capability") {
			t.Errorf("parseCaps(%q) error = %v, want unknown capability", bad, err)
		}
	}
	_, err := parseCaps([]string{"CAP_CHOWN", "CAP_FOO"})
	if err == nil || err.Error() != `unknown capability "CAP_FOO"` {
		t.Errorf("error = %v, want it to name CAP_FOO", err)
	}
}

func TestAllCapabilities(t *testing.T) {
	all := AllCapabilities()
	if len(all) != 41 {
		t.Fatalf("AllCapabilities has %d names, want 41 (CAP_CHOWN..CAP_CHECKPOINT_RESTORE)", len(all))
	}
	set, err := parseCaps(all)
	if err != nil {
		t.Fatal(err)
	}
	if want := capSet(1<<41 - 1); set != want {
		t.Fatalf("AllCapabilities covers %#x, want %#x (every bit 0..40)", set, want)
	}
}

func TestValidateCaps(t *testing.T) {
	if err := validateCaps(nil); err != nil {
		t.Fatal(err)
	}
	ok := &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Effective: []string{"CAP_KILL"}}
	if err := validateCaps(ok); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*specs.LinuxCapabilities{
		{Bounding: []string{"CAP_NOPE"}},
		{Effective: []string{"CAP_NOPE"}},
		{Permitted: []string{"CAP_NOPE"}},
		{Inheritable: []string{"CAP_NOPE"}},
		{Ambient: []string{"CAP_NOPE"}},
	} {
		if err := validateCaps(c); err == nil || !strings.Contains(err.Error(), "CAP_NOPE") {
			t.Errorf("validateCaps(%+v) = %v, want an error naming CAP_NOPE", c, err)
		}
	}
}

func TestValidateProcess(t *testing.T) {
	tests := []struct {
		p    *specs.Process
		want string // substring of the error; "" = valid
	}{
		{nil, "no process"},
		{&specs.Process{}, "args are empty"},
		{&specs.Process{Args: []string{"sh"}}, ""},
		{&specs.Process{Args: []string{"sh"}, Capabilities: &specs.LinuxCapabilities{Ambient: []string{"CAP_X"}}}, `unknown capability "CAP_X"`},
		{&specs.Process{Args: []string{"sh"}, Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 2, Hard: 1}}}, "soft limit 2 is above hard limit 1"},
	}
	for _, tt := range tests {
		err := validateProcess(tt.p)
		if tt.want == "" {
			if err != nil {
				t.Errorf("validateProcess(%+v) = %v", tt.p, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("validateProcess(%+v) = %v, want %q", tt.p, err, tt.want)
		}
	}
}

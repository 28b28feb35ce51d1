package agent

import (
	"log/slog"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		cmdline   string
		level     slog.Level
		transport string
	}{
		{"", slog.LevelInfo, "serial"},
		{"console=ttyS0 quiet panic=-1", slog.LevelInfo, "serial"},
		{"console=ttyS0 coffer.log=debug\n", slog.LevelDebug, "serial"},
		{"coffer.log=WARN coffer.transport=vsock", slog.LevelWarn, "vsock"},
		{"coffer.log=error", slog.LevelError, "serial"},
		{"coffer.log=info+2", slog.LevelInfo + 2, "serial"},
		// A bad level keeps the default (or the previous good value).
		{"coffer.log=chatty", slog.LevelInfo, "serial"},
		{"coffer.log=debug coffer.log=nonsense", slog.LevelDebug, "serial"},
		{"coffer.log", slog.LevelInfo, "serial"},
		// The last occurrence wins.
		{"coffer.log=debug coffer.log=error", slog.LevelError, "serial"},
		{"coffer.transport=vsock coffer.transport=serial", slog.LevelInfo, "serial"},
		// Only exact keys count.
		{"xcoffer.log=debug coffer.logx=debug coffer.transport.x=vsock", slog.LevelInfo, "serial"},
		{"\tcoffer.transport=vsock\t\tcoffer.log=debug  ", slog.LevelDebug, "vsock"},
		// Values are taken as is; Main falls back to serial for anything
		// but "vsock".
		{"coffer.transport=", slog.LevelInfo, ""},
		{"coffer.transport=a=b", slog.LevelInfo, "a=b"},
	}
	for _, tt := range tests {
		got := parseCmdline(tt.cmdline)
		if got.logLevel != tt.level || got.transport != tt.transport {
			t.Errorf("parseCmdline(%q) = {%v %q}, want {%v %q}", tt.cmdline, got.logLevel, got.transport, tt.level, tt.transport)
		}
	}
}

// TestAgentTransport: the agent serves on vsock exactly when the host put
// coffer.transport=vsock on the kernel command line (as sandbox.Start does
// for the vsock transport), else on the virtio-serial port the host
// configures.
func TestAgentTransport(t *testing.T) {
	tests := []struct {
		cmdline string
		want    Transport
		name    string
	}{
		{"console=ttyS0 panic=-1", VirtioSerial{Name: "coffer.agent"}, "serial"},
		{"console=ttyS0 coffer.transport=vsock", Vsock{Port: 1024}, "vsock"},
		{"coffer.transport=serial", VirtioSerial{Name: "coffer.agent"}, "serial"},
		{"coffer.transport=vsock coffer.transport=serial", VirtioSerial{Name: "coffer.agent"}, "serial"},
		// Anything else falls back to the port the host always has.
		{"coffer.transport=VSOCK", VirtioSerial{Name: "coffer.agent"}, "serial"},
		{"coffer.transport=", VirtioSerial{Name: "coffer.agent"}, "serial"},
		{"coffer.transport=tcp", VirtioSerial{Name: "coffer.agent"}, "serial"},
	}
	for _, tt := range tests {
		tr, name := parseCmdline(tt.cmdline).agentTransport()
		if tr != tt.want || name != tt.name {
			t.Errorf("%q: transport %#v (%s), want %#v (%s)", tt.cmdline, tr, name, tt.want, tt.name)
		}
	}
}

func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"", "console=ttyS0 coffer.log=debug coffer.transport=vsock",
		"coffer.log=info+100000000000000000000", "coffer.log=DEBUG-4 coffer.log==",
		"coffer.transport=\x00\xff", "coffer.log=+ coffer.log=-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		cfg := parseCmdline(cmdline)
		// The transport is the value of the last coffer.transport=, or
		// serial without one.
		want := "serial"
		for _, fld := range strings.Fields(cmdline) {
			if v, ok := strings.CutPrefix(fld, "coffer.transport="); ok {
				want = v
			} else if fld == "coffer.transport" {
				want = ""
			}
		}
		if cfg.transport != want {
			t.Fatalf("transport = %q, want %q", cfg.transport, want)
		}
		if !strings.Contains(cmdline, "coffer.log") && cfg.logLevel != slog.LevelInfo {
			t.Fatalf("log level %v without coffer.log", cfg.logLevel)
		}
	})
}

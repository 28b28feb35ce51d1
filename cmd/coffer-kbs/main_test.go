package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-project/coffer/internal/kbs/server"
)

// writeConfig writes a TOML config file and returns its path.
func writeConfig(t *testing.T, toml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kbs.toml")
	if err := os.WriteFile(p, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Flags given on the command line override the --config file, members
// the flags leave alone keep the file's values, and the file's values
// override the defaults.
func TestFlagsOverrideConfigFile(t *testing.T) {
	cfgFile := writeConfig(t, `listen = "127.0.0.1:9001"
data_dir = "/srv/kbs-from-file"
insecure_http = true
dev = true

[sessions]
max = 7
`)
	cases := []struct {
		name        string
		args        []string
		listen, dir string
		insecure    bool
		dev         bool
	}{
		{"file only", nil, "127.0.0.1:9001", "/srv/kbs-from-file", true, true},
		{"--listen wins", []string{"--listen", "127.0.0.1:9002"}, "127.0.0.1:9002", "/srv/kbs-from-file", true, true},
		{"--data-dir wins", []string{"--data-dir", "/srv/kbs-from-flag"}, "127.0.0.1:9001", "/srv/kbs-from-flag", true, true},
		{"flags set to false win", []string{"--dev=false", "--insecure-http=false", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, "127.0.0.1:9001", "/srv/kbs-from-file", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inv, err := parseArgs(append([]string{"--config", cfgFile}, c.args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			cfg := inv.cfg
			if cfg.Listen != c.listen || cfg.DataDir != c.dir || cfg.InsecureHTTP != c.insecure || cfg.Dev != c.dev {
				t.Errorf("listen %q data_dir %q insecure_http %v dev %v, want %q %q %v %v",
					cfg.Listen, cfg.DataDir, cfg.InsecureHTTP, cfg.Dev, c.listen, c.dir, c.insecure, c.dev)
			}
			if cfg.Sessions.Max != 7 {
				t.Errorf("sessions.max %d, want the file's 7", cfg.Sessions.Max)
			}
			// Validate's dev defaults follow the merged dev, not the file's.
			if wantMode := map[bool]string{true: server.AdminAllowAll, false: server.AdminJWT}[c.dev]; cfg.Admin.Mode != wantMode {
				t.Errorf("admin mode %q, want %q", cfg.Admin.Mode, wantMode)
			}
		})
	}
	// Without a file, the defaults apply under the flags.
	inv, err := parseArgs([]string{"--dev", "--data-dir", "/d"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if inv.cfg.Listen != "127.0.0.1:8080" || inv.cfg.DataDir != "/d" || !inv.cfg.Dev {
		t.Errorf("no file: %+v", inv.cfg)
	}
}

// The merged configuration is validated: a flag that makes the file's
// settings unsafe is refused, as are bad flags and arguments.
func TestParseArgsRefuses(t *testing.T) {
	cfgFile := writeConfig(t, "data_dir = \"/d\"\ndev = true\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", cfgFile, "--dev=false"}, "--tls-cert"}, // no longer dev: HTTPS needs a pair
		{[]string{"--config", cfgFile, "--listen", ""}, "no listen address"},
		{[]string{"--config", cfgFile, "--log-level", "loud"}, "--log-level"},
		{[]string{"--config", cfgFile, "extra"}, "unexpected arguments"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"--config", filepath.Join(t.TempDir(), "none.toml")}, "read config"},
	} {
		var out bytes.Buffer
		_, err := parseArgs(c.args, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want one mentioning %q", c.args, err, c.want)
		}
	}
	// --version needs no valid configuration.
	inv, err := parseArgs([]string{"--version", "--dev=false"}, io.Discard)
	if err != nil || !inv.version {
		t.Errorf("--version: %+v %v", inv, err)
	}
}

// The dev warning is logged at WARN level, names the address the open
// admin API listens on and says not to use real secrets.
func TestDevWarning(t *testing.T) {
	var buf bytes.Buffer
	warnDev(slog.New(slog.NewTextHandler(&buf, nil)), "0.0.0.0:8080")
	out := buf.String()
	for _, want := range []string{"level=WARN", "DEVELOPMENT MODE", "0.0.0.0:8080", "Never run --dev with real secrets", strings.Repeat("!", 78)} {
		if !strings.Contains(out, want) {
			t.Errorf("dev warning %q does not contain %q", out, want)
		}
	}
}

//go:build integration

package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every bad input gets one clear line on stderr, a non-zero exit and
// leaves nothing behind (the suite's leak check covers processes and dirs).
func TestBadInput(t *testing.T) {
	t.Parallel()
	emptyGuest := t.TempDir()
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing guest image", []string{"run", "--rm", "--guest-dir", emptyGuest, "--rootfs", busybox, "--", "true"}, 125, "coffer guest build"},
		{"missing rootfs", []string{"run", "--rm", "--rootfs", "/nonexistent/rootfs", "--", "true"}, 125, "/nonexistent/rootfs"},
		{"rootfs is a file", []string{"run", "--rm", "--rootfs", notADir, "--", "true"}, 125, "not a directory"},
		{"no rootfs flag", []string{"run", "--rm", "--", "true"}, 125, "--rootfs"},
		{"bad memory", []string{"run", "--rm", "--memory", "lots", "--rootfs", busybox, "--", "true"}, 125, "--memory"},
		{"bad cpus", []string{"run", "--rm", "--cpus", "-2", "--rootfs", busybox, "--", "true"}, 125, "--cpus"},
		{"bad user", []string{"run", "--rm", "-u", "root", "--rootfs", busybox, "--", "true"}, 125, "UID"},
		{"bad env", []string{"run", "--rm", "-e", "=x", "--rootfs", busybox, "--", "true"}, 125, "KEY=VALUE"},
		{"bad sysctl", []string{"run", "--rm", "--sysctl", "nonsense", "--rootfs", busybox, "--", "true"}, 125, "sysctl"},
		{"bad name", []string{"run", "--rm", "--name", "../x", "--rootfs", busybox, "--", "true"}, 125, "invalid name"},
		{"unknown flag", []string{"run", "--bogus", "--rootfs", busybox, "--", "true"}, 125, "unknown flag"},
		{"missing command", []string{"run", "--rm", "--rootfs", busybox, "--", "no-such-command"}, 127, "not found"},
		{"missing command, detached", []string{"run", "-d", "--name", "detached-missing", "--rootfs", busybox, "--", "no-such-command"}, 127, "not found"},
		{"not executable", []string{"run", "--rm", "--rootfs", busybox, "--", "/etc/passwd"}, 126, "permission denied"},
		{"exec unknown pod", []string{"exec", "nope", "--", "true"}, 125, "no pod named"},
		{"kill unknown pod", []string{"kill", "nope"}, 125, "no pod named"},
	}
	for _, c := range cases {
		r := coffer(t, "", c.args...)
		if r.code != c.code {
			t.Errorf("%s: exit %d, want %d (stderr %q)", c.name, r.code, c.code, r.stderr)
		}
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: stderr %q does not mention %q", c.name, r.stderr, c.want)
		}
		if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; lines > 2 {
			t.Errorf("%s: error is %d lines, want one clear line: %q", c.name, lines, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("%s: unexpected stdout %q", c.name, r.stdout)
		}
	}
}

// TestBootTimeout: a guest that does not answer in time is an error that
// quotes the guest console, and the VM is gone afterwards (the suite's
// leak check).
func TestBootTimeout(t *testing.T) {
	t.Parallel()
	r := coffer(t, "", "run", "--rm", "--boot-timeout", "500ms", "--rootfs", busybox, "--", "true")
	if r.code != 125 || !strings.Contains(r.stderr, "did not answer within 500ms") || !strings.Contains(r.stderr, "console") {
		t.Fatalf("boot timeout: exit %d, stderr %q; want 125 and an error quoting the console", r.code, r.stderr)
	}
}

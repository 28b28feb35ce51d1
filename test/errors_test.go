//go:build integration

package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-project/coffer/internal/guest"
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
		if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; lines != 1 {
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
	// The same guest without `quiet` prints kernel messages before the
	// agent is up: the error quotes the last of them.
	m, err := guest.Load("") // $COFFER_GUEST_DIR, else the default cache dir
	if err != nil {
		t.Fatal(err)
	}
	loud := t.TempDir()
	for _, f := range []string{m.KernelPath(), m.InitrdPath()} {
		if err := os.Symlink(f, filepath.Join(loud, filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
	mb, err := os.ReadFile(filepath.Join(m.Dir, guest.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(mb, &raw); err != nil {
		t.Fatal(err)
	}
	raw["cmdline"] = strings.Join(slices.DeleteFunc(strings.Fields(m.Cmdline), func(s string) bool { return s == "quiet" }), " ")
	mb, _ = json.Marshal(raw)
	if err := os.WriteFile(filepath.Join(loud, guest.ManifestFile), mb, 0o644); err != nil {
		t.Fatal(err)
	}
	r = coffer(t, "", "run", "--rm", "--guest-dir", loud, "--boot-timeout", "1500ms", "--rootfs", busybox, "--", "true")
	if r.code == 0 {
		t.Skip("the guest booted within 1.5s (fast accelerator): no timeout to check")
	}
	printk := regexp.MustCompile(`(?m)^    \[ *[0-9]+\.[0-9]+\] `)
	if r.code != 125 || !strings.Contains(r.stderr, "last console lines:") || len(printk.FindAllString(r.stderr, -1)) < 3 {
		t.Fatalf("boot timeout with a talkative guest: exit %d, stderr %q; want 125 and the last kernel messages quoted", r.code, r.stderr)
	}
}

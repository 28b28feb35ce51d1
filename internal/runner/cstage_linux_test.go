package runner

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/runner/cstage"
	"github.com/coffer-project/coffer/internal/runner/nsenter"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func fields(t *testing.T, msg []byte) []string {
	t.Helper()
	if len(msg) == 0 || msg[len(msg)-1] != 0 {
		t.Fatalf("message %q does not end in NUL", msg)
	}
	return strings.Split(string(msg[1:len(msg)-1]), "\x00")
}

func TestEncodeCProcess(t *testing.T) {
	oom := -500
	p := &specs.Process{
		Args: []string{"sh", "-c", "a=b"}, Env: []string{"A=1", "B=x=y"},
		User:    specs.User{UID: 1000, GID: 100, AdditionalGids: []uint32{5, 6}},
		Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 10, Hard: 20}},
		Capabilities: &specs.LinuxCapabilities{
			Bounding: []string{"CAP_CHOWN", "CAP_KILL"}, Effective: []string{"CAP_KILL"},
			Permitted: []string{"CAP_KILL"}, Inheritable: nil, Ambient: []string{"CAP_KILL"},
		},
		OOMScoreAdj: &oom, NoNewPrivileges: true,
	}
	msg, err := encodeCProcess(p, cProcess{Path: "/bin/sh", Cwd: "/w", Wait: true, TTY: true})
	if err != nil {
		t.Fatal(err)
	}
	if msg[0] != 'F' {
		t.Fatalf("type %q, want F", msg[0])
	}
	got := strings.Join(fields(t, msg), "|")
	want := "path|/bin/sh|arg|sh|arg|-c|arg|a=b|env|A=1|env|B=x=y|cwd|/w|uid|1000|gid|100|group|5|group|6|" +
		"rlimit|7 10 20|capb|33|cape|32|capp|32|capi|0|capa|32|oom|-500|nnp|1|wait|1|tty|1"
	if got != want {
		t.Errorf("fields\n got %s\nwant %s", got, want)
	}

	// Without capabilities, oom, nnp, wait or tty those fields are absent.
	msg, err = encodeCProcess(&specs.Process{Args: []string{"true"}}, cProcess{Path: "/bin/true", Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(fields(t, msg), "|"); got != "path|/bin/true|arg|true|cwd|/|uid|0|gid|0" {
		t.Errorf("minimal fields: %s", got)
	}

	bad := []struct {
		p    *specs.Process
		want string
	}{
		{&specs.Process{Args: []string{"a\x00b"}}, "NUL byte"},
		{&specs.Process{Args: []string{"a"}, Env: []string{"X=\x00"}}, "NUL byte"},
		{&specs.Process{Args: []string{"a"}, Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS"}}}, "unknown rlimit"},
		{&specs.Process{Args: []string{"a"}, Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_NOPE"}}}, "unknown capability"},
		{&specs.Process{Args: make([]string, maxCList+1)}, "more than 4096"},
		{&specs.Process{Args: []string{strings.Repeat("x", maxSyncMsg)}}, "over"},
		{&specs.Process{Args: []string{"a"}, Rlimits: make([]specs.POSIXRlimit, maxCRlimits+1)}, "at most 64"},
		{&specs.Process{Args: []string{"a"}, User: specs.User{UID: ^uint32(0)}}, "not valid users"},
	}
	for _, b := range bad {
		if _, err := encodeCProcess(b.p, cProcess{Path: "/a", Cwd: "/"}); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("encodeCProcess: error %v, want %q", err, b.want)
		}
	}
}

func TestEncodeProcMounts(t *testing.T) {
	msg, err := encodeProcMounts([]procMount{{Dest: "/proc", Flags: unix.MS_NOSUID, Data: ""}, {Dest: "/p2", Flags: 0, Data: "hidepid=2"}})
	if err != nil {
		t.Fatal(err)
	}
	if msg[0] != 'P' {
		t.Fatalf("type %q", msg[0])
	}
	if got := strings.Join(fields(t, msg), "|"); got != "/proc|2||/p2|0|hidepid=2" {
		t.Errorf("fields: %s", got)
	}
	if _, err := encodeProcMounts([]procMount{{Dest: "/a\x00"}}); err == nil {
		t.Error("NUL in a destination accepted")
	}
}

func TestCStageFits(t *testing.T) {
	r := &Runner{}
	mk := func(ms ...specs.Mount) *specs.Spec { return &specs.Spec{Mounts: ms} }
	proc := specs.Mount{Destination: "/proc", Type: "proc", Source: "proc"}
	tests := []struct {
		name string
		spec *specs.Spec
		want bool
	}{
		{"default mounts", mk(proc, specs.Mount{Destination: "/dev", Type: "tmpfs"}, specs.Mount{Destination: "/sys", Type: "sysfs"}), true},
		{"no proc", mk(specs.Mount{Destination: "/dev", Type: "tmpfs"}), true},
		{"mount below proc after it", mk(proc, specs.Mount{Destination: "/proc/sys/x", Type: "bind", Source: "/x"}), false},
		{"mount over proc after it", mk(proc, specs.Mount{Destination: "/proc/", Type: "tmpfs"}), false},
		{"proc inside an earlier mount is fine", mk(specs.Mount{Destination: "/a", Type: "tmpfs"}, specs.Mount{Destination: "/a/proc", Type: "proc"}), true},
		{"proc with propagation", mk(specs.Mount{Destination: "/proc", Type: "proc", Options: []string{"rshared"}}), false},
		{"proc on the root", mk(specs.Mount{Destination: "/", Type: "proc"}, specs.Mount{Destination: "/x", Type: "tmpfs"}), false},
		{"mount above proc after it", mk(specs.Mount{Destination: "/a/proc", Type: "proc"}, specs.Mount{Destination: "/a", Type: "tmpfs"}), false},
	}
	for _, tt := range tests {
		if got := r.cStageFits(tt.spec); got != tt.want && cstage.Available {
			t.Errorf("%s: cStageFits = %v, want %v", tt.name, got, tt.want)
		}
	}
	if (&Runner{GoStage: true}).cStageFits(mk(proc)) {
		t.Error("GoStage runner uses the C stage")
	}
}

// startCStage runs this test binary as the C stage (its constructor is
// linked in through package cstage) with the agent's end of the sync
// socket returned.
func startCStage(t *testing.T, stdout io.Writer) (*syncConn, *exec.Cmd) {
	t.Helper()
	if !cstage.Available {
		t.Skip("no cgo: the C stage is not built in")
	}
	sc, child, err := newSyncPair()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], cstage.Arg)
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stdout = stdout
	cmd.Stderr = stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	t.Cleanup(func() {
		sc.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// The stage says first that it is in its namespaces.
	if m, err := recvMsg(t, sc); err != nil || m.Type != "joined" {
		t.Fatalf("first message %+v, %v; want joined", m, err)
	}
	return sc, cmd
}

func recvMsg(t *testing.T, sc *syncConn) (syncMsg, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var m syncMsg
	_, err := sc.recv(ctx, &m)
	return m, err
}

func TestCStageRunsProcess(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (switches to another user)")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A file, not a buffer: the stage writes it directly (no copying
	// goroutine to race with).
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	output := func() string {
		b, err := os.ReadFile(out.Name())
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	sc, cmd := startCStage(t, out)
	// An empty proc mount list is answered too.
	if err := sc.sendRaw([]byte{'P'}, -1); err != nil {
		t.Fatal(err)
	}
	if m, err := recvMsg(t, sc); err != nil || m.Type != "mounted" {
		t.Fatalf("after P: %+v, %v", m, err)
	}
	p := &specs.Process{
		Args: []string{"sh", "-c", `echo "$FOO"; pwd; ulimit -n; id -u; id -g; id -G; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status`},
		Env:  []string{"FOO=bar baz", "PATH=/usr/bin:/bin"},
		User: specs.User{UID: 65534, GID: 65533, AdditionalGids: []uint32{4242}},
		// Applied after the stage's own opens (oom_score_adj), as the
		// Go stage does: 5 descriptors would not leave it one.
		Rlimits: []specs.POSIXRlimit{
			{Type: "RLIMIT_NOFILE", Soft: 5, Hard: 456},
		},
		OOMScoreAdj: intPtr(100),
		Capabilities: &specs.LinuxCapabilities{
			Bounding: []string{"CAP_KILL", "CAP_CHOWN"}, Effective: []string{"CAP_KILL"}, Permitted: []string{"CAP_KILL"},
			Inheritable: []string{"CAP_KILL"}, Ambient: []string{"CAP_KILL"},
		},
		NoNewPrivileges: true,
	}
	msg, err := encodeCProcess(p, cProcess{Path: "/bin/sh", Cwd: dir, Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.sendRaw(msg, -1); err != nil {
		t.Fatal(err)
	}
	if m, err := recvMsg(t, sc); err != nil || m.Type != "ready" {
		t.Fatalf("ready: %+v, %v", m, err)
	}
	// Nothing runs before "start".
	time.Sleep(50 * time.Millisecond)
	if got := output(); got != "" {
		t.Fatalf("output before start: %q", got)
	}
	if err := sc.send(syncMsg{Type: "start"}, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := recvMsg(t, sc); !errors.Is(err, io.EOF) {
		t.Fatalf("after start: %v, want EOF (the socket closes with the exec)", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("process: %v; output %q", err, output())
	}
	want := "bar baz\n" + dir + "\n5\n65534\n65533\n65533 4242\nCapEff:\t0000000000000020\nCapBnd:\t0000000000000021\nNoNewPrivs:\t1\n"
	if got := output(); got != want {
		t.Errorf("output\n got %q\nwant %q", got, want)
	}
}

func TestCStageReportsErrors(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want string
	}{
		{"missing command", mustEncode(t, &specs.Process{Args: []string{"nope"}}, cProcess{Path: "/nonexistent/nope", Cwd: "/"}), "exec nope: No such file or directory"},
		{"bad cwd", mustEncode(t, &specs.Process{Args: []string{"true"}}, cProcess{Path: "/bin/true", Cwd: "/nonexistent/dir"}), "chdir to working directory /nonexistent/dir"},
		{"bad number", []byte("Fpath\x00/bin/true\x00arg\x00true\x00uid\x00x1\x00"), "bad number uid=x1"},
		{"negative uid", []byte("Fpath\x00/bin/true\x00arg\x00true\x00uid\x00-1\x00"), "bad number uid=-1"},
		{"uid too big", []byte("Fpath\x00/bin/true\x00arg\x00true\x00uid\x004294967295\x00"), "bad number uid=4294967295"},
		{"oom out of range", []byte("Fpath\x00/bin/true\x00arg\x00true\x00oom\x00-1001\x00"), "bad number oom=-1001"},
		{"spaces in a number", []byte("Fpath\x00/bin/true\x00arg\x00true\x00gid\x00 1\x00"), "bad number gid= 1"},
		{"unknown field", []byte("Fpath\x00/bin/true\x00bogus\x00\"quoted\\\x00"), `unknown field bogus`},
		{"no args", []byte("Fpath\x00/bin/true\x00"), "the process args are empty"},
		{"unterminated", []byte("Fpath\x00/bin/true"), "malformed message"},
		{"odd fields", []byte("Fpath\x00"), "malformed process message"},
		{"tty without fd", []byte("Fpath\x00/bin/true\x00arg\x00true\x00tty\x001\x00"), "sent no terminal"},
		{"bad proc mount", []byte("P/nonexistent-dir-for-proc\x000\x00\x00"), "mount proc on /nonexistent-dir-for-proc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, cmd := startCStage(t, io.Discard)
			if err := sc.sendRaw(tt.msg, -1); err != nil {
				t.Fatal(err)
			}
			m, err := recvMsg(t, sc)
			if err == nil && m.Type == "ready" { // an exec failure comes after ready
				m, err = recvMsg(t, sc)
			}
			if err != nil || m.Type != "error" || !strings.Contains(m.Error, tt.want) {
				t.Fatalf("got %+v, %v; want an error with %q", m, err, tt.want)
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 127 {
				t.Errorf("exit: %v, want 127", err)
			}
		})
	}
}

func TestCStageQuitsWhenAgentGoes(t *testing.T) {
	sc, cmd := startCStage(t, io.Discard)
	msg := mustEncode(t, &specs.Process{Args: []string{"true"}}, cProcess{Path: "/bin/true", Cwd: "/", Wait: true})
	if err := sc.sendRaw(msg, -1); err != nil {
		t.Fatal(err)
	}
	if m, err := recvMsg(t, sc); err != nil || m.Type != "ready" {
		t.Fatalf("ready: %+v, %v", m, err)
	}
	// Anything but "start" (or the agent hanging up) ends the stage
	// without running the command.
	if err := sc.send(syncMsg{Type: "stop"}, -1); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 120 {
		t.Errorf("exit: %v, want 120", err)
	}
}

func mustEncode(t *testing.T, p *specs.Process, cp cProcess) []byte {
	t.Helper()
	b, err := encodeCProcess(p, cp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The error message the stage sends is valid JSON whatever the text.
func TestCStageErrorJSON(t *testing.T) {
	sc, cmd := startCStage(t, io.Discard)
	dir := filepath.Join("/nonexistent", "q\"uo\\te\ttab")
	if err := sc.sendRaw(mustEncode(t, &specs.Process{Args: []string{"true"}}, cProcess{Path: "/bin/true", Cwd: dir}), -1); err != nil {
		t.Fatal(err)
	}
	m, err := recvMsg(t, sc)
	if err != nil || m.Type != "error" || !strings.Contains(m.Error, dir) {
		t.Fatalf("got %+v, %v", m, err)
	}
	_ = cmd.Wait()
	if _, err := json.Marshal(m); err != nil {
		t.Fatal(err)
	}
}

func intPtr(i int) *int { return &i }

// The C stage refuses to run when the nsenter constructor left its
// variable set (the exec was not joined to the container): it must check
// the variable the constructor really uses.
func TestCStageChecksNsenterVariable(t *testing.T) {
	src, err := os.ReadFile("cstage/cstage.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), `getenv("`+nsenter.EnvFD+`")`) {
		t.Fatalf("cstage/cstage.go does not check %s", nsenter.EnvFD)
	}
}

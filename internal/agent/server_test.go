package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/runner"
	"github.com/coffer-project/coffer/internal/version"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCheckID(t *testing.T) {
	good := []string{"a", "0", "c1", "my-container_1.2", "A.B-C_D", "a..", "a-", strings.Repeat("x", 128)}
	for _, id := range good {
		if err := checkID("container id", id); err != nil {
			t.Errorf("checkID(%q) = %v", id, err)
		}
	}
	bad := []string{
		"", ".", "..", "../etc", "a/b", "/abs", "-rf", "_x", ".hidden", "a b", "a\nb", "a\n", "\na",
		"a\x00", "ä", "a:b", "a*", strings.Repeat("x", 129),
	}
	for _, id := range bad {
		err := checkID("container id", id)
		if err == nil {
			t.Errorf("checkID(%q) accepted", id)
			continue
		}
		if !strings.Contains(err.Error(), "invalid container id") || !strings.Contains(err.Error(), "1-128 letters") {
			t.Errorf("checkID(%q) error %q does not say what is allowed", id, err)
		}
	}
}

func specJSON(t testing.TB, s *specs.Spec) []byte {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeSpec(t *testing.T) {
	good := specJSON(t, &specs.Spec{Version: specs.Version, Process: &specs.Process{Args: []string{"sh"}, Cwd: "/"}, Hostname: "h"})
	spec, err := decodeSpec(good)
	if err != nil || spec.Process == nil || spec.Process.Args[0] != "sh" || spec.Hostname != "h" {
		t.Fatalf("decodeSpec(valid) = %+v, %v", spec, err)
	}
	// Exactly at the limit is accepted (JSON allows trailing spaces).
	atLimit := append(append([]byte{}, good...), []byte(strings.Repeat(" ", maxSpecBytes-len(good)))...)
	if _, err := decodeSpec(atLimit); err != nil {
		t.Fatalf("decodeSpec of exactly %d bytes = %v", len(atLimit), err)
	}

	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"nil", nil, "OCI spec must be 1 byte to 1048576 bytes, got 0"},
		{"empty", []byte{}, "got 0"},
		{"too big", append(atLimit, ' '), "OCI spec must be 1 byte to 1048576 bytes, got 1048577"},
		{"not json", []byte("{"), "decode OCI spec"},
		{"wrong type", []byte(`{"process": "sh"}`), "decode OCI spec"},
		{"array", []byte(`[]`), "decode OCI spec"},
		{"null", []byte(`null`), "OCI spec has no process"},
		{"no process", []byte(`{"ociVersion":"1.2.0"}`), "OCI spec has no process"},
		{"null process", []byte(`{"process":null}`), "OCI spec has no process"},
	}
	for _, tt := range tests {
		spec, err := decodeSpec(tt.in)
		if err == nil || spec != nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: decodeSpec = %v, %v; want error %q", tt.name, spec, err, tt.want)
		}
	}
	// An empty process passes decoding; the runner rejects it later.
	if _, err := decodeSpec([]byte(`{"process":{}}`)); err != nil {
		t.Errorf("decodeSpec(empty process) = %v", err)
	}
}

func FuzzDecodeSpec(f *testing.F) {
	f.Add(specJSON(f, &specs.Spec{Version: specs.Version, Process: &specs.Process{
		Args: []string{"sh", "-c", "echo hi"}, Env: []string{"PATH=/bin"}, Cwd: "/",
		Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}},
		Rlimits:      []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1, Hard: 2}},
	}, Mounts: []specs.Mount{{Destination: "/proc", Type: "proc"}}, Linux: &specs.Linux{
		Sysctl: map[string]string{"net.ipv4.ip_forward": "1"}, MaskedPaths: []string{"/proc/kcore"},
	}}))
	f.Add([]byte(`{"process":{"args":["x"],"user":{"uid":4294967295}},"linux":{"resources":{"memory":{"limit":-1}}}}`))
	f.Add([]byte(`{"process":{"args":["\u0000"],"consoleSize":{"height":1e400}}}`))
	f.Add([]byte(`{"process":{},"process":null}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"annotations":{"a":"b"},"process":{"terminal":true}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		spec, err := decodeSpec(b)
		if err != nil {
			if spec != nil {
				t.Fatal("spec returned with an error")
			}
			return
		}
		if len(b) == 0 || len(b) > maxSpecBytes {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if spec.Process == nil {
			t.Fatal("accepted a spec without process")
		}
		// Whatever was accepted must survive the trip to the init stage.
		if _, err := json.Marshal(spec); err != nil {
			t.Fatalf("accepted spec does not re-encode: %v", err)
		}
	})
}

func TestWriteSysctlRejectsBadNames(t *testing.T) {
	// Nothing is written under /proc/sys for these.
	for _, k := range []string{"", "..", "net..ipv4", "../../../etc/passwd", "kernel/hostname", "/kernel", "a\x00b"} {
		err := writeSysctl(k, "1")
		if err == nil || !strings.Contains(err.Error(), "invalid sysctl name") {
			t.Errorf("writeSysctl(%q) = %v, want invalid sysctl name", k, err)
		}
	}
}

func TestStorageRejectsBadInput(t *testing.T) {
	s := newStorageMounts()
	ctx := testCtx(t)
	if _, err := s.acquire(ctx, "../etc", "ext4", nil); err == nil || !strings.Contains(err.Error(), "invalid disk serial") {
		t.Errorf("acquire with a bad serial = %v", err)
	}
	for _, fs := range []string{"", "tmpfs", "nfs", "EXT4", "overlay"} {
		if _, err := s.acquire(ctx, "disk1", fs, nil); err == nil || !strings.Contains(err.Error(), "unsupported rootfs filesystem") {
			t.Errorf("acquire with fstype %q = %v", fs, err)
		}
	}
	if err := s.release("never-acquired"); err != nil {
		t.Errorf("release of an unknown disk = %v", err)
	}
	if len(s.mounts) != 0 {
		t.Errorf("mounts recorded after failures: %v", s.mounts)
	}
}

// newTestServer returns a Server with no runner: only requests that fail
// before reaching the runner (or that do not need it) may be sent.
func newTestServer() *Server {
	return NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), &runner.Runner{}, nil)
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: error = %v, want code %v", what, err, code)
		return
	}
	if msg != "" && !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: error message %q, want it to contain %q", what, status.Convert(err).Message(), msg)
	}
}

func TestServerCheck(t *testing.T) {
	r, err := newTestServer().Check(testCtx(t), &api.CheckRequest{})
	if err != nil || r.AgentVersion != version.Version || r.KernelRelease == "" || r.UptimeSeconds <= 0 ||
		time.Since(time.Unix(0, r.TimeUnixNano)).Abs() > time.Minute {
		t.Fatalf("Check = %+v, %v", r, err)
	}
}

func TestServerCreateSandbox(t *testing.T) {
	s := newTestServer()
	ctx := testCtx(t)
	_, err := s.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "../x"})
	wantCode(t, "bad sandbox id", err, codes.InvalidArgument, "invalid sandbox id")
	_, err = s.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "pod1", Sysctls: map[string]string{"../../x": "1"}})
	wantCode(t, "bad sysctl", err, codes.InvalidArgument, "invalid sysctl name")
	if s.sandboxID != "" {
		t.Fatalf("sandbox id recorded after a failed create: %q", s.sandboxID)
	}
	if _, err := s.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "pod1"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "pod2"})
	wantCode(t, "second sandbox", err, codes.AlreadyExists, "sandbox pod1 already exists")
}

func TestServerDestroySandboxPowerOff(t *testing.T) {
	called := make(chan struct{}, 1)
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), &runner.Runner{}, func() { called <- struct{}{} })
	ctx := testCtx(t)
	if _, err := s.DestroySandbox(ctx, &api.DestroySandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called:
		t.Fatal("powered off without power_off")
	case <-time.After(150 * time.Millisecond):
	}
	if _, err := s.DestroySandbox(ctx, &api.DestroySandboxRequest{PowerOff: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called:
	case <-time.After(5 * time.Second):
		t.Fatal("power off not called")
	}
}

func TestServerCreateContainerValidation(t *testing.T) {
	s := newTestServer()
	ctx := testCtx(t)
	spec := specJSON(t, &specs.Spec{Process: &specs.Process{Args: []string{"true"}}})
	blk := &api.Storage{Driver: "blk", Source: "disk1", Fstype: "ext4"}
	s.containers["taken"] = &container{id: "taken", procs: map[string]*process{}}

	tests := []struct {
		name string
		req  *api.CreateContainerRequest
		code codes.Code
		msg  string
	}{
		{"bad id", &api.CreateContainerRequest{ContainerId: "a/b", OciSpec: spec, Rootfs: blk}, codes.InvalidArgument, "invalid container id"},
		{"no spec", &api.CreateContainerRequest{ContainerId: "c1", Rootfs: blk}, codes.InvalidArgument, "OCI spec must be"},
		{"no process", &api.CreateContainerRequest{ContainerId: "c1", OciSpec: []byte(`{}`), Rootfs: blk}, codes.InvalidArgument, "no process"},
		{"no rootfs", &api.CreateContainerRequest{ContainerId: "c1", OciSpec: spec}, codes.InvalidArgument, `driver "blk"`},
		{"other driver", &api.CreateContainerRequest{ContainerId: "c1", OciSpec: spec, Rootfs: &api.Storage{Driver: "9p"}}, codes.InvalidArgument, `driver "blk"`},
		{"taken", &api.CreateContainerRequest{ContainerId: "taken", OciSpec: spec, Rootfs: blk}, codes.AlreadyExists, `"taken" already exists`},
		// These get past the id reservation and fail in storage, before
		// anything touches the disk.
		{"bad fstype", &api.CreateContainerRequest{ContainerId: "c1", OciSpec: spec, Rootfs: &api.Storage{Driver: "blk", Source: "disk1", Fstype: "vfat"}}, codes.InvalidArgument, "unsupported rootfs filesystem"},
		{"bad serial", &api.CreateContainerRequest{ContainerId: "c1", OciSpec: spec, Rootfs: &api.Storage{Driver: "blk", Source: "../sda", Fstype: "ext4"}}, codes.InvalidArgument, "invalid disk serial"},
	}
	for _, tt := range tests {
		_, err := s.CreateContainer(ctx, tt.req)
		wantCode(t, tt.name, err, tt.code, tt.msg)
	}
	// Failed creates release the id they reserved.
	if _, ok := s.containers["c1"]; ok || len(s.containers) != 1 {
		t.Fatalf("containers after failed creates: %v", s.containers)
	}
}

func TestServerUnknownContainer(t *testing.T) {
	s := newTestServer()
	ctx := testCtx(t)
	calls := map[string]func() error{
		"StartContainer": func() error {
			_, err := s.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "nope"})
			return err
		},
		"RemoveContainer": func() error {
			_, err := s.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "nope"})
			return err
		},
		"StatsContainer": func() error {
			_, err := s.StatsContainer(ctx, &api.StatsContainerRequest{ContainerId: "nope"})
			return err
		},
		"UpdateContainer": func() error {
			_, err := s.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: "nope", Resources: []byte(`{}`)})
			return err
		},
		"WaitProcess": func() error { _, err := s.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "nope"}); return err },
		"SignalProcess": func() error {
			_, err := s.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "nope", Signal: 9})
			return err
		},
		"WriteStdin":   func() error { _, err := s.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: "nope"}); return err },
		"CloseStdin":   func() error { _, err := s.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: "nope"}); return err },
		"ReadStdout":   func() error { _, err := s.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "nope"}); return err },
		"ReadStderr":   func() error { _, err := s.ReadStderr(ctx, &api.ReadStreamRequest{ContainerId: "nope"}); return err },
		"TtyWinResize": func() error { _, err := s.TtyWinResize(ctx, &api.TtyWinResizeRequest{ContainerId: "nope"}); return err },
		"ExecProcess": func() error {
			_, err := s.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "nope", ExecId: "e1", Process: []byte(`{"args":["sh"]}`)})
			return err
		},
		"PauseContainer": func() error {
			_, err := s.PauseContainer(ctx, &api.PauseContainerRequest{ContainerId: "nope"})
			return err
		},
		"ResumeContainer": func() error {
			_, err := s.ResumeContainer(ctx, &api.ResumeContainerRequest{ContainerId: "nope"})
			return err
		},
	}
	for name, call := range calls {
		wantCode(t, name, call(), codes.NotFound, `container "nope" not found`)
	}
	// A known container without the process asked for.
	s.containers["c1"] = &container{id: "c1", procs: map[string]*process{}}
	_, err := s.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "c1"})
	wantCode(t, "no init", err, codes.NotFound, `container "c1" has no init process`)
	_, err = s.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "c1", ExecId: "e9"})
	wantCode(t, "no exec", err, codes.NotFound, `exec "e9" not found in container "c1"`)
	_, err = s.PauseContainer(ctx, &api.PauseContainerRequest{ContainerId: "c1"})
	wantCode(t, "pause before start", err, codes.FailedPrecondition, `pause container "c1": it is not started`)
}

// TestServerUpdateContainerValidation: resources must be bounded OCI
// LinuxResources JSON, for a container that exists in the runner.
func TestServerUpdateContainerValidation(t *testing.T) {
	s := newTestServer()
	ctx := testCtx(t)
	_, err := s.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: "c1", Resources: make([]byte, maxResourcesJSON+1)})
	wantCode(t, "too large", err, codes.InvalidArgument, "the limit is")
	_, err = s.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: "c1", Resources: []byte(`{"memory":`)})
	wantCode(t, "bad JSON", err, codes.InvalidArgument, "not OCI LinuxResources JSON")
	s.containers["c1"] = &container{id: "c1", procs: map[string]*process{}, creating: true}
	_, err = s.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: "c1", Resources: []byte(`{"memory":{"limit":1048576}}`)})
	wantCode(t, "not created", err, codes.FailedPrecondition, `container "c1" is not created yet`)
}

// addContainer registers a container "c1" whose init process is p.
func addContainer(s *Server, started bool, procs map[string]*process) *container {
	c := &container{id: "c1", procs: procs, started: started}
	s.containers["c1"] = c
	return c
}

func TestServerStartingExec(t *testing.T) {
	// An exec id is reserved (process without runner process and stdio)
	// while ExecProcess starts it: every request must fail cleanly.
	s := newTestServer()
	ctx := testCtx(t)
	addContainer(s, true, map[string]*process{"e1": {execID: "e1"}})
	_, err := s.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "c1", ExecId: "e1"})
	wantCode(t, "WaitProcess", err, codes.FailedPrecondition, "still starting")
	_, err = s.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "c1", ExecId: "e1", Signal: 15})
	wantCode(t, "SignalProcess", err, codes.FailedPrecondition, "still starting")
	_, err = s.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "c1", ExecId: "e1"})
	wantCode(t, "ReadStdout", err, codes.FailedPrecondition, "still starting")
	_, err = s.ReadStderr(ctx, &api.ReadStreamRequest{ContainerId: "c1", ExecId: "e1"})
	wantCode(t, "ReadStderr", err, codes.FailedPrecondition, "still starting")
	_, err = s.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: "c1", ExecId: "e1", Data: []byte("x")})
	wantCode(t, "WriteStdin", err, codes.FailedPrecondition, "closed")
	_, err = s.TtyWinResize(ctx, &api.TtyWinResizeRequest{ContainerId: "c1", ExecId: "e1"})
	wantCode(t, "TtyWinResize", err, codes.FailedPrecondition, "has no terminal")
	if _, err := s.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: "c1", ExecId: "e1"}); err != nil {
		t.Fatalf("CloseStdin = %v", err)
	}
}

func TestServerStdio(t *testing.T) {
	s := newTestServer()
	ctx := testCtx(t)
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	defer inW.Close()
	p := &process{execID: "e1", p: &runner.Process{Pid: 1 << 30}, stdin: inW, stdout: newOutStream(), stderr: newOutStream()}
	p.stdout.buf, p.stdout.eof = []byte("out-data"), true
	p.stderr.buf, p.stderr.eof = []byte("err"), true
	addContainer(s, true, map[string]*process{"e1": p})

	w, err := s.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: "c1", ExecId: "e1", Data: []byte("hello")})
	if err != nil || w.Len != 5 {
		t.Fatalf("WriteStdin = %+v, %v", w, err)
	}
	if _, err := s.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: "c1", ExecId: "e1"}); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(inR); err != nil || string(b) != "hello" {
		t.Fatalf("stdin pipe got %q, %v; want hello then EOF", b, err)
	}
	_, err = s.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: "c1", ExecId: "e1", Data: []byte("late")})
	wantCode(t, "WriteStdin after close", err, codes.FailedPrecondition, "stdin of c1/e1 is closed")
	if _, err := s.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: "c1", ExecId: "e1"}); err != nil {
		t.Fatalf("second CloseStdin = %v", err)
	}

	r, err := s.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "c1", ExecId: "e1", Len: 3})
	if err != nil || string(r.Data) != "out" || r.Eof {
		t.Fatalf("ReadStdout(3) = %+v, %v", r, err)
	}
	r, err = s.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "c1", ExecId: "e1"})
	if err != nil || string(r.Data) != "-data" || r.Eof {
		t.Fatalf("ReadStdout = %+v, %v", r, err)
	}
	r, err = s.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "c1", ExecId: "e1"})
	if err != nil || len(r.Data) != 0 || !r.Eof {
		t.Fatalf("ReadStdout at the end = %+v, %v", r, err)
	}
	r, err = s.ReadStderr(ctx, &api.ReadStreamRequest{ContainerId: "c1", ExecId: "e1"})
	if err != nil || string(r.Data) != "err" {
		t.Fatalf("ReadStderr = %+v, %v", r, err)
	}

	// A read that waits longer than its deadline ends with DeadlineExceeded.
	p.stdout = newOutStream()
	dctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = s.ReadStdout(dctx, &api.ReadStreamRequest{ContainerId: "c1", ExecId: "e1"})
	wantCode(t, "ReadStdout past deadline", err, codes.DeadlineExceeded, "")

	// Signals outside 1..64 are refused.
	for _, sig := range []uint32{0, 65, 1 << 31} {
		_, err := s.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "c1", ExecId: "e1", Signal: sig})
		wantCode(t, "SignalProcess", err, codes.InvalidArgument, "invalid signal")
	}
	_, err = s.TtyWinResize(ctx, &api.TtyWinResizeRequest{ContainerId: "c1", ExecId: "e1", Rows: 10, Columns: 10})
	wantCode(t, "TtyWinResize without pty", err, codes.FailedPrecondition, "c1/e1 has no terminal")
}

func TestServerExecProcessValidation(t *testing.T) {
	s := newTestServer()
	ctx := testCtx(t)
	proc := []byte(`{"args":["sh"]}`)
	tests := []struct {
		name string
		req  *api.ExecProcessRequest
		code codes.Code
		msg  string
	}{
		{"bad exec id", &api.ExecProcessRequest{ContainerId: "c1", ExecId: "", Process: proc}, codes.InvalidArgument, "invalid exec id"},
		{"traversal", &api.ExecProcessRequest{ContainerId: "c1", ExecId: "../e", Process: proc}, codes.InvalidArgument, "invalid exec id"},
		{"no process", &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1"}, codes.InvalidArgument, "process must be 1 byte to 1048576 bytes"},
		{"too big", &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: make([]byte, maxSpecBytes+1)}, codes.InvalidArgument, "process must be"},
		{"bad json", &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: []byte(`{"args":`)}, codes.InvalidArgument, "decode OCI process"},
		{"not started", &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: proc}, codes.FailedPrecondition, `container "c1" is not running`},
		{"duplicate", &api.ExecProcessRequest{ContainerId: "c1", ExecId: "dup", Process: proc}, codes.AlreadyExists, `exec "dup" already exists`},
	}
	addContainer(s, false, map[string]*process{"dup": {execID: "dup"}})
	for _, tt := range tests {
		_, err := s.ExecProcess(ctx, tt.req)
		wantCode(t, tt.name, err, tt.code, tt.msg)
	}
	if _, ok := s.containers["c1"].procs["e1"]; ok {
		t.Fatal("a refused exec left its id reserved")
	}
	// A container being removed takes no new exec.
	c := addContainer(s, true, map[string]*process{"": {p: &runner.Process{}}})
	c.removing = true
	_, err := s.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e2", Process: proc})
	wantCode(t, "removing", err, codes.FailedPrecondition, "is not running")
}

func TestServerContainerState(t *testing.T) {
	s := newTestServer()
	ctx := testCtx(t)
	s.containers["zz"] = &container{id: "zz", procs: map[string]*process{}}
	s.containers["aa"] = &container{id: "aa", procs: map[string]*process{}}
	l, err := s.ListContainers(ctx, &api.ListContainersRequest{})
	if err != nil || len(l.Containers) != 2 || l.Containers[0].ContainerId != "aa" || l.Containers[1].ContainerId != "zz" ||
		l.Containers[0].Status != "created" || l.Containers[0].Pid != 0 {
		t.Fatalf("ListContainers = %+v, %v", l, err)
	}
	_, err = s.StatsContainer(ctx, &api.StatsContainerRequest{ContainerId: "aa"})
	wantCode(t, "stats before create", err, codes.FailedPrecondition, "not created yet")
	_, err = s.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "aa", Signal: 15})
	wantCode(t, "signal before create", err, codes.NotFound, "no init process")

	// A running init (its process never exits here) blocks a plain remove
	// and a wait ends at the request deadline.
	running := &container{id: "run", started: true, procs: map[string]*process{"": {p: &runner.Process{Pid: 1 << 30}}}}
	s.containers["run"] = running
	_, err = s.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "run"})
	wantCode(t, "remove running", err, codes.FailedPrecondition, "is running: stop it first or remove with force")
	running.removing = true
	_, err = s.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "run", Force: true})
	wantCode(t, "remove twice", err, codes.FailedPrecondition, "already being removed")
	dctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = s.WaitProcess(dctx, &api.WaitProcessRequest{ContainerId: "run"})
	wantCode(t, "wait past deadline", err, codes.DeadlineExceeded, "")
	l, err = s.ListContainers(ctx, &api.ListContainersRequest{})
	if err != nil || len(l.Containers) != 3 || l.Containers[1].ContainerId != "run" || l.Containers[1].Status != "running" || l.Containers[1].Pid != 1<<30 {
		t.Fatalf("ListContainers = %+v, %v", l, err)
	}
}

// FuzzSafeID checks the hand-written identifier check against the regexp
// it spells out.
func FuzzSafeID(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	for _, s := range []string{"a", "a-b.c_d", "-a", "", "a/b", strings.Repeat("x", 128), strings.Repeat("x", 129), "a\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := safeID(s), re.MatchString(s); got != want {
			t.Fatalf("safeID(%q) = %v, the regexp says %v", s, got, want)
		}
	})
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-project/coffer/internal/guest"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/image"
	"github.com/coffer-project/coffer/internal/sandbox"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fakeGuestDir writes a guest image manifest with stand-in kernel and
// initrd files: enough for guest.Load, nothing that boots.
func fakeGuestDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	initrd := []byte("not an initrd")
	m := guest.Manifest{
		FormatVersion: guest.FormatVersion,
		Kernel:        guest.KernelInfo{Path: "vmlinuz"},
		Initrd:        guest.InitrdInfo{Path: "initrd.img", Size: int64(len(initrd))},
		Cmdline:       "console=ttyS0 panic=-1",
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{guest.ManifestFile: b, "vmlinuz": []byte("not a kernel"), "initrd.img": initrd} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// goodOpts are the flags of a valid `coffer run --rootfs DIR`, with the
// defaults cobra gives.
func goodOpts(t *testing.T, guestDir string) *runOpts {
	return &runOpts{name: "unit", rootfs: t.TempDir(), rootfsType: sandbox.FSErofs, transport: "auto",
		guestDir: guestDir, bootTimeout: sandbox.DefaultBootTimeout}
}

// TestBuildRequestRejects: every bad flag value gives one line that names
// the flag, before anything is built or started.
func TestBuildRequestRejects(t *testing.T) {
	guestDir := fakeGuestDir(t)
	args := []string{"true"}
	tests := []struct {
		name   string
		mutate func(o *runOpts)
		args   []string // default: args
		want   []string // substrings of the error
	}{
		{"rootfs-type", func(o *runOpts) { o.rootfsType = "btrfs" }, nil, []string{`--rootfs-type "btrfs"`, "erofs or ext4"}},
		{"vcpus 0", func(o *runOpts) { o.vcpus = -1 }, nil, []string{"--vcpus -1", "1 to 64"}},
		{"vcpus 65", func(o *runOpts) { o.vcpus = 65 }, nil, []string{"--vcpus 65", "1 to 64"}},
		{"vcpus from cpus", func(o *runOpts) { o.cpus = 100 }, nil, []string{"--cpus 100", "at most 64", "--vcpus"}},
		{"vm-memory small", func(o *runOpts) { o.vmMemory = "127m" }, nil, []string{"--vm-memory 127m", "at least 128m"}},
		{"vm-memory bytes", func(o *runOpts) { o.vmMemory = "134217727" }, nil, []string{"--vm-memory", "at least 128m"}},
		{"vm-memory junk", func(o *runOpts) { o.vmMemory = "lots" }, nil, []string{"--vm-memory", `"lots"`}},
		{"pids-limit", func(o *runOpts) { o.pids = -1 }, nil, []string{"--pids-limit -1", "positive"}},
		{"accel", func(o *runOpts) { o.accel = "hvf" }, nil, []string{"--accel", `"hvf"`, "kvm, tcg or auto"}},
		{"memory junk", func(o *runOpts) { o.memory = "12q" }, nil, []string{"--memory", `"12q"`}},
		{"memory zero", func(o *runOpts) { o.memory = "0" }, nil, []string{"--memory", `"0"`}},
		{"memory small", func(o *runOpts) { o.memory = "1m" }, nil, []string{"--memory 1m", "at least 4m"}},
		{"cpus negative", func(o *runOpts) { o.cpus = -0.5 }, nil, []string{"--cpus -0.5"}},
		{"cpus NaN", func(o *runOpts) { o.cpus = math.NaN() }, nil, []string{"--cpus NaN"}},
		{"cpus huge", func(o *runOpts) { o.cpus = 257 }, nil, []string{"--cpus 257", "at most 256"}},
		{"env no =", func(o *runOpts) { o.env = []string{"A=1", "NOVALUE"} }, nil, []string{"-e/--env", `"NOVALUE"`, "KEY=VALUE"}},
		{"env no key", func(o *runOpts) { o.env = []string{"=v"} }, nil, []string{"-e/--env", `"=v"`}},
		{"workdir relative", func(o *runOpts) { o.workdir = "srv" }, nil, []string{"-w/--workdir", `"srv"`, "absolute"}},
		{"user name", func(o *runOpts) { o.user = "nobody" }, nil, []string{"-u/--user", `"nobody"`, "UID[:GID]"}},
		{"user bad gid", func(o *runOpts) { o.user = "1000:staff" }, nil, []string{"-u/--user", `"1000:staff"`}},
		{"user empty gid", func(o *runOpts) { o.user = "1000:" }, nil, []string{"-u/--user"}},
		{"user negative", func(o *runOpts) { o.user = "-1" }, nil, []string{"-u/--user"}},
		{"name", func(o *runOpts) { o.name = "no/slash" }, nil, []string{"--name", `"no/slash"`}},
		{"no rootfs", func(o *runOpts) { o.rootfs = "" }, nil, []string{"--rootfs"}},
		{"rootfs missing", func(o *runOpts) { o.rootfs = filepath.Join(t.TempDir(), "nope") }, nil, []string{"rootfs", "nope"}},
		{"sysctl", func(o *runOpts) { o.sysctls = []string{"kernel.shmmax"} }, nil, []string{"sysctl", "name=value"}},
		{"volume", func(o *runOpts) { o.volumes = []string{"data"} }, nil, []string{"-v"}},
		{"transport", func(o *runOpts) { o.transport = "tcp" }, nil, []string{"--transport", `"tcp"`, "auto, serial or vsock"}},
		{"no command", func(o *runOpts) {}, []string{}, []string{"no command given"}},
		{"no guest", func(o *runOpts) { o.guestDir = t.TempDir() }, nil, []string{"coffer guest build"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := goodOpts(t, guestDir)
			tt.mutate(o)
			a := args
			if tt.args != nil {
				a = tt.args
			}
			req, err := buildRequest(&globalOpts{}, o, a)
			if err == nil {
				t.Fatalf("buildRequest accepted it: %+v", req)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

// TestBuildRequestVsockWithoutDevice: --transport vsock on a host whose
// /dev/vhost-vsock does not open fails before anything starts, naming the
// flag and the device.
func TestBuildRequestVsockWithoutDevice(t *testing.T) {
	if f, err := os.OpenFile(sandbox.VhostVsockDevice, os.O_RDWR, 0); err == nil {
		f.Close()
		t.Skipf("this host has a usable %s", sandbox.VhostVsockDevice)
	}
	o := goodOpts(t, fakeGuestDir(t))
	o.transport = "vsock"
	_, err := buildRequest(&globalOpts{}, o, []string{"true"})
	if err == nil || !strings.Contains(err.Error(), "--transport") || !strings.Contains(err.Error(), sandbox.VhostVsockDevice) ||
		!strings.Contains(err.Error(), "serial") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("--transport vsock without %s: %v", sandbox.VhostVsockDevice, err)
	}
}

func TestBuildRequestAccepts(t *testing.T) {
	guestDir := fakeGuestDir(t)
	o := goodOpts(t, guestDir)
	o.env = []string{"A=1", "B=", "A=2", "C=x=y"}
	o.workdir = "/srv/app"
	o.user = "1000:100"
	o.memory = "512m"
	o.cpus = 1.5
	o.pids = 50
	o.accel = "TCG"
	o.transport = "Serial"
	o.sysctls = []string{"net.ipv4.ip_forward=1"}
	req, err := buildRequest(&globalOpts{debug: true}, o, []string{"sh", "-c", "echo hi"})
	if err != nil {
		t.Fatal(err)
	}
	p := req.Spec.Process
	for _, e := range []string{"A=2", "B=", "C=x=y"} {
		if !slices.Contains(p.Env, e) {
			t.Errorf("env %q missing: %q", e, p.Env)
		}
	}
	if slices.Contains(p.Env, "A=1") {
		t.Errorf("A=1 not replaced by A=2: %q", p.Env)
	}
	if p.Cwd != "/srv/app" || p.User.UID != 1000 || p.User.GID != 100 {
		t.Errorf("cwd %q uid %d gid %d, want /srv/app 1000 100", p.Cwd, p.User.UID, p.User.GID)
	}
	if !slices.Equal(p.Args, []string{"sh", "-c", "echo hi"}) {
		t.Errorf("args %q", p.Args)
	}
	if req.Spec.Hostname != "unit" {
		t.Errorf("hostname %q, want the pod name", req.Spec.Hostname)
	}
	if r := req.Spec.Linux.Resources; r == nil || r.Memory == nil || *r.Memory.Limit != 512<<20 || r.Pids == nil || r.Pids.Limit == nil || *r.Pids.Limit != 50 {
		t.Errorf("resources %+v", req.Spec.Linux.Resources)
	}
	// The VM gets the memory limit plus 128m, and the CPU limit rounded up.
	if req.MemoryMiB != 512+128 || req.VCPUs != 2 {
		t.Errorf("VM %d MiB %d vCPUs, want 640 and 2", req.MemoryMiB, req.VCPUs)
	}
	if req.Accel != hypervisor.AccelTCG || req.Transport != sandbox.TransportSerial || !req.AgentDebug {
		t.Errorf("accel %q transport %q agent debug %v", req.Accel, req.Transport, req.AgentDebug)
	}
	if req.Kernel != filepath.Join(guestDir, "vmlinuz") || req.Initrd != filepath.Join(guestDir, "initrd.img") || req.Cmdline != "console=ttyS0 panic=-1" {
		t.Errorf("guest %q %q %q", req.Kernel, req.Initrd, req.Cmdline)
	}
	if !filepath.IsAbs(req.Rootfs) || req.RootfsType != sandbox.FSErofs || !req.StartNow {
		t.Errorf("rootfs %q type %q start now %v", req.Rootfs, req.RootfsType, req.StartNow)
	}

	// Defaults, and explicit VM sizes.
	o = goodOpts(t, guestDir)
	o.name = ""
	o.user = "7"
	o.transport = "auto"
	if req, err = buildRequest(&globalOpts{}, o, []string{"true"}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(req.Name, "coffer-") || req.Spec.Hostname != req.Name {
		t.Errorf("generated name %q hostname %q", req.Name, req.Spec.Hostname)
	}
	if req.MemoryMiB != 256 || req.VCPUs != 1 || req.Accel != hypervisor.AccelAuto || req.Transport != sandbox.TransportAuto {
		t.Errorf("defaults: %d MiB %d vCPUs accel %q transport %q", req.MemoryMiB, req.VCPUs, req.Accel, req.Transport)
	}
	if u := req.Spec.Process.User; u.UID != 7 || u.GID != 0 || req.Spec.Process.Cwd != "/" {
		t.Errorf("-u 7: uid %d gid %d cwd %q", u.UID, u.GID, req.Spec.Process.Cwd)
	}
	o = goodOpts(t, guestDir)
	o.vmMemory, o.vcpus, o.rootfsType = "1g", 3, sandbox.FSExt4
	if req, err = buildRequest(&globalOpts{}, o, []string{"true"}); err != nil {
		t.Fatal(err)
	}
	if req.MemoryMiB != 1024 || req.VCPUs != 3 || req.RootfsType != sandbox.FSExt4 {
		t.Errorf("--vm-memory 1g --vcpus 3: %d MiB %d vCPUs %s", req.MemoryMiB, req.VCPUs, req.RootfsType)
	}
}

// TestCheckProcessFlags covers what `coffer exec` shares with run.
func TestCheckProcessFlags(t *testing.T) {
	uid, gid, err := checkProcessFlags([]string{"A=b"}, "/", "0:0")
	if err != nil || uid != 0 || gid != 0 {
		t.Errorf("good flags: %d %d %v", uid, gid, err)
	}
	if uid, gid, err = checkProcessFlags(nil, "", "4294967295:1"); err != nil || uid != math.MaxUint32 || gid != 1 {
		t.Errorf("-u 4294967295:1: %d %d %v", uid, gid, err)
	}
	for _, user := range []string{"4294967296", "1:2:3", ":1", "root"} {
		if _, _, err := checkProcessFlags(nil, "", user); err == nil || !strings.Contains(err.Error(), "-u/--user") {
			t.Errorf("-u %s: %v", user, err)
		}
	}
}

// TestRunFlagErrors goes through cobra: values the flag parser refuses
// and values buildRequest refuses end the same way (exit 125 from
// runRun), and nothing appears in the runtime directory.
func TestRunFlagErrors(t *testing.T) {
	rt := t.TempDir()
	t.Setenv("COFFER_RUNTIME_DIR", rt)
	t.Setenv("COFFER_GUEST_DIR", fakeGuestDir(t))
	rootfs := t.TempDir()
	tests := []struct {
		args []string
		want string
		code int // 0: a flag parse error (cobra's), not an exitError
	}{
		{[]string{"--cpus", "two"}, `"--cpus"`, 0},
		{[]string{"--vcpus", "1.5"}, `"--vcpus"`, 0},
		{[]string{"--pids-limit", "many"}, `"--pids-limit"`, 0},
		{[]string{"--boot-timeout", "10"}, `"--boot-timeout"`, 0},
		{[]string{"--vcpus", "99"}, "--vcpus 99", exitCofferError},
		{[]string{"--memory", "lots"}, "--memory", exitCofferError},
		{[]string{"--accel", "xen"}, "--accel", exitCofferError},
		{[]string{"--transport", "pipe"}, "--transport", exitCofferError},
		{[]string{"-e", "X"}, "-e/--env", exitCofferError},
		{[]string{"-d", "-i"}, "-d cannot be combined with -i or -t", exitCofferError},
		{[]string{"-d", "-t"}, "-d cannot be combined with -i or -t", exitCofferError},
	}
	for _, tt := range tests {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(append([]string{"run"}, tt.args...), "--rootfs", rootfs, "--", "true"))
		err := root.ExecuteContext(context.Background())
		if err == nil {
			t.Fatalf("%q: accepted", tt.args)
		}
		if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %q, want one line with %q", tt.args, err, tt.want)
		}
		var ee *exitError
		if got := errors.As(err, &ee); got != (tt.code != 0) || (got && ee.code != tt.code) {
			t.Errorf("%q: %#v, want exit code %d", tt.args, err, tt.code)
		}
	}
	if entries, err := os.ReadDir(rt); err != nil || len(entries) > 0 {
		t.Errorf("runtime dir after refused runs: %v %v", entries, err)
	}
}

// TestRunDetachRefusesTerminal: -d with -i or -t is refused before any
// flag is looked at.
func TestRunDetachRefusesTerminal(t *testing.T) {
	for _, o := range []*runOpts{{detach: true, interactive: true}, {detach: true, tty: true}, {detach: true, interactive: true, tty: true}} {
		err := runRun(context.Background(), &globalOpts{}, o, []string{"sh"})
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != exitCofferError || !strings.Contains(err.Error(), "-d cannot be combined with -i or -t") ||
			!strings.Contains(err.Error(), "coffer exec -it") {
			t.Errorf("-d -i=%v -t=%v: %v", o.interactive, o.tty, err)
		}
	}
}

func TestStartError(t *testing.T) {
	tests := []struct {
		msg  string
		code int
	}{
		{`create container: exec: "nosuch": executable file not found in $PATH`, exitNotFound},
		{"start /bin/nosuch: no such file or directory (the executable is missing)", exitNotFound},
		{"exec /etc/passwd: permission denied", exitCannotInvoke},
		{"exec /bin: is a directory", exitCannotInvoke},
		{"rootfs /x: no such file or directory", exitCofferError},
		{"start the pod VM: qemu exited", exitCofferError},
		{"", exitCofferError},
	}
	for _, tt := range tests {
		orig := errors.New(tt.msg)
		err := startError(orig)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != tt.code {
			t.Errorf("startError(%q) = %#v, want exit code %d", tt.msg, err, tt.code)
			continue
		}
		if !errors.Is(ee.err, orig) || err.Error() != tt.msg {
			t.Errorf("startError(%q) lost the error: %v", tt.msg, err)
		}
	}
}

// TestImageRunConfig: the image's config fills what the flags leave
// unset, and a bad value from the image is blamed on the image, not on a
// flag.
func TestImageRunConfig(t *testing.T) {
	ref, err := image.ParseReference("127.0.0.1:5000/app:1", false)
	if err != nil {
		t.Fatal(err)
	}
	img := func(c v1.Config) *image.Image { return &image.Image{Config: &v1.ConfigFile{Config: c}} }
	dest := t.TempDir()
	if err := os.Mkdir(filepath.Join(dest, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}

	o := &runOpts{env: []string{"B=flag"}}
	argv, err := imageRunConfig(ref, img(v1.Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"},
		Env: []string{"A=img", "B=img"}, WorkingDir: "/app", User: "1000:1000"}), o, dest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(argv, []string{"/bin/app", "--serve"}) || o.rootfs != filepath.Join(dest, "rootfs") {
		t.Errorf("argv %q rootfs %q", argv, o.rootfs)
	}
	if !slices.Equal(o.env, []string{"A=img", "B=img", "B=flag"}) || o.workdir != "/app" || o.user != "1000:1000" {
		t.Errorf("env %q workdir %q user %q", o.env, o.workdir, o.user)
	}
	// Arguments after the image replace its cmd; flags win over the config.
	o = &runOpts{workdir: "/flag", user: "5"}
	argv, err = imageRunConfig(ref, img(v1.Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"}, WorkingDir: "rel", User: "app"}), o, dest, []string{"--check"})
	if err != nil || !slices.Equal(argv, []string{"/bin/app", "--check"}) || o.workdir != "/flag" || o.user != "5" {
		t.Errorf("flags over the config: %q %v workdir %q user %q", argv, err, o.workdir, o.user)
	}

	for _, tt := range []struct {
		c    v1.Config
		want string
	}{
		{v1.Config{Cmd: []string{"x"}, Env: []string{"PATH=/bin", "BROKEN"}}, `bad environment variable "BROKEN"`},
		{v1.Config{Cmd: []string{"x"}, WorkingDir: "app"}, `working directory "app" is not absolute`},
		{v1.Config{}, "no entrypoint or cmd"},
	} {
		_, err := imageRunConfig(ref, img(tt.c), &runOpts{}, dest, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "127.0.0.1:5000/app:1") ||
			strings.Contains(err.Error(), "-e/") || strings.Contains(err.Error(), "-w/") {
			t.Errorf("%+v: %v, want an error about the image with %q", tt.c, err, tt.want)
		}
	}
}

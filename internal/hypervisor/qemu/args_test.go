package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/hypervisor"
)

// These tests need no QEMU.

func TestBuildArgs(t *testing.T) {
	cfg := hypervisor.Config{
		StateDir: "/run/coffer/pod,1",
		Kernel:   "/k/vmlinuz", Initrd: "/k/initrd", Cmdline: "console=ttyS0 quiet",
		Ports: []hypervisor.Port{
			{Name: "coffer.agent", Kind: hypervisor.PortSocket},
			{Name: "coffer.log", Kind: hypervisor.PortFile, Path: "/var/log/g.log"},
		},
		Disks:     []hypervisor.Disk{{Serial: "root", Path: "/img/root.erofs", ReadOnly: true}},
		ExtraArgs: []string{"-S"},
	}.WithDefaults()
	l, err := newLayout(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(buildArgs(cfg, hypervisor.AccelTCG, l), " ")
	want := strings.Join([]string{
		"-name guest=pod,,1 -nodefaults -no-user-config -display none -no-reboot",
		"-machine q35 -accel tcg,tb-size=64 -cpu max,-erms,-fsrm -m 256 -smp 1",
		"-kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0 quiet",
		"-chardev file,id=con,path=/run/coffer/pod,,1/console.log,append=on -serial chardev:con",
		"-qmp unix:/run/coffer/pod,,1/qmp.sock,server=on,wait=off",
		"-device virtio-serial-pci,id=vser0",
		"-chardev socket,id=port0,path=/run/coffer/pod,,1/port-coffer.agent.sock,server=on,wait=off",
		"-device virtserialport,bus=vser0.0,chardev=port0,id=vport0,name=coffer.agent",
		"-chardev file,id=port1,path=/var/log/g.log,append=on",
		"-device virtserialport,bus=vser0.0,chardev=port1,id=vport1,name=coffer.log",
		"-drive if=none,id=disk0,file=/img/root.erofs,format=raw,readonly=on,cache=writeback",
		"-device virtio-blk-pci,drive=disk0,id=vdisk0,serial=root",
		"-S",
	}, " ")
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}

	cfg.MachineType = "microvm,acpi=off"
	got = strings.Join(buildArgs(cfg, hypervisor.AccelKVM, l), " ")
	for _, s := range []string{"-machine microvm,acpi=off -accel kvm", "-cpu host", "virtio-serial-device,id=vser0", "virtio-blk-device,drive=disk0"} {
		if !strings.Contains(got, s) {
			t.Errorf("microvm/kvm args lack %q: %s", s, got)
		}
	}

	minimal := hypervisor.Config{StateDir: "/s", Kernel: "/k"}.WithDefaults()
	l, _ = newLayout(minimal)
	got = strings.Join(buildArgs(minimal, hypervisor.AccelTCG, l), " ")
	for _, s := range []string{"-initrd", "-append", "virtio-serial", "-drive"} {
		if strings.Contains(got, s) {
			t.Errorf("minimal args contain %q: %s", s, got)
		}
	}
}

func TestBuildArgsVirtioFS(t *testing.T) {
	cfg := hypervisor.Config{
		StateDir: "/s", Kernel: "/k", MemoryMiB: 512, SharedMemory: true,
		FS: []hypervisor.FSDevice{{Tag: "coffer", Socket: "/p/vfs,1.sock"}},
	}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	l, err := newLayout(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(buildArgs(cfg, hypervisor.AccelTCG, l), " ")
	for _, s := range []string{
		"-machine q35,memory-backend=ram0 -accel tcg,tb-size=64 -cpu max,-erms,-fsrm -m 512 -object memory-backend-memfd,id=ram0,size=512M,share=on -smp 1",
		"-chardev socket,id=fs0,path=/p/vfs,,1.sock -device vhost-user-fs-pci,chardev=fs0,id=vfs0,tag=coffer,queue-size=1024",
	} {
		if !strings.Contains(got, s) {
			t.Errorf("args lack %q:\n%s", s, got)
		}
	}
	plain := hypervisor.Config{StateDir: "/s", Kernel: "/k"}.WithDefaults()
	l, _ = newLayout(plain)
	if got := strings.Join(buildArgs(plain, hypervisor.AccelTCG, l), " "); strings.Contains(got, "memfd") || strings.Contains(got, "memory-backend") {
		t.Errorf("a VM without SharedMemory gets a memory backend: %s", got)
	}
	bad := cfg
	bad.SharedMemory = false
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "SharedMemory") {
		t.Errorf("virtio-fs without shared memory: err = %v", err)
	}
	bad = cfg
	bad.FS = []hypervisor.FSDevice{{Tag: strings.Repeat("t", 37), Socket: "/x"}}
	if err := bad.Validate(); err == nil {
		t.Error("a 37-byte tag was accepted")
	}
}

func TestRootPortArgs(t *testing.T) {
	if got := rootPortArgs(0); len(got) != 0 {
		t.Errorf("rootPortArgs(0) = %v", got)
	}
	got := strings.Join(rootPortArgs(2), " ")
	want := "-device pcie-root-port,id=hp0,bus=pcie.0,chassis=1,slot=1,addr=0x8.0,io-reserve=0,multifunction=on" +
		" -device pcie-root-port,id=hp1,bus=pcie.0,chassis=2,slot=2,addr=0x8.1,io-reserve=0"
	if got != want {
		t.Errorf("rootPortArgs(2):\n got %s\nwant %s", got, want)
	}
	args := rootPortArgs(hypervisor.MaxHotplugSlots)
	ids, chassis, addrs := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i := 1; i < len(args); i += 2 {
		for _, kv := range strings.Split(args[i], ",")[1:] {
			k, v, _ := strings.Cut(kv, "=")
			m := map[string]map[string]bool{"id": ids, "chassis": chassis, "addr": addrs}[k]
			if m == nil {
				continue
			}
			if m[v] {
				t.Errorf("%s=%s used twice", k, v)
			}
			m[v] = true
		}
	}
	if len(ids) != 32 || len(chassis) != 32 || len(addrs) != 32 {
		t.Errorf("32 ports: %d ids, %d chassis, %d addrs", len(ids), len(chassis), len(addrs))
	}
	if !strings.Contains(args[len(args)-1], "addr=0xb.7") {
		t.Errorf("last port %s, want addr=0xb.7", args[len(args)-1])
	}
}

func TestHotplugNames(t *testing.T) {
	n1, d1 := hotplugNames("hot1")
	if n1 != "hpn-s-hot1" || d1 != "hpd-s-hot1" {
		t.Errorf("hotplugNames(hot1) = %q %q", n1, d1)
	}
	seen := map[string]string{}
	for _, s := range []string{"a b", "a_b", "a,b", "12345678901234567890", "x/y", "é"} {
		n, d := hotplugNames(s)
		if len(n) > 31 || len(d) > 31 || !wellFormedID(n) || !wellFormedID(d) {
			t.Errorf("hotplugNames(%q) = %q %q: not a valid QEMU id", s, n, d)
		}
		if other, ok := seen[n]; ok {
			t.Errorf("serials %q and %q share node name %q", s, other, n)
		}
		seen[n] = s
	}
}

func wellFormedID(s string) bool {
	for i, r := range s {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if i == 0 && !letter || !(letter || r >= '0' && r <= '9' || strings.ContainsRune("-._", r)) {
			return false
		}
	}
	return s != ""
}

func TestShellQuote(t *testing.T) {
	got := shellQuote([]string{"/usr/bin/qemu", "-append", "console=ttyS0 quiet", "it's", ""})
	want := `/usr/bin/qemu -append 'console=ttyS0 quiet' 'it'\''s' ''`
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestTailFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "con.log")
	if tailFile(p, 3) != "" {
		t.Error("missing file should give empty tail")
	}
	var b strings.Builder
	for i := range 20000 { // > 64 KiB, so the window is used
		b.WriteString("line ")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString("\r\n")
	}
	b.WriteString("last\r\n")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := tailFile(p, 2); got != "line "+strings.Repeat("x", 19999%7)+"\nlast" {
		t.Errorf("tail 2 = %q", got)
	}
	if got := strings.Count(tailFile(p, 5000), "\n"); got != 4999 {
		t.Errorf("tail 5000 has %d newlines", got+1)
	}
}

func TestWithin(t *testing.T) {
	for _, c := range []struct {
		dir, path string
		want      bool
	}{
		{"/a/b", "/a/b/c.sock", true},
		{"/a/b", "/a/bc/x", false},
		{"/a/b", "/a/x", false},
		{"/a/b", "/a/b/..x", true},
	} {
		if got := within(c.dir, c.path); got != c.want {
			t.Errorf("within(%q, %q) = %v", c.dir, c.path, got)
		}
	}
}

// fakeQMP serves one QMP connection on a unix socket with a scripted
// handler per command; it sends an event before every answer.
func fakeQMP(t *testing.T, handle func(cmd string, args json.RawMessage) string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {}, "capabilities": ["oob"]}}` + "\r\n"))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var req struct {
				Execute   string          `json:"execute"`
				Arguments json.RawMessage `json:"arguments"`
				ID        json.RawMessage `json:"id"`
			}
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				return
			}
			if req.Execute == "qmp_capabilities" {
				c.Write([]byte(`{"return": {}}` + "\r\n"))
				continue
			}
			ans := handle(req.Execute, req.Arguments)
			if ans == "" {
				return // hang up
			}
			c.Write([]byte(`{"event": "NOISE", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}` + "\r\n"))
			c.Write([]byte(strings.Replace(ans, "ID", string(req.ID), 1) + "\r\n"))
		}
	}()
	return sock
}

func TestQMPClient(t *testing.T) {
	var gotArgs json.RawMessage
	sock := fakeQMP(t, func(cmd string, args json.RawMessage) string {
		switch cmd {
		case "echo":
			gotArgs = args
			return `{"return": {"ok": true}, "id": ID}`
		case "fail":
			return `{"error": {"class": "GenericError", "desc": "nope"}, "id": ID}`
		case "slow":
			time.Sleep(300 * time.Millisecond)
			return `{"return": {}, "id": ID}`
		}
		return ""
	})
	var events []string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialQMP(ctx, sock, func(name string, _ json.RawMessage) { events = append(events, name) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()

	ret, err := c.execute(ctx, "echo", map[string]int{"a": 1})
	if err != nil || string(ret) != `{"ok": true}` || string(gotArgs) != `{"a":1}` {
		t.Fatalf("echo = %s, %v (args %s)", ret, err, gotArgs)
	}
	var nilArgs *struct{}
	if _, err := c.execute(ctx, "echo", nilArgs); err != nil || gotArgs != nil {
		t.Fatalf("typed nil args: %v, sent %s", err, gotArgs)
	}
	_, err = c.execute(ctx, "fail", nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Command != "fail" || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("fail = %v", err)
	}
	short, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer scancel()
	if _, err := c.execute(short, "slow", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow with short ctx = %v", err)
	}
	// The late answer to "slow" is dropped; the next call gets its own.
	if ret, err := c.execute(ctx, "echo", nil); err != nil || string(ret) != `{"ok": true}` {
		t.Fatalf("echo after timeout = %s, %v", ret, err)
	}
	if _, err := c.execute(ctx, "hangup", nil); !errors.Is(err, errQMPClosed) {
		t.Fatalf("hangup = %v, want errQMPClosed", err)
	}
	if _, err := c.execute(ctx, "echo", nil); !errors.Is(err, errQMPClosed) {
		t.Fatalf("after hangup = %v, want errQMPClosed", err)
	}
	<-c.readerDone
	if len(events) < 3 || events[0] != "NOISE" {
		t.Errorf("events = %v", events)
	}
}

func TestDialQMPNotQMP(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("{\"hello\": 1}\n"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dialQMP(ctx, sock, nil); err == nil || !strings.Contains(err.Error(), "no QMP member") {
		t.Fatalf("dial non-QMP = %v", err)
	}
}

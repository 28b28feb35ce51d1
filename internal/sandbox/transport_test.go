package sandbox

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseTransport(t *testing.T) {
	for in, want := range map[string]string{
		"": TransportAuto, "auto": TransportAuto, " AUTO ": TransportAuto,
		"serial": TransportSerial, "Serial": TransportSerial, "vsock": TransportVsock, "VSOCK\n": TransportVsock,
	} {
		got, err := ParseTransport(in)
		if err != nil || got != want {
			t.Errorf("ParseTransport(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"tcp", "virtio-serial", "vsock:3", "auto,vsock"} {
		_, err := ParseTransport(in)
		if err == nil || !strings.Contains(err.Error(), "use auto, serial or vsock") || !strings.Contains(err.Error(), in) {
			t.Errorf("ParseTransport(%q) = %v; want an error naming the value and the choices", in, err)
		}
	}
}

func TestChooseTransport(t *testing.T) {
	noDevice := func() error { return &fs.PathError{Op: "open", Path: VhostVsockDevice, Err: fs.ErrNotExist} }
	deviceOK := func() error { return nil }
	mustNotOpen := func() error { t.Error("the device was checked for a serial transport"); return nil }
	tests := []struct {
		requested string
		open      func() error
		want      string
		errWant   []string
	}{
		// auto is serial, whether or not the host has vhost-vsock: vsock
		// is opt-in (no peer authentication yet).
		{requested: "", open: mustNotOpen, want: TransportSerial},
		{requested: "auto", open: mustNotOpen, want: TransportSerial},
		{requested: "serial", open: mustNotOpen, want: TransportSerial},
		{requested: "vsock", open: deviceOK, want: TransportVsock},
		{requested: "vsock", open: noDevice, errWant: []string{"vsock", VhostVsockDevice, "modprobe vhost_vsock", "serial"}},
		{requested: "vsock", open: func() error { return fs.ErrPermission }, errWant: []string{VhostVsockDevice, "permission denied"}},
		{requested: "ipc", open: mustNotOpen, errWant: []string{`unknown agent transport "ipc"`}},
	}
	for _, tt := range tests {
		got, err := chooseTransport(tt.requested, tt.open)
		if tt.errWant == nil {
			if err != nil || got != tt.want {
				t.Errorf("chooseTransport(%q) = %q, %v; want %q", tt.requested, got, err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("chooseTransport(%q) = %q, want an error", tt.requested, got)
			continue
		}
		for _, w := range tt.errWant {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("chooseTransport(%q) error %q does not mention %q", tt.requested, err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("chooseTransport(%q) error is not one line: %q", tt.requested, err)
		}
	}
	// The device error is kept for callers.
	if _, err := chooseTransport("vsock", noDevice); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("vsock without the device: %v does not wrap fs.ErrNotExist", err)
	}
}

// TestCheckTransportThisHost: on a host without /dev/vhost-vsock (as the
// development machine), asking for vsock fails at once with a clear error.
func TestCheckTransportThisHost(t *testing.T) {
	if got, err := CheckTransport("auto"); err != nil || got != TransportSerial {
		t.Errorf("CheckTransport(auto) = %q, %v", got, err)
	}
	err := openVhostVsock()
	got, cerr := CheckTransport("vsock")
	if err == nil {
		if cerr != nil || got != TransportVsock {
			t.Errorf("%s opens, but CheckTransport(vsock) = %q, %v", VhostVsockDevice, got, cerr)
		}
		return
	}
	t.Logf("%s: %v", VhostVsockDevice, err)
	if cerr == nil || !strings.Contains(cerr.Error(), VhostVsockDevice) {
		t.Errorf("%s does not open (%v), but CheckTransport(vsock) = %q, %v", VhostVsockDevice, err, got, cerr)
	}
	if _, serr := os.Stat(VhostVsockDevice); errors.Is(serr, fs.ErrNotExist) && !errors.Is(cerr, fs.ErrNotExist) {
		t.Errorf("missing device: %v does not wrap fs.ErrNotExist", cerr)
	}
}

func TestVsockArgs(t *testing.T) {
	got := vsockArgs(42)
	want := []string{"-device", "vhost-vsock-pci,guest-cid=42"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("vsockArgs(42) = %q, want %q", got, want)
	}
	if got := vsockArgs(1<<31 + 2); got[1] != "vhost-vsock-pci,guest-cid=2147483650" {
		t.Errorf("vsockArgs(2^31+2) = %q", got)
	}
	// The agent finds its transport on the kernel command line.
	if vsockCmdline != "coffer.transport=vsock" {
		t.Errorf("vsockCmdline = %q: the agent parses coffer.transport=vsock", vsockCmdline)
	}
}

func TestNewGuestCID(t *testing.T) {
	seen := map[uint32]bool{}
	for range 1000 {
		cid := newGuestCID()
		// 0-2 are reserved (hypervisor, local, host); QEMU takes 32 bits
		// but the top ones are kept free.
		if cid < 3 || cid >= 3+1<<31 {
			t.Fatalf("newGuestCID() = %d, outside [3, 3+2^31)", cid)
		}
		seen[cid] = true
	}
	if len(seen) < 990 {
		t.Errorf("1000 CIDs gave only %d distinct values", len(seen))
	}
}

// TestDialVsockGivesUp: with no guest behind the CID (on this machine no
// vhost-vsock at all) dialVsock ends with an error naming vsock when its
// context ends, even while a connect blocks, and at once when the VM exits.
func TestDialVsockGivesUp(t *testing.T) {
	const cid = 0x7fff_fff0 // nobody's
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, err := dialVsock(ctx, cid, make(chan struct{}))
	if err == nil {
		c.Close()
		t.Fatalf("dialVsock to CID %d connected", cid)
	}
	took := time.Since(start)
	t.Logf("dialVsock after %s: %v", took.Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), "vsock") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q: want one line naming vsock", err)
	}
	if took > 1500*time.Millisecond {
		t.Errorf("dialVsock took %s with a 300ms context", took)
	}

	done := make(chan struct{})
	close(done)
	start = time.Now()
	if _, err := dialVsock(context.Background(), cid, done); err == nil {
		t.Fatal("dialVsock connected")
	} else if !strings.Contains(err.Error(), "vsock") {
		t.Errorf("VM gone: %v", err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("dialVsock took %s after the VM exited", took)
	}
}

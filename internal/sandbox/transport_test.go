package sandbox

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	refused := func(ctx context.Context, _, _ uint32) (net.Conn, error) { return nil, unix.ECONNREFUSED }
	blocking := func(ctx context.Context, _, _ uint32) (net.Conn, error) {
		<-ctx.Done() // a connect that hangs while the guest is not up
		return nil, ctx.Err()
	}
	noVsock := func(ctx context.Context, _, _ uint32) (net.Conn, error) { return nil, unix.EAFNOSUPPORT }

	// The guest never listens: retried until the context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := dialVsockWith(ctx, cid, make(chan struct{}), refused)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "\n") {
		t.Errorf("refused until the deadline: %v, want one line with the deadline and the last error", err)
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 1500*time.Millisecond {
		t.Errorf("gave up after %s with a 200ms context", took)
	}

	// The VM exits in the middle of a hanging connect.
	done := make(chan struct{})
	time.AfterFunc(100*time.Millisecond, func() { close(done) })
	start = time.Now()
	_, err = dialVsockWith(context.Background(), cid, done, blocking)
	if err == nil || !strings.Contains(err.Error(), "the VM exited before the agent answered") {
		t.Errorf("VM exit during connect: %v", err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("gave up %s after the start, the VM exited after 100ms", took)
	}

	// No vsock in the host kernel: at once, saying so.
	_, err = dialVsockWith(context.Background(), cid, make(chan struct{}), noVsock)
	if err == nil || !strings.Contains(err.Error(), "no vsock support") {
		t.Errorf("no vsock: %v", err)
	}

	// The real dial on this host: an error naming vsock, within the deadline.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if c, err := dialVsock(ctx2, cid, make(chan struct{})); err == nil {
		c.Close()
		t.Fatalf("dialVsock to CID %d connected", cid)
	} else if !strings.Contains(err.Error(), "vsock") {
		t.Errorf("real dial: %v", err)
	}
}

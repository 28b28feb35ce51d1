package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// Agent transports.
const (
	TransportAuto   = ""
	TransportSerial = "serial"
	TransportVsock  = "vsock"
)

// agentVsockPort is the guest agent's vsock port (agent.VsockPort; the
// host side must not import the agent package).
const agentVsockPort = 1024

// VhostVsockDevice is the host device QEMU needs for vsock.
const VhostVsockDevice = "/dev/vhost-vsock"

// vsockCmdline tells the agent to listen on vsock instead of the serial
// port (it parses coffer.transport from the kernel command line).
const vsockCmdline = "coffer.transport=vsock"

// ParseTransport normalises a transport name from a flag or a config
// file: "" and "auto" give TransportAuto.
func ParseTransport(s string) (string, error) {
	switch t := strings.ToLower(strings.TrimSpace(s)); t {
	case "", "auto":
		return TransportAuto, nil
	case TransportSerial, TransportVsock:
		return t, nil
	}
	return "", fmt.Errorf("unknown agent transport %q: use auto, serial or vsock", s)
}

// CheckTransport resolves a requested transport as Start does on this
// host, so that callers can refuse a bad one before they build anything:
// an unknown name, or vsock on a host whose /dev/vhost-vsock is missing
// or cannot be opened, is an error.
func CheckTransport(requested string) (string, error) {
	return chooseTransport(requested, openVhostVsock)
}

// chooseTransport resolves TransportAuto to virtio-serial. vsock is opt-in:
// any host process can connect to a guest's vsock port (the CID is on
// QEMU's command line), and the agent does not yet authenticate its peer,
// while the serial port's socket lives in a 0700 directory. openDevice
// checks that QEMU will be able to open /dev/vhost-vsock.
func chooseTransport(requested string, openDevice func() error) (string, error) {
	t, err := ParseTransport(requested)
	if err != nil {
		return "", err
	}
	if t != TransportVsock {
		return TransportSerial, nil
	}
	if err := openDevice(); err != nil {
		return "", fmt.Errorf("agent transport vsock needs %s (%w): load the vhost_vsock module (`modprobe vhost_vsock`) or use the serial transport", VhostVsockDevice, err)
	}
	return TransportVsock, nil
}

// openVhostVsock checks that /dev/vhost-vsock opens read-write, as QEMU
// opens it.
func openVhostVsock() error {
	f, err := os.OpenFile(VhostVsockDevice, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// newGuestCID picks a context id for a VM: random, above the reserved
// 0-2; a clash makes QEMU fail to start with a clear error.
func newGuestCID() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return 3 + binary.LittleEndian.Uint32(b[:])%(1<<31)
}

func vsockArgs(cid uint32) []string {
	return []string{"-device", "vhost-vsock-pci,guest-cid=" + strconv.FormatUint(uint64(cid), 10)}
}

// dialVsock connects to the agent's vsock port, retrying while the guest
// boots (the port refuses connections until the agent listens). It gives
// up when ctx ends or done (the VM's exit) is closed, even in the middle
// of a connect, which can block for seconds while the guest is not up.
func dialVsock(ctx context.Context, cid uint32, done <-chan struct{}) (net.Conn, error) {
	return dialVsockWith(ctx, cid, done, func(ctx context.Context, cid, port uint32) (net.Conn, error) {
		return vsock.DialContext(ctx, cid, port, nil)
	})
}

// dialVsockWith is dialVsock with the connect call given (tests).
func dialVsockWith(ctx context.Context, cid uint32, done <-chan struct{}, dial func(ctx context.Context, cid, port uint32) (net.Conn, error)) (net.Conn, error) {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-dctx.Done():
		}
	}()
	vmExited := errors.New("the VM exited before the agent answered on vsock")
	for {
		c, err := dial(dctx, cid, agentVsockPort)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, unix.EAFNOSUPPORT) {
			return nil, fmt.Errorf("connect to the agent on vsock %d:%d: %w (this host kernel has no vsock support: `modprobe vhost_vsock`, or use the serial transport)", cid, agentVsockPort, err)
		}
		select {
		case <-done:
			return nil, vmExited
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to the agent on vsock %d:%d: %w (last error: %v)", cid, agentVsockPort, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

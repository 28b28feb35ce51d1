package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/mdlayher/vsock"
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

// chooseTransport resolves TransportAuto to virtio-serial. vsock is opt-in:
// any host process can connect to a guest's vsock port (the CID is on
// QEMU's command line), and the agent does not yet authenticate its peer,
// while the serial port's socket lives in a 0700 directory.
func chooseTransport(requested string, deviceOK func() bool) (string, error) {
	switch requested {
	case TransportSerial, TransportAuto:
		return TransportSerial, nil
	case TransportVsock:
		if !deviceOK() {
			return "", fmt.Errorf("agent transport vsock needs %s, which this host lacks (or cannot open): use serial", VhostVsockDevice)
		}
		return requested, nil
	}
	return "", fmt.Errorf("unknown agent transport %q: use serial, vsock or auto", requested)
}

func vhostVsockUsable() bool {
	f, err := os.OpenFile(VhostVsockDevice, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
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
// boots (the port refuses connections until the agent listens).
func dialVsock(ctx context.Context, cid uint32, done <-chan struct{}) (net.Conn, error) {
	for {
		c, err := vsock.Dial(cid, agentVsockPort, nil)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to the agent on vsock %d:%d: %w (last error: %v)", cid, agentVsockPort, ctx.Err(), err)
		case <-done:
			return nil, fmt.Errorf("the VM exited before the agent answered on vsock")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

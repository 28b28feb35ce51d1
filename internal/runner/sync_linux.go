package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// InitArg is the first argument that turns the agent binary into the
// container init / exec stage.
const InitArg = "coffer-init"

// maxSyncMsg bounds one message on the sync socket (an OCI spec).
const maxSyncMsg = 4 << 20

// initConfig is what the agent sends to the init / exec stage.
type initConfig struct {
	// Mode is "init" (a new container) or "exec" (join a running one).
	Mode    string         `json:"mode"`
	Spec    *specs.Spec    `json:"spec,omitempty"`
	Process *specs.Process `json:"process,omitempty"` // exec mode
	Rootfs  string         `json:"rootfs,omitempty"`
}

// syncMsg travels from the stage back to the agent, and "start" the other way.
type syncMsg struct {
	Type  string `json:"type"` // ready | error | console | start
	Error string `json:"error,omitempty"`
	// Marks (with "ready") are CLOCK_MONOTONIC readings of the stage: its
	// main, config received, rootfs prepared, ready.
	Marks []int64 `json:"marks,omitempty"`
}

// monoNow reads CLOCK_MONOTONIC, which every process in the guest shares.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// syncConn wraps one end of the SOCK_SEQPACKET pair.
type syncConn struct {
	c *net.UnixConn
}

// newSyncPair returns the agent's end and the child's end (as an *os.File
// to hand over as fd 3).
func newSyncPair() (*syncConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create sync socket pair: %w", err)
	}
	// A SOCK_SEQPACKET message must fit the send buffer: size it for the
	// largest config we accept.
	for _, fd := range fds {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, maxSyncMsg)
	}
	parent := os.NewFile(uintptr(fds[0]), "sync-parent")
	child := os.NewFile(uintptr(fds[1]), "sync-child")
	sc, err := fileSyncConn(parent)
	if err != nil {
		child.Close()
		return nil, nil, err
	}
	return sc, child, nil
}

func fileSyncConn(f *os.File) (*syncConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("sync socket is %T, not a unix socket", c)
	}
	return &syncConn{c: uc}, nil
}

func (s *syncConn) Close() error { return s.c.Close() }

func (s *syncConn) send(v any, fd int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.sendRaw(b, fd)
}

// sendRaw sends one message as is, with fd (if >= 0) as SCM_RIGHTS.
func (s *syncConn) sendRaw(b []byte, fd int) error {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, err := s.c.WriteMsgUnix(b, oob, nil)
	return err
}

// recv reads one message and, if one came with it, a passed fd. io.EOF
// means the peer closed its end (for the stage: it exec'd successfully).
func (s *syncConn) recv(ctx context.Context, v any) (*os.File, error) {
	// Only ctx interrupts the read: the callback sets an expired deadline,
	// and it must have finished (or never run) before we return, so that
	// it cannot hit the next recv on this socket.
	_ = s.c.SetReadDeadline(time.Time{})
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = s.c.SetReadDeadline(time.Now())
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
			_ = s.c.SetReadDeadline(time.Time{})
		}
	}()
	size, err := s.nextSize()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	buf := make([]byte, max(size, 1))
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := s.c.ReadMsgUnix(buf, oob)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if n == 0 {
		return nil, io.EOF
	}
	var f *os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil && len(msgs) > 0 {
			if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) > 0 {
				// Non-blocking, so the agent's reads and writes on the pty
				// master use the poller and honour deadlines.
				_ = unix.SetNonblock(fds[0], true)
				f = os.NewFile(uintptr(fds[0]), "console")
				for _, extra := range fds[1:] {
					unix.Close(extra)
				}
			}
		}
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("bad sync message: %w", err)
	}
	return f, nil
}

// errStage is an error reported by the init / exec stage itself.
type errStage struct{ msg string }

func (e *errStage) Error() string { return e.msg }

// IsStageError reports whether err came from inside the container setup
// (bad command, bad mount, ...) rather than from the agent.
func IsStageError(err error) bool {
	var e *errStage
	return errors.As(err, &e)
}

// nextSize waits for the next message and returns its length without
// consuming it (MSG_PEEK|MSG_TRUNC), so recv allocates what the message
// needs rather than maxSyncMsg every time. It honours the read deadline.
func (s *syncConn) nextSize() (int, error) {
	rc, err := s.c.SyscallConn()
	if err != nil {
		return 0, err
	}
	size := 0
	var opErr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, _, _, e := unix.Recvmsg(int(fd), nil, nil, unix.MSG_PEEK|unix.MSG_TRUNC|unix.MSG_DONTWAIT)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false
		}
		size, opErr = n, e
		return true
	})
	if err != nil {
		return 0, err
	}
	if opErr != nil {
		return 0, opErr
	}
	if size > maxSyncMsg {
		return 0, fmt.Errorf("sync message of %d bytes is over the %d byte limit", size, maxSyncMsg)
	}
	return size, nil
}

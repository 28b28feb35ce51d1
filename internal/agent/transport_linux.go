package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// Transport names how the host reaches the agent.
type Transport interface {
	// Listen returns a listener for agent API connections.
	Listen(ctx context.Context) (net.Listener, error)
}

// VirtioSerial serves on the virtio-serial port with the given name
// (e.g. "coffer.agent"). A port carries one host connection at a time;
// when the host side closes, the agent sees EOF and waits for the next.
type VirtioSerial struct {
	Name string
}

// Vsock serves on a vsock port (any CID).
type Vsock struct {
	Port uint32
}

// Listen implements Transport.
func (v Vsock) Listen(ctx context.Context) (net.Listener, error) {
	l, err := vsock.ListenContextID(unix.VMADDR_CID_ANY, v.Port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock port %d: %w", v.Port, err)
	}
	return l, nil
}

// FindPort returns the /dev path of the named virtio-serial port, waiting
// up to the context's deadline for the device to appear.
func FindPort(ctx context.Context, name string) (string, error) {
	for {
		matches, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err == nil && strings.TrimSpace(string(b)) == name {
				dev := "/dev/" + filepath.Base(filepath.Dir(m))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("virtio-serial port %q not found (is the virtio_console module loaded and the port configured on the host?): %w", name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Listen implements Transport.
func (v VirtioSerial) Listen(ctx context.Context) (net.Listener, error) {
	dev, err := FindPort(ctx, v.Name)
	if err != nil {
		return nil, err
	}
	return &serialListener{dev: dev, free: make(chan struct{}, 1), closed: make(chan struct{})}, nil
}

// serialListener hands out the port as a connection whenever the host side
// is connected and the previous connection has been closed.
type serialListener struct {
	dev       string
	free      chan struct{} // holds a token while a conn is open
	closed    chan struct{}
	closeOnce sync.Once
}

var errListenerClosed = errors.New("listener closed")

func (l *serialListener) Accept() (net.Conn, error) {
	select {
	case l.free <- struct{}{}:
	case <-l.closed:
		return nil, errListenerClosed
	}
	for {
		c, err := l.open()
		if err == nil {
			return c, nil
		}
		select {
		case <-l.closed:
			<-l.free
			return nil, errListenerClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// open opens the port once the host has connected to it.
func (l *serialListener) open() (net.Conn, error) {
	fd, err := unix.Open(l.dev, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}
	if _, err := unix.Poll(pfd, 0); err != nil || pfd[0].Revents&unix.POLLHUP != 0 {
		unix.Close(fd)
		return nil, errors.New("host not connected")
	}
	f := os.NewFile(uintptr(fd), l.dev)
	return &serialConn{File: f, release: func() { <-l.free }}, nil
}

func (l *serialListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *serialListener) Addr() net.Addr { return serialAddr(l.dev) }

type serialAddr string

func (a serialAddr) Network() string { return "virtio-serial" }
func (a serialAddr) String() string  { return string(a) }

// serialConn adapts the port's file to net.Conn.
type serialConn struct {
	*os.File
	release   func()
	closeOnce sync.Once
}

func (c *serialConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.File.Close()
		c.release()
	})
	return err
}

func (c *serialConn) LocalAddr() net.Addr  { return serialAddr(c.Name()) }
func (c *serialConn) RemoteAddr() net.Addr { return serialAddr("host") }

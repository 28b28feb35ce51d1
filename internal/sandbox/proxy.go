package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/containerd/ttrpc"
)

// ListenProxy creates the pod's proxy socket at path (owner only). It is
// made before the container starts, so that `coffer kill` works as soon as
// the container can be seen running.
func ListenProxy(path string) (net.Listener, error) {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// ServeProxy serves the agent API on l (from ListenProxy), forwarding
// every call to agent, until ctx ends; it closes l and removes its socket.
// This is how `coffer exec` and `coffer kill` reach a pod owned by another
// process: the virtio-serial channel carries one connection, owned by the
// pod's owner.
//
// Stopping does not use ttrpc's Server.Shutdown: a connection whose
// request arrived while it was idle can be closed by Shutdown before the
// reply is written (its state is only refreshed after the next event), and
// a `coffer kill` races the pod's exit exactly so. Instead the listener is
// closed and the clients' connections are left to drain: every proxy
// client closes its connection once it has its reply. Connections still
// open after drainTimeout are closed.
func ServeProxy(ctx context.Context, l net.Listener, agent api.AgentService) error {
	path := l.Addr().String()
	tl := &trackingListener{Listener: l, closed: make(chan struct{}, 1)}
	s, err := ttrpc.NewServer()
	if err != nil {
		l.Close()
		return err
	}
	api.RegisterAgentService(s, agent)
	served := make(chan error, 1)
	// Not ctx: ttrpc ties every connection to the Serve context.
	go func() { served <- s.Serve(context.Background(), tl) }()
	select {
	case err := <-served:
		_ = os.Remove(path)
		return err
	case <-ctx.Done():
	}
	l.Close()
	tl.drain(proxyDrainTimeout)
	_ = s.Close()
	<-served
	_ = os.Remove(path)
	return nil
}

// proxyDrainTimeout bounds how long a stopping proxy waits for its clients
// to hang up.
const proxyDrainTimeout = 2 * time.Second

// trackingListener counts the connections it has accepted that are still
// open, so that a stopping proxy can wait for them.
type trackingListener struct {
	net.Listener
	mu     sync.Mutex
	open   int
	closed chan struct{} // a token each time a connection closes
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.open++
	l.mu.Unlock()
	return &trackedConn{Conn: c, l: l}, nil
}

func (l *trackingListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// drain waits until no accepted connection is open, or until timeout.
func (l *trackingListener) drain(timeout time.Duration) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for l.count() > 0 {
		select {
		case <-l.closed:
		case <-deadline.C:
			return
		}
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
		select {
		case c.l.closed <- struct{}{}:
		default:
		}
	})
	return err
}

// DialProxy connects to a pod's agent proxy socket.
func DialProxy(ctx context.Context, podDir string) (api.AgentService, func() error, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", ProxySocket(podDir))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to the pod (is it running?): %w", err)
	}
	c := ttrpc.NewClient(conn)
	return api.NewAgentClient(c), c.Close, nil
}

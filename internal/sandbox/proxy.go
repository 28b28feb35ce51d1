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
func ServeProxy(ctx context.Context, l net.Listener, agent api.AgentService) error {
	path := l.Addr().String()
	// Calls in flight are counted so that stopping waits for their replies:
	// a `coffer kill` races the pod's exit, and ttrpc's own Shutdown can
	// close a connection whose request is still being handled.
	var inflight sync.WaitGroup
	s, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(
		func(ctx context.Context, u ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, m ttrpc.Method) (interface{}, error) {
			inflight.Add(1)
			defer inflight.Done()
			return m(ctx, u)
		}))
	if err != nil {
		l.Close()
		return err
	}
	api.RegisterAgentService(s, agent)
	served := make(chan error, 1)
	// Not ctx: ttrpc ties every connection to the Serve context.
	go func() { served <- s.Serve(context.Background(), l) }()
	select {
	case err := <-served:
		_ = os.Remove(path)
		return err
	case <-ctx.Done():
	}
	l.Close()
	idle := make(chan struct{})
	go func() { inflight.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-time.After(2 * time.Second):
	}
	// A handler that has returned may not have had its reply written
	// yet: Shutdown closes each connection once its replies are sent.
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if err := s.Shutdown(sctx); err != nil {
		_ = s.Close()
	}
	cancel()
	<-served
	_ = os.Remove(path)
	return nil
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

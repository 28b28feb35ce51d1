package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/containerd/ttrpc"
)

// ServeProxy serves the agent API on a unix socket at path, forwarding
// every call to agent, until ctx ends. This is how `coffer exec` and
// `coffer kill` reach a pod owned by another process: the virtio-serial
// channel carries one connection, owned by the pod's owner.
func ServeProxy(ctx context.Context, path string, agent api.AgentService) error {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return err
	}
	s, err := ttrpc.NewServer()
	if err != nil {
		l.Close()
		return err
	}
	api.RegisterAgentService(s, agent)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
		_ = s.Close()
	}()
	err = s.Serve(ctx, l)
	_ = os.Remove(path)
	if errors.Is(err, ttrpc.ErrServerClosed) {
		return nil
	}
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

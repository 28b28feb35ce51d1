package sandbox

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
)

// signalAgent answers SignalProcess after telling the test the call has
// arrived and the test has let it go on: the proxy is stopped in between.
type signalAgent struct {
	api.AgentService
	arrived chan struct{}
	release chan struct{}
}

func (a *signalAgent) SignalProcess(ctx context.Context, _ *api.SignalProcessRequest) (*api.Empty, error) {
	a.arrived <- struct{}{}
	<-a.release
	return &api.Empty{}, nil
}

// TestProxyStopKeepsInFlightReply is the `coffer kill` race: the pod ends
// (the proxy is stopped) while the kill's call is in flight, and the
// caller must still get its reply, not "ttrpc: closed". ttrpc's Shutdown
// dropped such replies about half of the time, so the test repeats.
func TestProxyStopKeepsInFlightReply(t *testing.T) {
	for i := range 20 {
		path := ProxySocket(t.TempDir())
		l, err := ListenProxy(path)
		if err != nil {
			t.Fatal(err)
		}
		agent := &signalAgent{arrived: make(chan struct{}), release: make(chan struct{})}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ServeProxy(ctx, l, agent) }()

		client, closeClient, err := DialProxy(context.Background(), filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		reply := make(chan error, 1)
		go func() {
			_, err := client.SignalProcess(context.Background(), &api.SignalProcessRequest{ContainerId: ContainerID, Signal: 9})
			reply <- err
		}()
		<-agent.arrived
		stop()
		time.Sleep(10 * time.Millisecond) // the proxy is now draining
		close(agent.release)
		if err := <-reply; err != nil {
			t.Fatalf("round %d: in-flight call failed when the proxy stopped: %v", i, err)
		}
		closeClient()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("ServeProxy: %v", err)
			}
		case <-time.After(time.Second):
			t.Fatal("the proxy did not stop once its client hung up")
		}
	}
}

// TestProxyStopClosesIdleClients: a client that never hangs up does not
// keep a stopped proxy alive beyond the drain timeout.
func TestProxyStopClosesIdleClients(t *testing.T) {
	path := ProxySocket(t.TempDir())
	l, err := ListenProxy(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	agent := &signalAgent{arrived: make(chan struct{}, 1), release: make(chan struct{})}
	close(agent.release)
	go func() { done <- ServeProxy(ctx, l, agent) }()
	client, closeClient, err := DialProxy(context.Background(), filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	defer closeClient()
	// One answered call: the proxy has accepted (and counts) the
	// connection before it is stopped.
	if _, err := client.SignalProcess(context.Background(), &api.SignalProcessRequest{ContainerId: ContainerID}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	stop()
	select {
	case <-done:
	case <-time.After(proxyDrainTimeout + 2*time.Second):
		t.Fatal("the proxy did not stop")
	}
	if took := time.Since(t0); took < proxyDrainTimeout*9/10 {
		t.Errorf("stopped after %s: a connected client was not given the drain time", took)
	}
	if _, _, err := DialProxy(context.Background(), filepath.Dir(path)); err == nil {
		t.Fatal("the proxy socket still accepts connections after stop")
	}
}

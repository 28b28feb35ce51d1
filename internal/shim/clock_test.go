package shim

import (
	"context"
	"errors"
	"testing"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
)

// skewedAgent answers Check with a clock skew ahead of the host's.
type skewedAgent struct {
	skew  time.Duration
	delay time.Duration
	err   error
}

func (a skewedAgent) Check(context.Context, *api.CheckRequest) (*api.CheckResponse, error) {
	if a.err != nil {
		return nil, a.err
	}
	time.Sleep(a.delay)
	now := time.Now().Add(a.skew)
	time.Sleep(a.delay)
	return &api.CheckResponse{TimeUnixNano: now.UnixNano()}, nil
}

func TestGuestClockOffset(t *testing.T) {
	for _, skew := range []time.Duration{-900 * time.Millisecond, 0, 3 * time.Second} {
		off, ok := guestClockOffset(context.Background(), skewedAgent{skew: skew, delay: 2 * time.Millisecond})
		if !ok || (off-skew).Abs() > 10*time.Millisecond {
			t.Errorf("skew %s: offset %s (ok %v), want within 10ms", skew, off, ok)
		}
	}
	if _, ok := guestClockOffset(context.Background(), skewedAgent{err: errors.New("down")}); ok {
		t.Error("an agent that does not answer gave an offset")
	}
	if _, ok := guestClockOffset(context.Background(), oldAgent{}); ok {
		t.Error("an agent without a clock gave an offset")
	}
}

type oldAgent struct{}

func (oldAgent) Check(context.Context, *api.CheckRequest) (*api.CheckResponse, error) {
	return &api.CheckResponse{AgentVersion: "old"}, nil
}

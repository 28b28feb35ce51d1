package sandbox

import (
	"google.golang.org/grpc/status"
)

// agentErr is an agent API error reduced to its message (the gRPC code
// prefix means nothing to a user).
type agentErr struct {
	msg  string
	orig error
}

func (e *agentErr) Error() string { return e.msg }
func (e *agentErr) Unwrap() error { return e.orig }

// AgentError strips the RPC status decoration from an agent error.
func AgentError(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return &agentErr{msg: s.Message(), orig: err}
	}
	return err
}

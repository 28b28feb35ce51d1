package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"

	api "github.com/coffer-project/coffer/api/agent"
)

// readChunk is how much one ReadStdout/ReadStderr call asks for.
const readChunk = 64 << 10

// CopyOutput streams one output of a process (stdout, or stderr with
// stderr=true) to w as the process produces it, until the stream ends.
func CopyOutput(ctx context.Context, agent api.AgentService, cid, execID string, stderr bool, w io.Writer) error {
	req := &api.ReadStreamRequest{ContainerId: cid, ExecId: execID, Len: readChunk}
	for {
		var (
			r   *api.ReadStreamResponse
			err error
		)
		if stderr {
			r, err = agent.ReadStderr(ctx, req)
		} else {
			r, err = agent.ReadStdout(ctx, req)
		}
		if err != nil {
			return fmt.Errorf("read output of %s: %w", procName(cid, execID), err)
		}
		if len(r.Data) > 0 {
			if _, err := w.Write(r.Data); err != nil {
				return err
			}
		}
		if r.Eof {
			return nil
		}
	}
}

// CopyInput sends r to the process's stdin until r ends, then closes the
// process's stdin.
func CopyInput(ctx context.Context, agent api.AgentService, cid, execID string, r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			data := buf[:n]
			for len(data) > 0 {
				resp, err := agent.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: cid, ExecId: execID, Data: data})
				if err != nil {
					return fmt.Errorf("write stdin of %s: %w", procName(cid, execID), err)
				}
				if resp.Len == 0 || int(resp.Len) > len(data) {
					return fmt.Errorf("write stdin of %s: the agent reported writing %d of %d bytes", procName(cid, execID), resp.Len, len(data))
				}
				data = data[resp.Len:]
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				return rerr
			}
			_, err := agent.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: cid, ExecId: execID})
			return err
		}
	}
}

func procName(cid, execID string) string {
	if execID == "" {
		return "container " + cid
	}
	return "exec " + execID + " in container " + cid
}

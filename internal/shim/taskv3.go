package shim

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/errdefs"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"google.golang.org/protobuf/proto"
)

// taskV3 serves containerd 2.x's task API v3 (service containerd.task.v3.Task)
// with the v2 implementation. The v3 messages are the v2 messages under
// another package name, field for field (same numbers and types), so each
// request and response is converted by re-encoding it.
type taskV3 struct{ s *Service }

var _ taskv3.TTRPCTaskService = taskV3{}

// viaV2 converts req to the v2 request sreq, calls the v2 method and
// converts its answer to the v3 response resp.
func viaV2[SReq, SResp, Resp proto.Message](ctx context.Context, req proto.Message, sreq SReq, call func(context.Context, SReq) (SResp, error), resp Resp) (Resp, error) {
	var zero Resp
	if err := reencode(req, sreq); err != nil {
		return zero, grpcErr(fmt.Errorf("convert a task v3 request: %w: %w", err, errdefs.ErrInvalidArgument))
	}
	out, err := call(ctx, sreq)
	if err != nil {
		return zero, err
	}
	if err := reencode(out, resp); err != nil {
		return zero, grpcErr(fmt.Errorf("convert a task v2 response to v3: %w", err))
	}
	return resp, nil
}

func reencode(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, to)
}

func (t taskV3) State(ctx context.Context, r *taskv3.StateRequest) (*taskv3.StateResponse, error) {
	return viaV2(ctx, r, new(taskAPI.StateRequest), t.s.State, new(taskv3.StateResponse))
}

func (t taskV3) Create(ctx context.Context, r *taskv3.CreateTaskRequest) (*taskv3.CreateTaskResponse, error) {
	return viaV2(ctx, r, new(taskAPI.CreateTaskRequest), t.s.Create, new(taskv3.CreateTaskResponse))
}

func (t taskV3) Start(ctx context.Context, r *taskv3.StartRequest) (*taskv3.StartResponse, error) {
	return viaV2(ctx, r, new(taskAPI.StartRequest), t.s.Start, new(taskv3.StartResponse))
}

func (t taskV3) Delete(ctx context.Context, r *taskv3.DeleteRequest) (*taskv3.DeleteResponse, error) {
	return viaV2(ctx, r, new(taskAPI.DeleteRequest), t.s.Delete, new(taskv3.DeleteResponse))
}

func (t taskV3) Pids(ctx context.Context, r *taskv3.PidsRequest) (*taskv3.PidsResponse, error) {
	return viaV2(ctx, r, new(taskAPI.PidsRequest), t.s.Pids, new(taskv3.PidsResponse))
}

func (t taskV3) Pause(ctx context.Context, r *taskv3.PauseRequest) (*ptypes.Empty, error) {
	return viaV2(ctx, r, new(taskAPI.PauseRequest), t.s.Pause, new(ptypes.Empty))
}

func (t taskV3) Resume(ctx context.Context, r *taskv3.ResumeRequest) (*ptypes.Empty, error) {
	return viaV2(ctx, r, new(taskAPI.ResumeRequest), t.s.Resume, new(ptypes.Empty))
}

func (t taskV3) Checkpoint(ctx context.Context, r *taskv3.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return viaV2(ctx, r, new(taskAPI.CheckpointTaskRequest), t.s.Checkpoint, new(ptypes.Empty))
}

func (t taskV3) Kill(ctx context.Context, r *taskv3.KillRequest) (*ptypes.Empty, error) {
	return viaV2(ctx, r, new(taskAPI.KillRequest), t.s.Kill, new(ptypes.Empty))
}

func (t taskV3) Exec(ctx context.Context, r *taskv3.ExecProcessRequest) (*ptypes.Empty, error) {
	return viaV2(ctx, r, new(taskAPI.ExecProcessRequest), t.s.Exec, new(ptypes.Empty))
}

func (t taskV3) ResizePty(ctx context.Context, r *taskv3.ResizePtyRequest) (*ptypes.Empty, error) {
	return viaV2(ctx, r, new(taskAPI.ResizePtyRequest), t.s.ResizePty, new(ptypes.Empty))
}

func (t taskV3) CloseIO(ctx context.Context, r *taskv3.CloseIORequest) (*ptypes.Empty, error) {
	return viaV2(ctx, r, new(taskAPI.CloseIORequest), t.s.CloseIO, new(ptypes.Empty))
}

func (t taskV3) Update(ctx context.Context, r *taskv3.UpdateTaskRequest) (*ptypes.Empty, error) {
	return viaV2(ctx, r, new(taskAPI.UpdateTaskRequest), t.s.Update, new(ptypes.Empty))
}

func (t taskV3) Wait(ctx context.Context, r *taskv3.WaitRequest) (*taskv3.WaitResponse, error) {
	return viaV2(ctx, r, new(taskAPI.WaitRequest), t.s.Wait, new(taskv3.WaitResponse))
}

func (t taskV3) Stats(ctx context.Context, r *taskv3.StatsRequest) (*taskv3.StatsResponse, error) {
	return viaV2(ctx, r, new(taskAPI.StatsRequest), t.s.Stats, new(taskv3.StatsResponse))
}

func (t taskV3) Connect(ctx context.Context, r *taskv3.ConnectRequest) (*taskv3.ConnectResponse, error) {
	return viaV2(ctx, r, new(taskAPI.ConnectRequest), t.s.Connect, new(taskv3.ConnectResponse))
}

func (t taskV3) Shutdown(ctx context.Context, r *taskv3.ShutdownRequest) (*ptypes.Empty, error) {
	return viaV2(ctx, r, new(taskAPI.ShutdownRequest), t.s.Shutdown, new(ptypes.Empty))
}

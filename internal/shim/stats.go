package shim

import (
	"context"
	"fmt"
	"math"

	api "github.com/coffer-project/coffer/api/agent"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
)

// Stats returns the container's cgroup v2 metrics, read in the guest, as
// containerd's io.containerd.cgroups.v2.Metrics (what `ctr task metrics`
// prints).
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	_, sb, err := s.lookupProcess(r.ID, "")
	if err != nil {
		return nil, grpcErr(err)
	}
	if sb == nil {
		return nil, grpcErr(fmt.Errorf("container %s has no running VM: %w", r.ID, errdefs.ErrFailedPrecondition))
	}
	resp, err := sb.Agent.StatsContainer(ctx, &api.StatsContainerRequest{ContainerId: r.ID})
	if err != nil {
		return nil, grpcErr(fmt.Errorf("read the metrics of container %s: %w", r.ID, s.agentErr(r.ID, "", sb, err)))
	}
	a, err := protobuf.MarshalAnyToProto(metricsV2(resp.GetCgroup()))
	if err != nil {
		return nil, grpcErr(err)
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}

// metricsV2 converts the agent's cgroup stats; "max" limits (reported as
// 0 by the agent) become math.MaxUint64 like containerd's own.
func metricsV2(c *api.CgroupStats) *v2.Metrics {
	if c == nil {
		return &v2.Metrics{}
	}
	limit := func(v uint64) uint64 {
		if v == 0 {
			return math.MaxUint64
		}
		return v
	}
	ms := c.GetMemoryStat()
	return &v2.Metrics{
		Pids: &v2.PidsStat{Current: c.PidsCurrent, Limit: limit(c.PidsMax)},
		CPU: &v2.CPUStat{UsageUsec: c.CpuUsageUsec, UserUsec: c.CpuUserUsec, SystemUsec: c.CpuSystemUsec,
			NrThrottled: c.CpuNrThrottled, ThrottledUsec: c.CpuThrottledUsec},
		Memory: &v2.MemoryStat{
			Usage: c.MemoryCurrent, UsageLimit: limit(c.MemoryMax),
			Anon: ms["anon"], File: ms["file"], KernelStack: ms["kernel_stack"], Slab: ms["slab"], Sock: ms["sock"],
			Shmem: ms["shmem"], FileMapped: ms["file_mapped"], FileDirty: ms["file_dirty"], FileWriteback: ms["file_writeback"],
			AnonThp: ms["anon_thp"], InactiveAnon: ms["inactive_anon"], ActiveAnon: ms["active_anon"],
			InactiveFile: ms["inactive_file"], ActiveFile: ms["active_file"], Unevictable: ms["unevictable"],
			SlabReclaimable: ms["slab_reclaimable"], SlabUnreclaimable: ms["slab_unreclaimable"],
			Pgfault: ms["pgfault"], Pgmajfault: ms["pgmajfault"],
		},
		MemoryEvents: &v2.MemoryEvents{Oom: c.MemoryOom, OomKill: c.MemoryOomKill},
	}
}

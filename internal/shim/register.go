package shim

import (
	"context"
	"log/slog"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	cshim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
)

// Run is the shim binary's main: it serves `start`, `delete` and the
// long-lived task service the way containerd's shim package drives them.
func Run(ctx context.Context) {
	cfg := DefaultConfig()
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			logger, level := shimLogger(ic.Context, cfg)
			return NewService(ic.Context, cfg, pp.(cshim.Publisher), ss.(shutdown.Service), logger, level)
		},
	})
	// QEMU is waited for by its own exec.Cmd: the shim package's reaper
	// would steal its exit status.
	cshim.RunManager(ctx, NewManager(cfg, slog.Default()), func(c *cshim.Config) {
		c.NoReaper = true
		c.NoSubreaper = true
	})
}

// shimLogger logs to the shim's log FIFO, which containerd reads and
// merges into its own log. The level is log_level from the default
// config file (a pod's ConfigPath file may change it at Create), or
// debug when containerd runs with debug logging. It returns nil for the
// level when containerd asked for debug: then nothing lowers it.
func shimLogger(ctx context.Context, cfg Config) (*slog.Logger, *slog.LevelVar) {
	entry := log.G(ctx)
	level := new(slog.LevelVar)
	settable := level
	if entry.Logger.IsLevelEnabled(log.DebugLevel) {
		level.Set(slog.LevelDebug)
		settable = nil
	}
	l := slog.New(slog.NewTextHandler(entry.Logger.Out, &slog.HandlerOptions{Level: level})).With("runtime", RuntimeName)
	if settable != nil {
		if c, err := cfg.Resolve("", nil); err != nil {
			l.Warn("the Coffer config file is invalid: pods will fail to start until it is fixed", "err", err)
		} else {
			level.Set(c.LogLevel)
		}
	}
	return l, settable
}

// RegisterTTRPC serves the task API on server (the shim package calls it
// for each service plugin): v2 for containerd 1.6/1.7 and v3 for
// containerd 2.x; `start` told containerd which one to use.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	taskv3.RegisterTTRPCTaskService(server, taskV3{s})
	return nil
}

package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/runner"
	"github.com/coffer-project/coffer/internal/version"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Port names of the virtio-serial channels; the host configures the same.
const (
	AgentPortName = "coffer.agent"
	LogPortName   = "coffer.log"
	// VsockPort is the agent's port when the vsock transport is used.
	VsockPort = 1024
)

// bootConfig is read from the kernel command line (coffer.* parameters).
type bootConfig struct {
	logLevel  slog.Level
	transport string // "serial" (default) or "vsock"
	// goStage (coffer.stage=go) starts containers through the Go init
	// stage only, for comparison with the C stage.
	goStage bool
}

func parseCmdline(cmdline string) bootConfig {
	cfg := bootConfig{logLevel: slog.LevelInfo, transport: "serial"}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "coffer.log":
			_ = cfg.logLevel.UnmarshalText([]byte(v))
		case "coffer.transport":
			cfg.transport = v
		case "coffer.stage":
			cfg.goStage = v == "go"
		}
	}
	return cfg
}

// agentTransport is where the agent serves its API, and its name: vsock
// with coffer.transport=vsock, else (default, or any other value) the
// virtio-serial port.
func (c bootConfig) agentTransport() (Transport, string) {
	if c.transport == "vsock" {
		return Vsock{Port: VsockPort}, "vsock"
	}
	return VirtioSerial{Name: AgentPortName}, "serial"
}

// Main runs the agent as the guest's PID 1. It returns only on a fatal
// error; the caller powers off.
func Main() error {
	ctx := context.Background()
	pid1 := os.Getpid() == 1
	if pid1 {
		if err := leaveInitramfs(); err != nil {
			return err
		}
		if err := mountEarly(); err != nil {
			return err
		}
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	cfg := parseCmdline(string(cmdline))
	var out io.Writer = os.Stderr
	if con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		out = con
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: cfg.logLevel}))
	start := time.Now()
	tr, tname := cfg.agentTransport()
	var boot *bootWork
	if pid1 {
		want := func(name string) bool {
			return channelModules[name] || (tname == "vsock" && vsockModules[name])
		}
		if err := loadModules(log, want); err != nil {
			return err
		}
		boot = startBootWork(log, func(name string) bool { return podModules[name] })
	}
	// Forward our logs to the host over the log port when there is one.
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if dev, err := FindPort(pctx, LogPortName); err == nil {
		if f, err := os.OpenFile(dev, os.O_WRONLY, 0); err == nil {
			log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: cfg.logLevel}))
		}
	}
	cancel()
	log.Info("coffer-agent starting", "version", version.Version, "kernel", kernelRelease(), "uptime", strconv.FormatFloat(uptimeSeconds(), 'f', 3, 64), "modules", time.Since(start).String())

	reaper := runner.NewReaper()
	go reaper.Run(ctx)
	// Enabling the cgroup controllers takes 40-50 ms under TCG, much of
	// it waiting in the kernel: do it while the host connects; creating a
	// container waits for it.
	cgDone := make(chan struct{})
	var cgErr error
	go func() {
		defer close(cgDone)
		if _, cgErr = runner.SetupCgroupRoot(runner.CgroupMount); cgErr != nil {
			log.Error("set up the containers' cgroup", "err", cgErr)
		}
	}()
	r := &runner.Runner{CgroupParent: runner.CgroupParentDir(runner.CgroupMount), Reaper: reaper, Log: log, GoStage: cfg.goStage,
		CgroupReady: func(ctx context.Context) error {
			select {
			case <-cgDone:
				if cgErr != nil {
					return fmt.Errorf("the guest could not set up its cgroups at boot: %w", cgErr)
				}
				return nil
			case <-ctx.Done():
				return fmt.Errorf("waiting for the guest's cgroup setup: %w", ctx.Err())
			}
		}}
	srv := NewServer(log, r, func() {
		if err := powerOff(); err != nil {
			log.Error("power off", "err", err)
		}
	})
	if boot != nil {
		srv.storage.ready = boot.wait
	}
	if tname != cfg.transport {
		log.Warn("unknown coffer.transport on the kernel command line: serving on the serial port", "transport", cfg.transport)
	}
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	l, err := tr.Listen(lctx)
	lcancel()
	if err != nil {
		return err
	}
	ts, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(recoverInterceptor(log)))
	if err != nil {
		return fmt.Errorf("create ttrpc server: %w", err)
	}
	api.RegisterAgentService(ts, srv)
	log.Info("agent API ready", "transport", tname, "addr", l.Addr().String())
	return ts.Serve(ctx, l)
}

// Fatal reports a fatal agent error on the console and powers off; as
// PID 1 the agent must never just exit (the kernel would panic).
func Fatal(err error) {
	fmt.Fprintf(os.Stderr, "coffer-agent: fatal: %v\n", err)
	if con, e := os.OpenFile("/dev/console", os.O_WRONLY, 0); e == nil {
		fmt.Fprintf(con, "coffer-agent: fatal: %v\n", err)
		con.Close()
	}
	if os.Getpid() == 1 {
		_ = powerOff()
	}
	os.Exit(1)
}

// recoverInterceptor turns a panic in a request handler into an error for
// that request: as PID 1 the agent must not die (the kernel would panic
// and take every container with it).
func recoverInterceptor(log *slog.Logger) ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (resp interface{}, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("agent request panicked", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "agent bug in %s: %v", info.FullMethod, r)
			}
		}()
		return method(ctx, unmarshal)
	}
}

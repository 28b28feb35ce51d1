package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/runner"
	"github.com/coffer-project/coffer/internal/version"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxSpecBytes bounds an OCI spec or process from the host.
const maxSpecBytes = 1 << 20

// Server implements the agent API.
type Server struct {
	log      *slog.Logger
	runner   *runner.Runner
	storage  *storageMounts
	share    shareMount
	powerOff func()

	mu         sync.Mutex
	sandboxID  string
	containers map[string]*container
}

type container struct {
	id       string
	c        *runner.Container
	serial   string // rootfs disk
	procs    map[string]*process
	started  bool
	removing bool
	creating bool // CreateContainer has not finished yet
	// freezeMu serialises PauseContainer and ResumeContainer.
	freezeMu sync.Mutex
}

type process struct {
	execID  string
	p       *runner.Process
	stdin   *os.File // pipe write end, or the pty master
	stdout  *outStream
	stderr  *outStream
	started time.Time
	mu      sync.Mutex
	closed  bool      // stdin closed
	waited  bool      // an exit was reported to the host (guarded by Server.mu)
	waitAt  time.Time // when (guarded by Server.mu)
	// oomBase is the cgroup's oom_kill count when the process started: an
	// OOM kill is reported only if the count grew during its life.
	oomBase uint64
}

// prunable reports whether an exec can be forgotten to make room: its
// exit was reported and the host has read all its output, or the exit
// was reported long ago (a host that stopped reading). Server.mu held.
func (p *process) prunable(now time.Time) bool {
	if !p.waited {
		return false
	}
	return (p.stdout.drained() && p.stderr.drained()) || now.Sub(p.waitAt) > pruneAfter
}

// pruneAfter is how long an exec's unread output is kept after its exit
// was reported, when room is needed for new execs.
const pruneAfter = time.Minute

// discard drops the process's unread output.
func (p *process) discard() {
	if p.stdout != nil {
		p.stdout.discard()
	}
	if p.stderr != nil {
		p.stderr.discard()
	}
}

// stdinWriteTimeout bounds one WriteStdin without a request deadline.
const stdinWriteTimeout = 10 * time.Second

// maxExecs bounds the exec processes one container remembers; finished
// execs whose exit was already reported are forgotten first.
const maxExecs = 256

// NewServer returns an agent API server. powerOff is called (in its own
// goroutine) after DestroySandbox asks for it.
func NewServer(log *slog.Logger, r *runner.Runner, powerOff func()) *Server {
	return &Server{log: log, runner: r, storage: newStorageMounts(), powerOff: powerOff, containers: map[string]*container{}}
}

var _ api.AgentService = (*Server)(nil)

func (s *Server) Check(ctx context.Context, _ *api.CheckRequest) (*api.CheckResponse, error) {
	return &api.CheckResponse{AgentVersion: version.Version, KernelRelease: kernelRelease(), UptimeSeconds: uptimeSeconds(),
		TimeUnixNano: time.Now().UnixNano()}, nil
}

func (s *Server) CreateSandbox(ctx context.Context, req *api.CreateSandboxRequest) (*api.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sandboxID != "" {
		return nil, status.Errorf(codes.AlreadyExists, "sandbox %s already exists in this VM", s.sandboxID)
	}
	if err := checkID("sandbox id", req.SandboxId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.HostTimeUnixNano > 0 {
		setClock(s.log, req.HostTimeUnixNano)
	}
	if req.Hostname != "" {
		if err := unix.Sethostname([]byte(req.Hostname)); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "set guest hostname %q: %v", req.Hostname, err)
		}
	}
	keys := make([]string, 0, len(req.Sysctls))
	for k := range req.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := writeSysctl(k, req.Sysctls[k]); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	s.sandboxID = req.SandboxId
	s.log.Info("sandbox created", "id", req.SandboxId, "hostname", req.Hostname)
	return &api.Empty{}, nil
}

// setClock steps the guest's wall clock to the host's (Linux sets it from
// the emulated RTC at boot, to the whole second). A failure only leaves
// the clock as it was.
func setClock(log *slog.Logger, hostNanos int64) {
	ts := unix.NsecToTimespec(hostNanos)
	before := time.Now()
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		log.Warn("set the guest clock to the host's", "err", err)
		return
	}
	log.Info("guest clock set", "step", time.Unix(0, hostNanos).Sub(before))
}

func writeSysctl(k, v string) error {
	if k == "" || strings.Contains(k, "..") || strings.ContainsAny(k, "/\x00") {
		return fmt.Errorf("invalid sysctl name %q", k)
	}
	if err := os.WriteFile(filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/")), []byte(v), 0); err != nil {
		return fmt.Errorf("set guest sysctl %s=%s: %w", k, v, err)
	}
	return nil
}

func (s *Server) DestroySandbox(ctx context.Context, req *api.DestroySandboxRequest) (*api.Empty, error) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.containers))
	for id := range s.containers {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	powerOff := req.PowerOff && s.powerOff != nil
	for _, id := range ids {
		if powerOff {
			// The VM is going away: stop the processes, and leave
			// unmounting and cgroup removal to the power off (the
			// container's writable layer is guest memory; volumes are
			// flushed by the sync before it).
			if _, err := s.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: id, Signal: uint32(unix.SIGKILL), All: true}); err != nil {
				s.log.Warn("kill container during sandbox destroy", "id", id, "err", err)
			}
			continue
		}
		if _, err := s.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: id, Force: true}); err != nil {
			s.log.Warn("remove container during sandbox destroy", "id", id, "err", err)
		}
	}
	s.mu.Lock()
	id := s.sandboxID
	s.mu.Unlock()
	s.log.Info("sandbox destroyed", "id", id, "power_off", req.PowerOff)
	if powerOff {
		// Let the reply leave first: ttrpc writes it right after we
		// return. The host copes if it does not arrive (it then waits
		// for QEMU to exit, as it does after the reply).
		time.AfterFunc(powerOffDelay, s.powerOff)
	}
	return &api.Empty{}, nil
}

// powerOffDelay is how long DestroySandbox waits before powering off.
const powerOffDelay = 5 * time.Millisecond

func (s *Server) getContainer(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %q not found", id)
	}
	return c, nil
}

func (s *Server) getProcess(cid, execID string) (*container, *process, error) {
	c, err := s.getContainer(cid)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := c.procs[execID]
	if !ok {
		if execID == "" {
			return nil, nil, status.Errorf(codes.NotFound, "container %q has no init process", cid)
		}
		return nil, nil, status.Errorf(codes.NotFound, "exec %q not found in container %q", execID, cid)
	}
	return c, p, nil
}

// stageError maps errors from the container setup to API errors: problems
// with what the host asked for are InvalidArgument / FailedPrecondition.
func stageError(err error) error {
	if runner.IsStageError(err) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// newStdio creates the pipes for a non-terminal process.
func newStdio() (child runner.Stdio, stdin *os.File, stdout, stderr *os.File, closeChild func(), err error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return child, nil, nil, nil, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return child, nil, nil, nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return child, nil, nil, nil, nil, err
	}
	child = runner.Stdio{Stdin: inR, Stdout: outW, Stderr: errW}
	closeChild = func() { inR.Close(); outW.Close(); errW.Close() }
	return child, inW, outR, errR, closeChild, nil
}

// startProcess wires stdio for p. spawn creates the process given the
// child's stdio.
func startProcess(execID string, terminal bool, spawn func(runner.Stdio) (*runner.Process, error)) (*process, error) {
	if terminal {
		rp, err := spawn(runner.Stdio{})
		if err != nil {
			return nil, err
		}
		pr := &process{execID: execID, p: rp, stdin: rp.Console, stdout: newOutStream(), stderr: closedStream(), started: time.Now()}
		go pr.stdout.pump(rp.Console)
		return pr, nil
	}
	child, stdin, stdout, stderr, closeChild, err := newStdio()
	if err != nil {
		return nil, fmt.Errorf("create stdio pipes: %w", err)
	}
	rp, err := spawn(child)
	closeChild()
	if err != nil {
		stdin.Close()
		stdout.Close()
		stderr.Close()
		return nil, err
	}
	pr := &process{execID: execID, p: rp, stdin: stdin, stdout: newOutStream(), stderr: newOutStream(), started: time.Now()}
	go func() { pr.stdout.pump(stdout); stdout.Close() }()
	go func() { pr.stderr.pump(stderr); stderr.Close() }()
	return pr, nil
}

func decodeSpec(b []byte) (*specs.Spec, error) {
	if len(b) == 0 || len(b) > maxSpecBytes {
		return nil, fmt.Errorf("OCI spec must be 1 byte to %d bytes, got %d", maxSpecBytes, len(b))
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("decode OCI spec: %w", err)
	}
	if spec.Process == nil {
		return nil, errors.New("OCI spec has no process")
	}
	return &spec, nil
}

func (s *Server) CreateContainer(ctx context.Context, req *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	id := req.ContainerId
	if err := checkID("container id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	spec, err := decodeSpec(req.OciSpec)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.Rootfs == nil || req.Rootfs.Driver != "blk" {
		return nil, status.Error(codes.InvalidArgument, `rootfs storage must use driver "blk"`)
	}
	usesVolumes, err := resolveVolumes(spec, req.Volumes, sharedRoot)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if usesVolumes {
		if err := s.share.ensure(s.log); err != nil {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		if err := checkVolumeSources(spec, sharedRoot); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	s.mu.Lock()
	if _, ok := s.containers[id]; ok {
		s.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "container %q already exists", id)
	}
	c := &container{id: id, serial: req.Rootfs.Source, procs: map[string]*process{}, creating: true}
	s.containers[id] = c // reserve the id
	s.mu.Unlock()

	ok := false
	defer func() {
		s.mu.Lock()
		c.creating = false
		if !ok {
			delete(s.containers, id)
		}
		s.mu.Unlock()
	}()
	t0 := time.Now()
	diskCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lower, err := s.storage.acquire(diskCtx, req.Rootfs.Source, req.Rootfs.Fstype, req.Rootfs.Options)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rootfs, err := overlayRootfs(id, lower)
	if err != nil {
		_ = s.storage.release(req.Rootfs.Source)
		return nil, status.Error(codes.Internal, err.Error())
	}
	cleanupFS := func() {
		_ = removeContainerDir(id)
		_ = s.storage.release(req.Rootfs.Source)
	}
	t1 := time.Now()
	pr, err := startProcess("", spec.Process.Terminal, func(stdio runner.Stdio) (*runner.Process, error) {
		rc, err := s.runner.Create(ctx, id, spec, rootfs, stdio)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		c.c = rc
		s.mu.Unlock()
		return rc.Init, nil
	})
	if err != nil {
		cleanupFS()
		return nil, stageError(err)
	}
	s.mu.Lock()
	c.procs[""] = pr
	s.mu.Unlock()
	ok = true
	s.log.Info("container created", "id", id, "pid", pr.p.Pid, "args", spec.Process.Args,
		"rootfs_took", t1.Sub(t0), "init_stage_took", time.Since(t1),
		"c_stage", pr.p.Stage.C, "stage_start", pr.p.Stage.Start, "stage_config", pr.p.Stage.Config, "stage_rootfs", pr.p.Stage.Rootfs, "stage_ready", pr.p.Stage.Ready)
	if req.Start {
		if err := s.startContainer(ctx, c, pr); err != nil {
			return nil, err
		}
	}
	return &api.CreateContainerResponse{Pid: uint32(pr.p.Pid)}, nil
}

func (s *Server) StartContainer(ctx context.Context, req *api.StartContainerRequest) (*api.Empty, error) {
	c, p, err := s.getProcess(req.ContainerId, "")
	if err != nil {
		return nil, err
	}
	if err := s.startContainer(ctx, c, p); err != nil {
		return nil, err
	}
	return &api.Empty{}, nil
}

// startContainer lets a created container's init process exec its command.
func (s *Server) startContainer(ctx context.Context, c *container, p *process) error {
	if err := c.c.Start(ctx); err != nil {
		return stageError(err)
	}
	s.mu.Lock()
	c.started = true
	p.started = time.Now()
	s.mu.Unlock()
	s.log.Info("container started", "id", c.id)
	return nil
}

func (s *Server) RemoveContainer(ctx context.Context, req *api.RemoveContainerRequest) (*api.Empty, error) {
	c, err := s.getContainer(req.ContainerId)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if c.removing {
		s.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "container %q is already being removed", c.id)
	}
	if c.creating {
		s.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "container %q is still being created: retry when CreateContainer has returned", c.id)
	}
	init := c.procs[""]
	running := init != nil && c.started
	if running {
		select {
		case <-init.p.Done():
			running = false
		default:
		}
	}
	if running && !req.Force {
		s.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "container %q is running: stop it first or remove with force", c.id)
	}
	c.removing = true
	procs := make([]*process, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	if c.c != nil {
		if err := c.c.Destroy(dctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range procs {
		if p.stdin != nil {
			p.stdin.Close()
		}
		p.discard()
	}
	if err := removeContainerDir(c.id); err != nil {
		errs = append(errs, err)
	}
	if err := s.storage.release(c.serial); err != nil {
		errs = append(errs, err)
	}
	s.mu.Lock()
	delete(s.containers, c.id)
	s.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return nil, status.Errorf(codes.Internal, "remove container %q: %v", c.id, err)
	}
	s.log.Info("container removed", "id", c.id)
	return &api.Empty{}, nil
}

func (s *Server) StatsContainer(ctx context.Context, req *api.StatsContainerRequest) (*api.StatsContainerResponse, error) {
	c, err := s.getContainer(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if c.c == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %q is not created yet", c.id)
	}
	st, err := c.c.Cgroup.Stats()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &api.StatsContainerResponse{Cgroup: &api.CgroupStats{
		CpuUsageUsec: st.CPUUsageUsec, CpuUserUsec: st.CPUUserUsec, CpuSystemUsec: st.CPUSystemUsec,
		CpuNrThrottled: st.CPUNrThrottled, CpuThrottledUsec: st.CPUThrottledUsec,
		MemoryCurrent: st.MemoryCurrent, MemoryMax: st.MemoryMax, MemoryPeak: st.MemoryPeak,
		MemoryOom: st.MemoryOOM, MemoryOomKill: st.MemoryOOMKill,
		PidsCurrent: st.PidsCurrent, PidsMax: st.PidsMax, MemoryStat: st.MemoryStat,
	}}, nil
}

// maxResourcesJSON bounds the OCI resources document UpdateContainer
// accepts.
const maxResourcesJSON = 64 << 10

// UpdateContainer applies new cgroup resources (memory, CPU, pids) to a
// container, as containerd's task Update asks.
func (s *Server) UpdateContainer(ctx context.Context, req *api.UpdateContainerRequest) (*api.Empty, error) {
	if len(req.Resources) > maxResourcesJSON {
		return nil, status.Errorf(codes.InvalidArgument, "resources of container %q: %d bytes, the limit is %d", req.ContainerId, len(req.Resources), maxResourcesJSON)
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(req.Resources, &res); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "resources of container %q are not OCI LinuxResources JSON: %v", req.ContainerId, err)
	}
	c, err := s.getContainer(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if c.c == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %q is not created yet", c.id)
	}
	if err := c.c.Cgroup.Apply(&res); err != nil {
		return nil, status.Errorf(codes.Internal, "update the cgroup of container %q: %v", c.id, err)
	}
	s.log.Info("container resources updated", "id", c.id)
	return &api.Empty{}, nil
}

// freezeTimeout bounds how long Pause/ResumeContainer wait for the kernel.
const freezeTimeout = 10 * time.Second

func (s *Server) PauseContainer(ctx context.Context, req *api.PauseContainerRequest) (*api.Empty, error) {
	return s.freeze(ctx, req.ContainerId, true)
}

func (s *Server) ResumeContainer(ctx context.Context, req *api.ResumeContainerRequest) (*api.Empty, error) {
	return s.freeze(ctx, req.ContainerId, false)
}

// freeze freezes or thaws a started container's cgroup.
func (s *Server) freeze(ctx context.Context, id string, frozen bool) (*api.Empty, error) {
	verb, done := "resume", "resumed"
	if frozen {
		verb, done = "pause", "paused"
	}
	c, err := s.getContainer(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	started := c.started && c.c != nil
	init := c.procs[""]
	s.mu.Unlock()
	if !started {
		return nil, status.Errorf(codes.FailedPrecondition, "%s container %q: it is not started", verb, id)
	}
	if init != nil && init.p != nil {
		select {
		case <-init.p.Done():
			return nil, status.Errorf(codes.FailedPrecondition, "%s container %q: it has exited", verb, id)
		default:
		}
	}
	// One pause or resume at a time per container.
	c.freezeMu.Lock()
	defer c.freezeMu.Unlock()
	fctx, cancel := context.WithTimeout(ctx, freezeTimeout)
	defer cancel()
	if err := c.c.Cgroup.Freeze(fctx, frozen); err != nil {
		return nil, status.Errorf(codes.Internal, "%s container %q: %v", verb, id, err)
	}
	s.log.Info("container "+done, "id", id)
	return &api.Empty{}, nil
}

func (s *Server) ListContainers(ctx context.Context, _ *api.ListContainersRequest) (*api.ListContainersResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &api.ListContainersResponse{}
	for id, c := range s.containers {
		info := &api.ContainerInfo{ContainerId: id, Status: "created"}
		if p := c.procs[""]; p != nil {
			info.Pid = uint32(p.p.Pid)
			if c.started {
				info.Status = "running"
				if frozen, _ := c.frozen(); frozen {
					info.Status = "paused"
				}
			}
			select {
			case <-p.p.Done():
				info.Status = "stopped"
				info.ExitStatus = int32(p.p.ExitStatus().Status)
			default:
			}
		}
		out.Containers = append(out.Containers, info)
	}
	sort.Slice(out.Containers, func(i, j int) bool { return out.Containers[i].ContainerId < out.Containers[j].ContainerId })
	return out, nil
}

func (s *Server) ExecProcess(ctx context.Context, req *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	if err := checkID("exec id", req.ExecId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.Process) == 0 || len(req.Process) > maxSpecBytes {
		return nil, status.Errorf(codes.InvalidArgument, "process must be 1 byte to %d bytes", maxSpecBytes)
	}
	var proc specs.Process
	if err := json.Unmarshal(req.Process, &proc); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decode OCI process: %v", err)
	}
	c, err := s.getContainer(req.ContainerId)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	init := c.procs[""]
	_, dup := c.procs[req.ExecId]
	if dup {
		s.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "exec %q already exists in container %q", req.ExecId, c.id)
	}
	if !c.started || init == nil || c.removing {
		s.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "container %q is not running", c.id)
	}
	if frozen, _ := c.frozen(); frozen {
		s.mu.Unlock()
		// The new process would join the frozen cgroup and hang.
		return nil, status.Errorf(codes.FailedPrecondition, "container %q is paused: unpause it first", c.id)
	}
	if len(c.procs) >= maxExecs {
		now := time.Now()
		for id, p := range c.procs {
			if id != "" && p.prunable(now) {
				p.discard()
				if p.stdin != nil {
					p.stdin.Close()
				}
				delete(c.procs, id)
			}
		}
		if len(c.procs) >= maxExecs {
			s.mu.Unlock()
			return nil, status.Errorf(codes.ResourceExhausted, "container %q already has %d exec processes", c.id, maxExecs)
		}
	}
	c.procs[req.ExecId] = &process{execID: req.ExecId} // reserve
	s.mu.Unlock()
	select {
	case <-init.p.Done():
		s.dropProc(c, req.ExecId)
		return nil, status.Errorf(codes.FailedPrecondition, "container %q is not running", c.id)
	default:
	}
	pr, err := startProcess(req.ExecId, proc.Terminal, func(stdio runner.Stdio) (*runner.Process, error) {
		return c.c.Exec(ctx, &proc, stdio)
	})
	if err != nil {
		s.dropProc(c, req.ExecId)
		return nil, stageError(err)
	}
	pr.oomBase = c.c.Cgroup.OOMKills()
	s.mu.Lock()
	c.procs[req.ExecId] = pr
	s.mu.Unlock()
	s.log.Info("exec started", "id", c.id, "exec", req.ExecId, "pid", pr.p.Pid, "args", proc.Args)
	return &api.ExecProcessResponse{Pid: uint32(pr.p.Pid)}, nil
}

func (s *Server) dropProc(c *container, execID string) {
	s.mu.Lock()
	delete(c.procs, execID)
	s.mu.Unlock()
}

func (s *Server) WaitProcess(ctx context.Context, req *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	c, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if p.p == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "exec %q is still starting", req.ExecId)
	}
	select {
	case <-p.p.Done():
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	e := p.p.ExitStatus()
	s.mu.Lock()
	p.waited, p.waitAt = true, time.Now()
	s.mu.Unlock()
	resp := &api.WaitProcessResponse{
		ExitStatus: int32(e.Status), Signal: int32(e.Signal),
		StartedAtUnixNano: p.started.UnixNano(), ExitedAtUnixNano: e.At.UnixNano(),
	}
	if e.Signal == int(unix.SIGKILL) && c.c != nil && c.c.Cgroup.OOMKills() > p.oomBase {
		resp.OomKilled = true
	}
	return resp, nil
}

func (s *Server) SignalProcess(ctx context.Context, req *api.SignalProcessRequest) (*api.Empty, error) {
	c, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if req.Signal == 0 || req.Signal > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid signal %d", req.Signal)
	}
	sig := unix.Signal(req.Signal)
	if req.ExecId == "" {
		if c.c == nil {
			return nil, status.Errorf(codes.FailedPrecondition, "container %q is not created yet", c.id)
		}
		if err := c.c.Signal(sig, req.All); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return &api.Empty{}, nil
	}
	if p.p == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "exec %q is still starting", req.ExecId)
	}
	select {
	case <-p.p.Done():
		return &api.Empty{}, nil
	default:
	}
	if err := unix.Kill(p.p.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return nil, status.Errorf(codes.Internal, "signal exec %q: %v", req.ExecId, err)
	}
	return &api.Empty{}, nil
}

func (s *Server) WriteStdin(ctx context.Context, req *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	_, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.stdin == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "stdin of %s/%s is closed", req.ContainerId, req.ExecId)
	}
	// A process that does not read its stdin must not hold this lock (and
	// CloseStdin) forever: write until the request's deadline, or 10 s.
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(stdinWriteTimeout)
	}
	_ = p.stdin.SetWriteDeadline(dl)
	n, err := p.stdin.Write(req.Data)
	if err != nil && n == 0 {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, status.Errorf(codes.Unavailable, "write stdin of %s/%s: the process is not reading its input", req.ContainerId, req.ExecId)
		}
		return nil, status.Errorf(codes.Unavailable, "write stdin: %v", err)
	}
	return &api.WriteStdinResponse{Len: uint32(n)}, nil
}

func (s *Server) CloseStdin(ctx context.Context, req *api.CloseStdinRequest) (*api.Empty, error) {
	_, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.stdin == nil {
		return &api.Empty{}, nil
	}
	p.closed = true
	if p.p != nil && p.p.Console != nil {
		// A terminal's master also carries output: send EOF (^D) instead.
		_, _ = p.stdin.Write([]byte{4})
		return &api.Empty{}, nil
	}
	_ = p.stdin.Close()
	return &api.Empty{}, nil
}

func (s *Server) readStream(ctx context.Context, req *api.ReadStreamRequest, stderr bool) (*api.ReadStreamResponse, error) {
	_, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	st := p.stdout
	if stderr {
		st = p.stderr
	}
	if st == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "exec %q is still starting", req.ExecId)
	}
	data, eof, err := st.read(ctx, int(req.Len))
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return &api.ReadStreamResponse{Data: data, Eof: eof}, nil
}

func (s *Server) ReadStdout(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return s.readStream(ctx, req, false)
}

func (s *Server) ReadStderr(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return s.readStream(ctx, req, true)
}

func (s *Server) TtyWinResize(ctx context.Context, req *api.TtyWinResizeRequest) (*api.Empty, error) {
	_, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if p.p == nil || p.p.Console == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%s/%s has no terminal", req.ContainerId, req.ExecId)
	}
	ws := &unix.Winsize{Row: uint16(req.Rows), Col: uint16(req.Columns)}
	// Through the raw conn: Fd() would switch the master to blocking mode.
	rc, err := p.p.Console.SyscallConn()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "resize terminal: %v", err)
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) }); err != nil || ioErr != nil {
		return nil, status.Errorf(codes.Internal, "resize terminal: %v", errors.Join(err, ioErr))
	}
	return &api.Empty{}, nil
}

// frozen reports whether the container is paused or being paused
// (cgroup.freeze asks for it, whether or not the kernel has finished).
func (c *container) frozen() (bool, error) {
	if c.c == nil || c.c.Cgroup == nil {
		return false, nil
	}
	return c.c.Cgroup.FreezeRequested()
}

package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/guest"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/sandbox"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"
	cshim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/fifo"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// drainTimeout bounds how long an exited process's output may take to
// reach containerd's FIFOs before the exit is reported anyway.
const drainTimeout = 5 * time.Second

// Service is the long-lived shim: containerd's task API v2 for one pod.
type Service struct {
	cfg       Config
	ns        string
	publisher cshim.Publisher
	sd        shutdown.Service
	log       *slog.Logger
	// level is the log level a pod's config may set (nil: fixed).
	level *slog.LevelVar

	mu         sync.Mutex
	pod        *pod
	containers map[string]*container
}

// pod is the VM shared by the pod's containers.
type pod struct {
	dir string
	sb  *sandbox.Sandbox
	rec *podRecord // as written to dir
	// slots is the VM's number of hot-plug slots for joining containers.
	slots int
}

type container struct {
	id, bundle string
	init       *process
	execs      map[string]*process
	// disk and img are the hot-plugged rootfs disk's serial and image of
	// a container that joined the pod ("" for the pod's first container,
	// whose rootfs disk goes with the VM).
	disk, img string
}

// process is a container's init process or one of its execs.
type process struct {
	cid, execID string
	stdio       taskIO
	spec        *specs.Process // execs only

	mu       sync.Mutex
	status   task.Status
	exitCode uint32
	exitedAt time.Time
	done     chan struct{} // closed once the exit is known
	waiter   sync.Once     // starts waitProcess: at Start, or at a Kill before it
	gone     chan struct{} // closed when the process is deleted (ends watchUnstarted)
	goneOnce sync.Once

	stdin    io.ReadWriteCloser
	outs     []io.Writer // stdout, stderr (nil: none)
	outputs  sync.WaitGroup
	closers  []io.Closer
	stdinEnd sync.Once
}

type taskIO struct {
	stdin, stdout, stderr string
	terminal              bool
}

var _ taskAPI.TaskService = (*Service)(nil)

// NewService returns the task service. sd ends the shim. cfg holds the
// defaults; each pod's configuration is resolved at Create (see
// Config.Resolve). level, if not nil, is set to the pod's log_level.
func NewService(ctx context.Context, cfg Config, publisher cshim.Publisher, sd shutdown.Service, log *slog.Logger, level *slog.LevelVar) (*Service, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, ns: ns, publisher: publisher, sd: sd, log: log, level: level, containers: map[string]*container{}}
	sd.RegisterCallback(func(context.Context) error {
		// The callbacks run on their own goroutine (shutdown.Shutdown),
		// never under s.mu: take it, as every other user of s.pod does.
		s.mu.Lock()
		s.stopPod()
		s.mu.Unlock()
		return publisher.Close()
	})
	return s, nil
}

func (s *Service) publish(ctx context.Context, topic string, ev interface{ ProtoMessage() }) {
	ctx = namespaces.WithNamespace(context.WithoutCancel(ctx), s.ns)
	if err := s.publisher.Publish(ctx, topic, ev); err != nil {
		s.log.Warn("publish event", "topic", topic, "err", err)
	}
}

func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	return errdefs.ToGRPC(err)
}

// Create boots the pod VM (first container) and creates the container in
// it, not yet started.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[r.ID]; ok {
		return nil, grpcErr(fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists))
	}
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, grpcErr(fmt.Errorf("checkpoint/restore is not supported by Coffer: %w", errdefs.ErrNotImplemented))
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, grpcErr(err)
	}
	if sandboxID, joining := podRole(spec.Annotations); joining {
		return s.createInPod(ctx, r, spec, sandboxID)
	}
	if s.pod != nil {
		return nil, grpcErr(fmt.Errorf("container %s: this shim already runs a pod; a second container must carry the CRI annotations %s=%s and %s: %w",
			r.ID, AnnotationContainerType, containerTypeContainer, AnnotationSandboxID, errdefs.ErrAlreadyExists))
	}
	configPath, err := configPathOption(r.Options)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("create container %s: %w", r.ID, err))
	}
	cfg, err := s.cfg.Resolve(configPath, spec.Annotations)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("create container %s: %w", r.ID, err))
	}
	if s.level != nil {
		s.level.Set(cfg.LogLevel)
	}
	s.log.Info("pod config", "id", r.ID, "config_path", configPath, "memory_mib", cfg.MemoryMiB, "vcpus", cfg.VCPUs,
		"accel", cfg.Accel, "transport", cfg.Transport, "hypervisor", cfg.HypervisorPath, "guest_dir", cfg.GuestDir)
	// Before anything is built: vsock needs the host's vhost-vsock.
	if _, err := sandbox.CheckTransport(cfg.Transport); err != nil {
		return nil, grpcErr(fmt.Errorf("create container %s: config key transport: %w: %w", r.ID, err, errdefs.ErrFailedPrecondition))
	}
	dir := s.cfg.PodDir(s.ns, r.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, grpcErr(fmt.Errorf("create pod dir: %w", err))
	}
	defer func() {
		if retErr != nil {
			s.stopPod()
			_ = sandbox.RemoveTree(dir)
		}
	}()
	img := filepath.Join(dir, "rootfs.img")
	if err := s.buildRootfs(ctx, r, spec, img); err != nil {
		return nil, grpcErr(err)
	}
	m, err := guest.Load(cfg.GuestDir)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("load the guest image: %w", err))
	}
	// The VM must outlive this request.
	vctx := context.WithoutCancel(ctx)
	slots := podHotplugSlots(spec.Annotations)
	sb, err := sandbox.Start(vctx, sandbox.Config{
		ID: r.ID, StateDir: dir, Kernel: m.KernelPath(), Initrd: m.InitrdPath(), Cmdline: m.Cmdline,
		MemoryMiB: cfg.MemoryMiB, VCPUs: cfg.VCPUs, Accel: cfg.Accel, QEMUPath: cfg.HypervisorPath,
		Disks:        []hypervisor.Disk{{Serial: "rootfs0", Path: img, ReadOnly: true}},
		HotplugSlots: slots,
		SharedFS:     podNeedsSharedFS(cfg, spec),
		Transport:    cfg.Transport,
		Log:          s.log,
	})
	if err != nil {
		return nil, grpcErr(err)
	}
	rec := &podRecord{ID: r.ID, ShimPID: os.Getpid(), QEMUPID: sb.PID(), Bundle: r.Bundle,
		Accel: string(sb.Accel()), GuestDir: cfg.GuestDir}
	s.pod = &pod{dir: dir, sb: sb, rec: rec, slots: slots}
	if err := writeRecord(dir, rec); err != nil {
		return nil, grpcErr(err)
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = r.ID
	}
	// The guest's clock is set to the host's here: exit times need no
	// conversion.
	if err := sb.CreateSandbox(vctx, &api.CreateSandboxRequest{SandboxId: r.ID, Hostname: hostname}); err != nil {
		return nil, grpcErr(fmt.Errorf("create the sandbox in the guest: %w", sb.Explain(sandbox.AgentError(err))))
	}
	guestSpec(spec)
	vols, err := shareVolumes(sb, r.ID, spec)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("create container %s: %w", r.ID, err))
	}
	if err := sb.CreateContainer(vctx, r.ID, spec, "rootfs0", sandbox.FSErofs, vols...); err != nil {
		return nil, grpcErr(fmt.Errorf("create container %s: %w", r.ID, err))
	}
	p := &process{cid: r.ID, status: task.Status_CREATED, done: make(chan struct{}), gone: make(chan struct{}),
		stdio: taskIO{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}}
	if err := s.openIO(ctx, p); err != nil {
		_, _ = sb.Agent.RemoveContainer(vctx, &api.RemoveContainerRequest{ContainerId: r.ID, Force: true})
		return nil, grpcErr(err)
	}
	s.copyOutput(p)
	s.containers[r.ID] = &container{id: r.ID, bundle: r.Bundle, init: p, execs: map[string]*process{}}
	go s.watchUnstarted(sb, p)
	s.publish(ctx, runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs, Pid: uint32(sb.PID()),
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	return &taskAPI.CreateTaskResponse{Pid: uint32(sb.PID())}, nil
}

// createInPod creates a container that joins the running pod VM: its
// rootfs image is hot-plugged as a disk of its own.
func (s *Service) createInPod(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec, sandboxID string) (_ *taskAPI.CreateTaskResponse, retErr error) {
	if s.pod == nil {
		return nil, grpcErr(fmt.Errorf("container %s joins pod %s, but this shim runs no pod VM: create the pod's sandbox container first: %w",
			r.ID, sandboxID, errdefs.ErrFailedPrecondition))
	}
	if s.pod.slots == 0 {
		return nil, grpcErr(fmt.Errorf("container %s joins pod %s, whose first container was not a CRI pod sandbox (annotation %s=%s), so its VM has no slots for more containers: %w",
			r.ID, sandboxID, AnnotationContainerType, containerTypeSandbox, errdefs.ErrFailedPrecondition))
	}
	sb := s.pod.sb
	vctx := context.WithoutCancel(ctx)
	serial := diskSerial(r.ID)
	img := filepath.Join(s.pod.dir, serial+".img")
	defer func() {
		if retErr != nil {
			_ = os.Remove(img)
		}
	}()
	if err := s.buildRootfs(ctx, r, spec, img); err != nil {
		return nil, grpcErr(err)
	}
	// Recorded before the hot-plug, so that a shim killed during it
	// leaves the image for the cleanup path to find.
	if err := s.recordJoined(r.ID, serial, img); err != nil {
		return nil, grpcErr(err)
	}
	defer func() {
		if retErr != nil {
			s.recordLeft(r.ID)
		}
	}()
	if err := sb.AddDisk(vctx, hypervisor.Disk{Serial: serial, Path: img, ReadOnly: true}); err != nil {
		return nil, grpcErr(fmt.Errorf("create container %s: %w", r.ID, err))
	}
	defer func() {
		if retErr != nil {
			if err := sb.RemoveDisk(vctx, serial); err != nil {
				s.log.Warn("remove the rootfs disk of a failed container", "container", r.ID, "err", err)
			}
		}
	}()
	guestSpec(spec)
	vols, err := shareVolumes(sb, r.ID, spec)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("create container %s: %w", r.ID, err))
	}
	defer func() {
		if retErr != nil {
			_ = sb.ReleaseVolumes(r.ID)
		}
	}()
	if err := sb.CreateContainer(vctx, r.ID, spec, serial, sandbox.FSErofs, vols...); err != nil {
		return nil, grpcErr(fmt.Errorf("create container %s in pod %s: %w", r.ID, sandboxID, err))
	}
	p := &process{cid: r.ID, status: task.Status_CREATED, done: make(chan struct{}), gone: make(chan struct{}),
		stdio: taskIO{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}}
	if err := s.openIO(ctx, p); err != nil {
		_, _ = sb.Agent.RemoveContainer(vctx, &api.RemoveContainerRequest{ContainerId: r.ID, Force: true})
		return nil, grpcErr(err)
	}
	s.copyOutput(p)
	s.containers[r.ID] = &container{id: r.ID, bundle: r.Bundle, init: p, execs: map[string]*process{}, disk: serial, img: img}
	go s.watchUnstarted(sb, p)
	s.log.Info("container joined the pod", "id", r.ID, "sandbox_id", sandboxID, "disk", serial)
	s.publish(ctx, runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs, Pid: uint32(sb.PID()),
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	return &taskAPI.CreateTaskResponse{Pid: uint32(sb.PID())}, nil
}

// recordJoined adds a joining container's disk to the pod's record.
func (s *Service) recordJoined(id, serial, img string) error {
	rec := *s.pod.rec
	rec.Joined = append(append([]joinedDisk(nil), rec.Joined...), joinedDisk{Container: id, Serial: serial, Image: img})
	if err := writeRecord(s.pod.dir, &rec); err != nil {
		return fmt.Errorf("record the disk of container %s: %w", id, err)
	}
	s.pod.rec = &rec
	return nil
}

// recordLeft removes a container's disk from the pod's record.
func (s *Service) recordLeft(id string) {
	if s.pod == nil {
		return
	}
	rec := *s.pod.rec
	rec.Joined = nil
	for _, j := range s.pod.rec.Joined {
		if j.Container != id {
			rec.Joined = append(rec.Joined, j)
		}
	}
	if err := writeRecord(s.pod.dir, &rec); err != nil {
		s.log.Warn("record that a container left the pod", "container", id, "err", err)
		return
	}
	s.pod.rec = &rec
}

func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read the bundle's OCI spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(bundle, "config.json"), err)
	}
	if spec.Process == nil {
		return nil, fmt.Errorf("the OCI spec in %s has no process: %w", bundle, errdefs.ErrInvalidArgument)
	}
	return &spec, nil
}

// guestSpec drops what names host resources the guest does not have:
// host namespace paths (the VM is the isolation boundary) and the host
// cgroup path. Bind mounts become volumes (shareVolumes).
func guestSpec(spec *specs.Spec) {
	if spec.Linux == nil {
		return
	}
	spec.Linux.CgroupsPath = ""
	var nss []specs.LinuxNamespace
	for _, n := range spec.Linux.Namespaces {
		if n.Path != "" {
			continue
		}
		nss = append(nss, n)
	}
	spec.Linux.Namespaces = nss
}

// buildRootfs turns the container's rootfs into a read-only image: the
// snapshot mounts containerd passed (mounted on the bundle's rootfs just
// long enough to build the image), or the bundle's rootfs directory.
func (s *Service) buildRootfs(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec, img string) error {
	rootfs := filepath.Join(r.Bundle, "rootfs")
	if len(r.Rootfs) == 0 {
		if spec.Root != nil && spec.Root.Path != "" {
			rootfs = spec.Root.Path
			if !filepath.IsAbs(rootfs) {
				rootfs = filepath.Join(r.Bundle, rootfs)
			}
		}
		return sandbox.BuildRootfsImage(ctx, rootfs, img, sandbox.FSErofs)
	}
	mounts := make([]mount.Mount, 0, len(r.Rootfs))
	for _, m := range r.Rootfs {
		mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		return err
	}
	if err := mount.All(mounts, rootfs); err != nil {
		return fmt.Errorf("mount the container's snapshot on %s: %w", rootfs, err)
	}
	defer func() {
		if err := mount.UnmountAll(rootfs, unix.MNT_DETACH); err != nil {
			s.log.Warn("unmount the container's snapshot", "path", rootfs, "err", err)
		}
	}()
	return sandbox.BuildRootfsImage(ctx, rootfs, img, sandbox.FSErofs)
}

// openIO opens containerd's FIFOs for p. Opening a FIFO for writing
// waits for its reader; fifo does that in the background, so this does
// not block.
func (s *Service) openIO(ctx context.Context, p *process) error {
	if p.stdio.stdin != "" {
		f, err := fifo.OpenFifo(context.WithoutCancel(ctx), p.stdio.stdin, unix.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open the stdin FIFO %s: %w", p.stdio.stdin, err)
		}
		p.stdin = f
		p.closers = append(p.closers, f)
	}
	for i, path := range []string{p.stdio.stdout, p.stdio.stderr} {
		// With a terminal, stderr is merged into stdout.
		if path == "" || (i == 1 && p.stdio.terminal) {
			p.outs = append(p.outs, nil)
			continue
		}
		w, err := fifo.OpenFifo(context.WithoutCancel(ctx), path, unix.O_WRONLY, 0)
		if err != nil {
			p.closeIO()
			return fmt.Errorf("open the output FIFO %s: %w", path, err)
		}
		p.closers = append(p.closers, w)
		p.outs = append(p.outs, w)
	}
	return nil
}

// copyOutput copies the process's stdout and stderr to the FIFOs until
// they end. The process must exist in the guest.
func (s *Service) copyOutput(p *process) {
	agent := s.pod.sb.Agent
	for i, w := range p.outs {
		if w == nil {
			continue
		}
		p.outputs.Add(1)
		go func() {
			defer p.outputs.Done()
			if err := sandbox.CopyOutput(context.Background(), agent, p.cid, p.execID, i == 1, w); err != nil {
				s.log.Debug("output copy ended", "process", name(p), "stderr", i == 1, "err", err)
			}
		}()
	}
}

func (p *process) closeIO() {
	for _, c := range p.closers {
		_ = c.Close()
	}
	p.closers = nil
}

// copyStdin sends containerd's stdin FIFO to the process, then closes its
// stdin in the guest.
func (s *Service) copyStdin(p *process) {
	if p.stdin == nil {
		return
	}
	agent := s.pod.sb.Agent
	go func() {
		err := sandbox.CopyInput(context.Background(), agent, p.cid, p.execID, p.stdin)
		if err != nil {
			s.log.Debug("stdin copy ended", "container", p.cid, "exec", p.execID, "err", err)
		}
	}()
}

// lookupProcess finds a process and the pod's sandbox (nil before the VM
// exists) under the service lock.
func (s *Service) lookupProcess(id, execID string) (*process, *sandbox.Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, p, err := s.lookup(id, execID)
	if err != nil {
		return nil, nil, err
	}
	var sb *sandbox.Sandbox
	if s.pod != nil {
		sb = s.pod.sb
	}
	return p, sb, nil
}

// agentErr explains a failed agent call on sb about id (execID): when the
// container or exec was deleted meanwhile, or its pod's VM was discarded
// with the last delete, that is the answer (NotFound) rather than "the VM
// exited unexpectedly".
func (s *Service) agentErr(id, execID string, sb *sandbox.Sandbox, err error) error {
	s.mu.Lock()
	_, _, lerr := s.lookup(id, execID)
	gone := s.pod == nil || s.pod.sb != sb
	s.mu.Unlock()
	if lerr != nil {
		return lerr
	}
	if gone {
		return fmt.Errorf("the pod of container %s was removed: %w", id, errdefs.ErrNotFound)
	}
	return sb.Explain(sandbox.AgentError(err))
}

func (s *Service) lookup(id, execID string) (*container, *process, error) {
	c, ok := s.containers[id]
	if !ok {
		return nil, nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %s in container %s: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// Start starts the container's command, or an exec.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, grpcErr(err)
	}
	p.mu.Lock()
	st := p.status
	p.mu.Unlock()
	if st != task.Status_CREATED {
		return nil, grpcErr(fmt.Errorf("%s is %s, not created: %w", name(p), st, errdefs.ErrFailedPrecondition))
	}
	if s.pod == nil {
		return nil, grpcErr(fmt.Errorf("start %s: the pod VM is gone: %w", name(p), errdefs.ErrFailedPrecondition))
	}
	sb := s.pod.sb
	pid := uint32(sb.PID())
	if r.ExecID == "" {
		if _, err := sb.Agent.StartContainer(ctx, &api.StartContainerRequest{ContainerId: r.ID}); err != nil {
			return nil, grpcErr(fmt.Errorf("start container %s: %w", r.ID, sb.Explain(sandbox.AgentError(err))))
		}
	} else {
		b, err := json.Marshal(p.spec)
		if err != nil {
			return nil, grpcErr(err)
		}
		if err := s.openIO(ctx, p); err != nil {
			return nil, grpcErr(err)
		}
		if _, err := sb.Agent.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: r.ID, ExecId: r.ExecID, Process: b}); err != nil {
			p.closeIO()
			return nil, grpcErr(fmt.Errorf("start exec %s in container %s: %w", r.ExecID, r.ID, sb.Explain(sandbox.AgentError(err))))
		}
		s.copyOutput(p)
	}
	p.mu.Lock()
	p.status = task.Status_RUNNING
	p.mu.Unlock()
	s.copyStdin(p)
	s.startWaiter(sb, p)
	if r.ExecID == "" {
		s.publish(ctx, runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: r.ID, Pid: pid})
	} else {
		s.publish(ctx, runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: pid})
	}
	return &taskAPI.StartResponse{Pid: pid}, nil
}

// startWaiter starts waitProcess for p once. Start does it; so does a
// Kill of a created, never started container, whose init then exits and
// must be reported (containerd's Wait would otherwise never return).
func (s *Service) startWaiter(sb *sandbox.Sandbox, p *process) {
	p.waiter.Do(func() { go s.waitProcess(sb, p) })
}

// watchUnstarted reports the end of a process that was created but not
// started (nor killed) when the pod VM dies: without it, containerd's Wait
// on such a task would never return and its state would stay "created".
// A process that got its waiter, or was deleted, is left alone.
func (s *Service) watchUnstarted(sb *sandbox.Sandbox, p *process) {
	select {
	case <-p.done:
		return
	case <-p.gone:
		return
	case <-sb.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, q, err := s.lookup(p.cid, p.execID); err == nil && q == p {
		s.startWaiter(sb, p) // a no-op once Start or Kill started it
	}
}

// waitProcess records p's exit (or the VM's death), lets its output
// drain into the FIFOs and publishes TaskExit.
// sb is passed in: s.pod is guarded by s.mu and may be gone (the pod
// discarded after the last delete) by the time this goroutine runs.
func (s *Service) waitProcess(sb *sandbox.Sandbox, p *process) {
	type res struct {
		r   *api.WaitProcessResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := sb.Agent.WaitProcess(context.Background(), &api.WaitProcessRequest{ContainerId: p.cid, ExecId: p.execID})
		ch <- res{r, err}
	}()
	code, exited := uint32(255), time.Time{}
	select {
	case r := <-ch:
		if r.err != nil {
			s.log.Error("wait for process", "process", name(p), "err", sb.Explain(sandbox.AgentError(r.err)))
		} else {
			code = uint32(r.r.ExitStatus)
			// The guest's clock was set to the host's at CreateSandbox.
			// A reading from the future (a clock that could not be set)
			// becomes the time the shim learnt of the exit.
			if at := r.r.ExitedAtUnixNano; at != 0 && at <= time.Now().UnixNano() {
				exited = time.Unix(0, at)
			}
			if r.r.OomKilled {
				// The container's cgroup OOM-killed a process during this
				// one's life: containerd (and CRI's OOMKilled reason) learn
				// it from TaskOOM, which comes before TaskExit.
				s.log.Info("out of memory", "process", name(p))
				s.publish(context.Background(), runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: p.cid})
			}
		}
	case <-sb.Done():
		s.log.Error("the pod VM died", "process", name(p), "err", sb.VMError())
	}
	if exited.IsZero() {
		exited = time.Now()
	}
	drained := make(chan struct{})
	go func() { p.outputs.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		s.log.Warn("process output did not end in time", "process", name(p))
	}
	p.mu.Lock()
	p.status, p.exitCode, p.exitedAt = task.Status_STOPPED, code, exited
	p.closeIO()
	p.mu.Unlock()
	close(p.done)
	s.publish(context.Background(), runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: p.cid, ID: idOr(p), Pid: uint32(sb.PID()), ExitStatus: code, ExitedAt: protobuf.ToTimestamp(exited),
	})
}

// isDone reports whether ch is closed.
func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func idOr(p *process) string {
	if p.execID != "" {
		return p.execID
	}
	return p.cid
}

func name(p *process) string {
	if p.execID == "" {
		return "container " + p.cid
	}
	return "exec " + p.execID + " in container " + p.cid
}

// Delete removes an exec, or the container; the pod's last container
// takes the VM with it.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, grpcErr(err)
	}
	p.mu.Lock()
	st, code, exited := p.status, p.exitCode, p.exitedAt
	p.mu.Unlock()
	if st == task.Status_RUNNING || st == task.Status_PAUSED {
		return nil, grpcErr(fmt.Errorf("%s is still %s: kill it first: %w", name(p), strings.ToLower(st.String()), errdefs.ErrFailedPrecondition))
	}
	pid := uint32(0)
	if s.pod != nil {
		pid = uint32(s.pod.sb.PID())
	}
	if st == task.Status_CREATED && (s.pod == nil || isDone(s.pod.sb.Done())) {
		code = 255 // never started, and its VM is gone: as its waiter would say
	}
	if exited.IsZero() {
		exited = time.Now()
	}
	p.goneOnce.Do(func() { close(p.gone) })
	if r.ExecID != "" {
		p.closeIO()
		delete(c.execs, r.ExecID)
	} else {
		for _, e := range c.execs {
			e.goneOnce.Do(func() { close(e.gone) })
		}
		// The pod's last container: the VM stops right after, and its
		// power off kills what is left, so the guest-side removal
		// (unmounts, cgroup) and the disk unplug are skipped.
		last := len(s.containers) == 1
		if s.pod != nil && !last {
			if _, err := s.pod.sb.Agent.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: r.ID, Force: true}); err != nil {
				s.log.Debug("remove container in the guest", "container", r.ID, "err", err)
			}
		}
		p.closeIO()
		for _, e := range c.execs {
			e.closeIO()
		}
		if s.pod != nil && c.disk != "" && !last {
			if err := s.pod.sb.RemoveDisk(ctx, c.disk); err != nil {
				s.log.Warn("remove the rootfs disk of a deleted container", "container", r.ID, "err", err)
			}
		}
		if c.img != "" {
			_ = os.Remove(c.img)
			s.recordLeft(r.ID)
		}
		if s.pod != nil {
			if err := s.pod.sb.ReleaseVolumes(r.ID); err != nil {
				s.log.Warn("unmount the volumes of a deleted container", "container", r.ID, "err", err)
			}
		}
		delete(s.containers, r.ID)
		if len(s.containers) == 0 {
			// Every container was deleted, so every one had exited:
			// nothing in the guest is worth a graceful shutdown.
			s.discardPod()
		}
	}
	s.publish(ctx, runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: r.ID, ID: idOr(p), Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(exited),
	})
	return &taskAPI.DeleteResponse{Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(exited)}, nil
}

// stopPod stops the VM and removes the pod directory. Idempotent.
func (s *Service) stopPod() { s.endPod(false) }

// discardPod ends the pod once all its containers have exited and been
// deleted (sandbox.Sandbox.Discard: no agent round trip, no guest power off).
func (s *Service) discardPod() { s.endPod(true) }

func (s *Service) endPod(discard bool) {
	if s.pod == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stop := s.pod.sb.Stop
	if discard {
		stop = s.pod.sb.Discard
	}
	if err := stop(ctx); err != nil {
		s.log.Warn("stop the pod VM", "err", err)
	}
	if err := sandbox.RemoveTree(s.pod.dir); err != nil {
		s.log.Warn("remove the pod dir", "dir", s.pod.dir, "err", err)
	}
	s.pod = nil
}

// Exec registers an exec; it runs at Start.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, grpcErr(err)
	}
	if s.pod == nil {
		return nil, grpcErr(fmt.Errorf("exec %s: the pod VM of container %s is gone: %w", r.ExecID, r.ID, errdefs.ErrFailedPrecondition))
	}
	if _, ok := c.execs[r.ExecID]; ok {
		return nil, grpcErr(fmt.Errorf("exec %s: %w", r.ExecID, errdefs.ErrAlreadyExists))
	}
	c.init.mu.Lock()
	paused := c.init.status == task.Status_PAUSED
	c.init.mu.Unlock()
	if paused {
		return nil, grpcErr(fmt.Errorf("exec %s: container %s is paused: resume it first: %w", r.ExecID, r.ID, errdefs.ErrFailedPrecondition))
	}
	if r.Spec == nil {
		return nil, grpcErr(fmt.Errorf("exec %s has no process spec: %w", r.ExecID, errdefs.ErrInvalidArgument))
	}
	var ps specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &ps); err != nil {
		return nil, grpcErr(fmt.Errorf("parse the process spec of exec %s: %w", r.ExecID, err))
	}
	ps.Terminal = r.Terminal
	p := &process{cid: r.ID, execID: r.ExecID, spec: &ps, status: task.Status_CREATED, done: make(chan struct{}), gone: make(chan struct{}),
		stdio: taskIO{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}}
	c.execs[r.ExecID] = p
	go s.watchUnstarted(s.pod.sb, p)
	s.publish(ctx, runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &ptypes.Empty{}, nil
}

// State reports a process's status.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, grpcErr(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &taskAPI.StateResponse{
		ID: r.ID, ExecID: r.ExecID, Bundle: c.bundle, Status: p.status,
		Stdin: p.stdio.stdin, Stdout: p.stdio.stdout, Stderr: p.stdio.stderr, Terminal: p.stdio.terminal,
		ExitStatus: p.exitCode,
	}
	if s.pod != nil {
		resp.Pid = uint32(s.pod.sb.PID())
	}
	if !p.exitedAt.IsZero() {
		resp.ExitedAt = protobuf.ToTimestamp(p.exitedAt)
	}
	return resp, nil
}

// Wait blocks until the process exits.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	s.mu.Lock()
	_, p, err := s.lookup(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, grpcErr(err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, grpcErr(ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return &taskAPI.WaitResponse{ExitStatus: p.exitCode, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

// Kill signals a process (all of the container's with All).
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	p, sb, err := s.lookupProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, grpcErr(err)
	}
	p.mu.Lock()
	st := p.status
	p.mu.Unlock()
	if st == task.Status_STOPPED || sb == nil {
		// Killing a finished process is not an error (CRI stops are
		// idempotent).
		return &ptypes.Empty{}, nil
	}
	if st == task.Status_CREATED && r.ExecID != "" {
		return nil, grpcErr(fmt.Errorf("%s is not started: %w", name(p), errdefs.ErrFailedPrecondition))
	}
	if _, err := sb.Agent.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: r.ID, ExecId: r.ExecID, Signal: r.Signal, All: r.All}); err != nil {
		select {
		case <-p.done:
			return &ptypes.Empty{}, nil
		default:
		}
		return nil, grpcErr(fmt.Errorf("signal %s: %w", name(p), sb.Explain(sandbox.AgentError(err))))
	}
	if st == task.Status_CREATED {
		s.startWaiter(sb, p)
	}
	return &ptypes.Empty{}, nil
}

// Pids lists the pod's host-visible process: the VM. Guest pids are not
// host pids.
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, err := s.lookup(r.ID, ""); err != nil {
		return nil, grpcErr(err)
	}
	if s.pod == nil {
		return &taskAPI.PidsResponse{}, nil
	}
	return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: uint32(s.pod.sb.PID())}}}, nil
}

// CloseIO closes a process's stdin once containerd's side has ended.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	p, sb, err := s.lookupProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, grpcErr(err)
	}
	if !r.Stdin || sb == nil {
		return &ptypes.Empty{}, nil
	}
	p.stdinEnd.Do(func() {
		// The stdin copy ends on its own at EOF of the FIFO (the writer
		// closed it before asking); this covers a process without a copy.
		if p.stdin == nil {
			_, _ = sb.Agent.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: r.ID, ExecId: r.ExecID})
		}
	})
	return &ptypes.Empty{}, nil
}

// ResizePty resizes a process's terminal.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	p, sb, err := s.lookupProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, grpcErr(err)
	}
	if sb == nil || !p.stdio.terminal {
		return &ptypes.Empty{}, nil
	}
	if _, err := sb.Agent.TtyWinResize(ctx, &api.TtyWinResizeRequest{ContainerId: r.ID, ExecId: r.ExecID, Rows: r.Height, Columns: r.Width}); err != nil {
		return nil, grpcErr(fmt.Errorf("resize the terminal of %s: %w", name(p), s.agentErr(r.ID, r.ExecID, sb, err)))
	}
	return &ptypes.Empty{}, nil
}

// Connect returns the shim's and the VM's pids.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if s.pod != nil {
		resp.TaskPid = uint32(s.pod.sb.PID())
	}
	return resp, nil
}

// Shutdown ends the shim once no container is left.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	n := len(s.containers)
	s.mu.Unlock()
	if n > 0 && !r.Now {
		return &ptypes.Empty{}, nil
	}
	s.sd.Shutdown()
	return &ptypes.Empty{}, nil
}

// Update applies new cgroup resources (memory, CPU, pids limits) to the
// container's cgroup in the guest. The VM's own size does not change.
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	_, sb, err := s.lookupProcess(r.ID, "")
	if err != nil {
		return nil, grpcErr(err)
	}
	if sb == nil {
		return nil, grpcErr(fmt.Errorf("container %s has no running VM: %w", r.ID, errdefs.ErrFailedPrecondition))
	}
	res, err := decodeResources(r.Resources)
	if err != nil {
		return nil, grpcErr(fmt.Errorf("update container %s: %w", r.ID, err))
	}
	if _, err := sb.Agent.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: r.ID, Resources: res}); err != nil {
		return nil, grpcErr(fmt.Errorf("update the resources of container %s: %w", r.ID, s.agentErr(r.ID, "", sb, err)))
	}
	return &ptypes.Empty{}, nil
}

// maxResources bounds the resources document of an Update.
const maxResources = 64 << 10

// decodeResources checks that an Update's resources are OCI
// LinuxResources (containerd sends them as JSON in an Any) and returns
// them re-encoded as JSON for the agent.
func decodeResources(a typeurl.Any) ([]byte, error) {
	if a == nil {
		return nil, fmt.Errorf("no resources given: %w", errdefs.ErrInvalidArgument)
	}
	if !strings.HasSuffix(a.GetTypeUrl(), "/LinuxResources") {
		return nil, fmt.Errorf("resources of type %q: only OCI LinuxResources (Linux containers) can be updated: %w", a.GetTypeUrl(), errdefs.ErrNotImplemented)
	}
	if len(a.GetValue()) > maxResources {
		return nil, fmt.Errorf("resources of %d bytes, the limit is %d: %w", len(a.GetValue()), maxResources, errdefs.ErrInvalidArgument)
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(a.GetValue(), &res); err != nil {
		return nil, fmt.Errorf("parse the OCI LinuxResources: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return json.Marshal(&res)
}

// Pause freezes every process of a running container (its cgroup in the
// guest) and publishes TaskPaused; the task's status is PAUSED until Resume.
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return s.freeze(ctx, r.ID, true)
}

// Resume thaws a paused container and publishes TaskResumed.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return s.freeze(ctx, r.ID, false)
}

func (s *Service) freeze(ctx context.Context, id string, pause bool) (*ptypes.Empty, error) {
	from, to, verb := task.Status_RUNNING, task.Status_PAUSED, "pause"
	if !pause {
		from, to, verb = task.Status_PAUSED, task.Status_RUNNING, "resume"
	}
	// The agent call can take seconds: it runs without s.mu, so State,
	// Kill and Wait are not held up by it.
	p, sb, err := s.lookupProcess(id, "")
	if err != nil {
		return nil, grpcErr(err)
	}
	p.mu.Lock()
	st := p.status
	p.mu.Unlock()
	if st != from || sb == nil {
		return nil, grpcErr(fmt.Errorf("%s container %s: it is %s, not %s: %w", verb, id,
			strings.ToLower(st.String()), strings.ToLower(from.String()), errdefs.ErrFailedPrecondition))
	}
	if pause {
		_, err = sb.Agent.PauseContainer(ctx, &api.PauseContainerRequest{ContainerId: id})
	} else {
		_, err = sb.Agent.ResumeContainer(ctx, &api.ResumeContainerRequest{ContainerId: id})
	}
	if err != nil {
		return nil, grpcErr(fmt.Errorf("%s container %s: %w", verb, id, s.agentErr(id, "", sb, err)))
	}
	p.mu.Lock()
	changed := p.status == from // not exited (or changed by another call) meanwhile
	if changed {
		p.status = to
	}
	p.mu.Unlock()
	if !changed {
		return &ptypes.Empty{}, nil
	}
	if pause {
		s.publish(ctx, runtime.TaskPausedEventTopic, &eventstypes.TaskPaused{ContainerID: id})
	} else {
		s.publish(ctx, runtime.TaskResumedEventTopic, &eventstypes.TaskResumed{ContainerID: id})
	}
	return &ptypes.Empty{}, nil
}

// Checkpoint is not supported.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, grpcErr(fmt.Errorf("checkpoint of a Coffer task: %w", errdefs.ErrNotImplemented))
}

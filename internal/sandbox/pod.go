package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/hypervisor"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ContainerID is the id of the single container of a `coffer run` pod.
const ContainerID = "main"

// PodRequest is everything needed to run a one-container pod.
type PodRequest struct {
	Name        string            `json:"name"`
	Rootfs      string            `json:"rootfs"`
	RootfsType  string            `json:"rootfs_type,omitempty"`
	Spec        *specs.Spec       `json:"spec"`
	Kernel      string            `json:"kernel"`
	Initrd      string            `json:"initrd"`
	Cmdline     string            `json:"cmdline"`
	MemoryMiB   int               `json:"memory_mib"`
	VCPUs       int               `json:"vcpus"`
	Accel       hypervisor.Accel  `json:"accel,omitempty"`
	MachineType string            `json:"machine_type,omitempty"`
	GuestSysctl map[string]string `json:"guest_sysctl,omitempty"`
	AgentDebug  bool              `json:"agent_debug,omitempty"`
	// Transport is the agent transport (Config.Transport).
	Transport   string        `json:"transport,omitempty"`
	BootTimeout time.Duration `json:"boot_timeout,omitempty"`
	// StartNow starts the container's process with its creation (one
	// round trip less); Pod.Start then only records the pod as running.
	// The process's output waits in the guest until it is read.
	StartNow bool `json:"start_now,omitempty"`
	// Volumes are host paths shared with the container over virtio-fs;
	// a pod with volumes gets a shared filesystem (and shared guest RAM).
	Volumes []Volume `json:"volumes,omitempty"`
}

// Pod is a running one-container pod owned by this process.
type Pod struct {
	Dir     string
	State   *State
	Sandbox *Sandbox
	log     *slog.Logger
	stop    context.CancelFunc // stops the proxy
	proxyCh chan error
	started bool // the process was started with its creation
}

// StartPod builds the rootfs disk, boots the VM, creates the sandbox and
// the container (started too with req.StartNow) and serves the agent proxy socket. dir
// is the pod directory (CreatePodDir). On failure the VM and the pod
// directory are removed.
func StartPod(ctx context.Context, dir string, req *PodRequest, detached bool, log *slog.Logger) (_ *Pod, err error) {
	st := &State{
		Name: req.Name, ID: req.Name, Status: StatusStarting, Created: time.Now().UTC(),
		Command: req.Spec.Process.Args, Rootfs: req.Rootfs, Detached: detached,
		OwnerPID: os.Getpid(), OwnerStart: ProcessStart(os.Getpid()),
	}
	if old, rerr := ReadState(dir); rerr == nil {
		st.Created, st.Request = old.Created, old.Request
	}
	p := &Pod{Dir: dir, State: st, log: log}
	defer func() {
		if err != nil {
			p.teardown(false, false)
		}
	}()
	if err := WriteState(dir, st); err != nil {
		return nil, err
	}
	img := filepath.Join(dir, "rootfs.img")
	fstype := req.RootfsType
	if fstype == "" {
		fstype = FSErofs
	}
	t0 := time.Now()
	if err := BuildRootfsImage(ctx, req.Rootfs, img, fstype); err != nil {
		return nil, err
	}
	log.Debug("rootfs image built", "fstype", fstype, "took", time.Since(t0))
	sb, err := Start(ctx, Config{
		ID: req.Name, StateDir: dir, Kernel: req.Kernel, Initrd: req.Initrd, Cmdline: req.Cmdline,
		MemoryMiB: req.MemoryMiB, VCPUs: req.VCPUs, Accel: req.Accel, MachineType: req.MachineType,
		Disks:       []hypervisor.Disk{{Serial: "rootfs0", Path: img, ReadOnly: true}},
		BootTimeout: req.BootTimeout, AgentDebug: req.AgentDebug, Transport: req.Transport, Log: log,
		SharedFS: len(req.Volumes) > 0,
	})
	if err != nil {
		return nil, err
	}
	p.Sandbox = sb
	st.QEMUPID, st.Accel = sb.PID(), string(sb.Accel())
	if err := WriteState(dir, st); err != nil {
		return nil, err
	}
	hostname := req.Spec.Hostname
	if hostname == "" {
		hostname = req.Name
	}
	if err := sb.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: req.Name, Hostname: hostname, Sysctls: req.GuestSysctl}); err != nil {
		return nil, fmt.Errorf("create the sandbox in the guest: %w", sb.Explain(AgentError(err)))
	}
	var vols []*api.SharedVolume
	for _, v := range req.Volumes {
		m, sv, err := sb.AddVolume(ContainerID, v)
		if err != nil {
			return nil, err
		}
		req.Spec.Mounts = append(req.Spec.Mounts, m)
		vols = append(vols, sv)
	}
	proxy, err := ListenProxy(ProxySocket(dir))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			proxy.Close()
		}
	}()
	create, what := sb.CreateContainer, "create"
	if req.StartNow {
		create, what = sb.RunContainer, "create and start"
	}
	if err := create(ctx, ContainerID, req.Spec, "rootfs0", fstype, vols...); err != nil {
		return nil, fmt.Errorf("%s the container: %w", what, err)
	}
	p.started = req.StartNow
	pctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	p.proxyCh = make(chan error, 1)
	go func() { p.proxyCh <- ServeProxy(pctx, proxy, sb.Agent) }()
	return p, nil
}

// Start runs the container's command and records the pod as running.
func (p *Pod) Start(ctx context.Context) error {
	if p.started {
		p.State.Status = StatusRunning
		return WriteState(p.Dir, p.State)
	}
	if _, err := p.Sandbox.Agent.StartContainer(ctx, &api.StartContainerRequest{ContainerId: ContainerID}); err != nil {
		return fmt.Errorf("start the container: %w", p.Sandbox.Explain(AgentError(err)))
	}
	p.State.Status = StatusRunning
	return WriteState(p.Dir, p.State)
}

// Wait waits for the container to exit, or for the VM to die.
func (p *Pod) Wait(ctx context.Context) (*api.WaitProcessResponse, error) {
	type res struct {
		r   *api.WaitProcessResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := p.Sandbox.Agent.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: ContainerID})
		ch <- res{r, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			select {
			case <-p.Sandbox.Done():
				return nil, p.Sandbox.VMError()
			case <-time.After(3 * time.Second):
				// A closed agent connection is mostly a VM that is
				// dying: QEMU's exit can take a moment to be reaped on
				// a loaded host, and its cause is the useful message.
			}
			return nil, fmt.Errorf("wait for the container: %w", r.err)
		}
		return r.r, nil
	case <-p.Sandbox.Done():
		return nil, p.Sandbox.VMError()
	}
}

// Close stops the VM. With keep (detached pods), the pod directory stays
// with the exit status recorded, for `coffer ps` until `coffer rm`;
// otherwise the directory is removed. exit is the container's status once
// it has exited (nil if it never ran): then the VM is discarded rather
// than shut down through the agent (see Sandbox.Discard).
func (p *Pod) Close(exit *int, keep bool) {
	if keep {
		p.State.ExitStatus = exit
		if exit != nil {
			// Recorded before the teardown (proxy drain, VM stop), so
			// that `coffer kill x && coffer rm x` sees the exit at once.
			p.State.Status = StatusExited
			if err := WriteState(p.Dir, p.State); err != nil {
				p.log.Warn("record pod exit", "err", err)
			}
		}
	}
	p.teardown(keep, exit != nil)
}

func (p *Pod) teardown(keep, exited bool) {
	if p.stop != nil {
		p.stop()
		<-p.proxyCh
	}
	if p.Sandbox != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		stop := p.Sandbox.Stop
		if exited {
			stop = p.Sandbox.Discard
		}
		if err := stop(ctx); err != nil {
			p.log.Warn("stop the pod VM", "err", err)
		}
		cancel()
	}
	if keep {
		p.State.Status = StatusExited
		p.State.QEMUPID = 0
		_ = os.Remove(filepath.Join(p.Dir, "rootfs.img"))
		if err := WriteState(p.Dir, p.State); err != nil {
			p.log.Warn("record pod exit", "err", err)
		}
		return
	}
	if err := RemoveTree(p.Dir); err != nil {
		p.log.Warn("remove pod dir", "err", err)
	}
}

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/hypervisor"
	"github.com/coffer-project/coffer/internal/hypervisor/qemu"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Virtio-serial port names; the agent looks for the same names.
const (
	agentPort = "coffer.agent"
	logPort   = "coffer.log"
)

// DefaultBootTimeout bounds the time from starting QEMU to the agent
// answering. TCG boots take a few seconds; slow CI machines more.
const DefaultBootTimeout = 60 * time.Second

// Config describes the pod VM.
type Config struct {
	ID string
	// StateDir is the pod's directory; the VM's sockets and logs live in
	// StateDir/vm.
	StateDir string
	Kernel   string
	Initrd   string
	Cmdline  string
	// MemoryMiB and VCPUs size the VM (defaults 256 MiB, 1).
	MemoryMiB, VCPUs int
	Accel            hypervisor.Accel
	QEMUPath         string
	MachineType      string
	Disks            []hypervisor.Disk
	// HotplugSlots is the number of PCIe root ports for disks added
	// later with AddDisk (q35 only; 0: none).
	HotplugSlots int
	BootTimeout  time.Duration
	// AgentDebug turns on debug logging in the guest agent.
	AgentDebug bool
	// Transport is how the host reaches the agent: TransportSerial,
	// TransportVsock (needs /dev/vhost-vsock; Start fails without it) or
	// TransportAuto, which is serial (see chooseTransport).
	Transport string
	// SharedFS gives the pod a virtio-fs share for volumes (AddVolume):
	// virtiofsd runs beside QEMU and guest RAM becomes a shared memfd.
	// Volumes cannot be added to a pod started without it.
	SharedFS bool
	// VirtiofsdPath is the virtiofsd binary (DefaultVirtiofsd when empty).
	VirtiofsdPath string
	Log           *slog.Logger
}

// Sandbox is a running pod VM with a connected agent.
type Sandbox struct {
	ID    string
	Agent api.AgentService
	// Info is what the agent reported when it came up.
	Info *api.CheckResponse
	// BootTime is from starting QEMU to the agent's first answer.
	BootTime time.Duration

	vm     *qemu.VM
	client *ttrpc.Client
	log    *slog.Logger
	share  *sharedFS // nil without Config.SharedFS
}

// VMDir is where the VM's sockets and logs live for a pod dir.
func VMDir(stateDir string) string { return filepath.Join(stateDir, "vm") }

// Start boots the VM and waits for the agent. On failure nothing is left
// running and the VM directory is removed; the error quotes the guest
// console.
func Start(ctx context.Context, cfg Config) (*Sandbox, error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = DefaultBootTimeout
	}
	cmdline := cfg.Cmdline
	if cfg.AgentDebug {
		cmdline += " coffer.log=debug"
	}
	transport, err := CheckTransport(cfg.Transport)
	if err != nil {
		return nil, err
	}
	var cid uint32
	// Free page reporting: pages the guest frees (boot-time buffers, the
	// unpacked initramfs archive, exited containers) go back to the host,
	// so an idle pod costs what it uses, not what it once touched.
	extra := []string{"-device", "virtio-balloon-pci,free-page-reporting=on"}
	if transport == TransportVsock {
		cid = newGuestCID()
		extra = append(extra, vsockArgs(cid)...)
		cmdline += " " + vsockCmdline
	}
	vmDir := VMDir(cfg.StateDir)
	hv := hypervisor.Config{
		ID:        cfg.ID,
		StateDir:  vmDir,
		QEMUPath:  cfg.QEMUPath,
		Kernel:    cfg.Kernel,
		Initrd:    cfg.Initrd,
		Cmdline:   strings.TrimSpace(cmdline),
		MemoryMiB: cfg.MemoryMiB,
		VCPUs:     cfg.VCPUs,
		Accel:     cfg.Accel,
		// The KVM probe boot runs once per host, not once per pod.
		AccelCacheDir: filepath.Join(RuntimeDir(), "accel"),
		MachineType:   cfg.MachineType,
		Disks:         cfg.Disks,
		HotplugSlots:  cfg.HotplugSlots,
		ExtraArgs:     extra,
		Ports: []hypervisor.Port{
			{Name: agentPort, Kind: hypervisor.PortSocket},
			{Name: logPort, Kind: hypervisor.PortFile, Path: filepath.Join(vmDir, "agent.log")},
		},
	}
	start := time.Now()
	var share *sharedFS
	if cfg.SharedFS {
		if share, err = startShare(cfg, log); err != nil {
			return nil, err
		}
		hv.SharedMemory = true
		hv.FS = []hypervisor.FSDevice{{Tag: SharedFSTag, Socket: share.vfsd.socket}}
	}
	vm, err := qemu.Start(ctx, hv, log)
	if err != nil {
		if share != nil {
			if cerr := share.close(context.Background()); cerr != nil {
				log.Warn("clean up the shared directory", "err", cerr)
			}
		}
		return nil, fmt.Errorf("start the pod VM: %w", err)
	}
	s := &Sandbox{ID: cfg.ID, vm: vm, log: log, share: share}
	fail := func(err error) (*Sandbox, error) {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = vm.Stop(sctx)
		if s.client != nil {
			s.client.Close()
		}
		s.closeShare(sctx)
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, cfg.BootTimeout)
	defer cancel()
	var conn net.Conn
	if transport == TransportVsock {
		conn, err = dialVsock(bctx, cid, vm.Done())
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "unix", vm.PortPath(agentPort))
	}
	if err != nil {
		return fail(fmt.Errorf("connect to the agent: %w", err))
	}
	s.client = ttrpc.NewClient(conn)
	s.Agent = api.NewAgentClient(s.client)
	type checkRes struct {
		r   *api.CheckResponse
		err error
	}
	ch := make(chan checkRes, 1)
	go func() {
		r, err := s.Agent.Check(bctx, &api.CheckRequest{})
		ch <- checkRes{r, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			if bctx.Err() != nil && ctx.Err() == nil {
				return fail(fmt.Errorf("the guest agent did not answer within %s (accelerator %s); last console lines:\n%s",
					cfg.BootTimeout, vm.Accel(), indent(vm.ConsoleTail(15))))
			}
			// A connection closed under us is mostly a VM that died:
			// say why, with its console.
			if verr := s.explain(res.err, "the VM exited while booting"); verr != res.err {
				return fail(verr)
			}
			return fail(fmt.Errorf("wait for the guest agent: %w; last console lines:\n%s", res.err, indent(vm.ConsoleTail(15))))
		}
		s.Info = res.r
	case <-vm.Done():
		return fail(s.vmError("the VM exited while booting"))
	}
	s.BootTime = time.Since(start)
	log.Info("pod VM ready", "id", cfg.ID, "accel", vm.Accel(), "transport", transport, "boot", s.BootTime.Round(time.Millisecond),
		"guest_kernel", s.Info.KernelRelease, "agent", s.Info.AgentVersion, "qemu_pid", vm.PID())
	return s, nil
}

// CreateSandbox sends CreateSandbox with the host's clock, which the agent
// sets the guest's clock to.
func (s *Sandbox) CreateSandbox(ctx context.Context, req *api.CreateSandboxRequest) error {
	req.HostTimeUnixNano = time.Now().UnixNano()
	_, err := s.Agent.CreateSandbox(ctx, req)
	return err
}

func indent(s string) string {
	if s == "" {
		return "    (console is empty)"
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// vmError describes why the VM is gone, with the guest console's last lines.
func (s *Sandbox) vmError(what string) error {
	cause := "qemu exited"
	if err := s.vm.ExitErr(); err != nil {
		cause = err.Error()
	}
	tail := strings.TrimSpace(s.vm.ConsoleTail(10))
	if tail == "" {
		return fmt.Errorf("%s: %s (the guest console is empty)", what, cause)
	}
	return fmt.Errorf("%s: %s; last console lines:\n%s", what, cause, indent(tail))
}

// Explain returns a description of the VM's death if err happened because
// the VM went away (the agent connection closes first, so wait a moment
// for QEMU's exit), else err unchanged.
func (s *Sandbox) Explain(err error) error { return s.explain(err, vmExitedUnexpectedly) }

// explain is Explain with what to call the VM's exit.
func (s *Sandbox) explain(err error, what string) error {
	if err == nil {
		return nil
	}
	select {
	case <-s.vm.Done():
		return s.vmError(what)
	case <-time.After(300 * time.Millisecond):
		return err
	}
}

const vmExitedUnexpectedly = "the pod VM exited unexpectedly"

// Done is closed when the VM has exited.
func (s *Sandbox) Done() <-chan struct{} { return s.vm.Done() }

// VMError explains an unexpected VM exit (call after Done is closed).
func (s *Sandbox) VMError() error { return s.vmError(vmExitedUnexpectedly) }

// PID is the QEMU process id.
func (s *Sandbox) PID() int { return s.vm.PID() }

// ShutdownReason is how the VM ended once Done is closed: "guest-shutdown"
// after the agent powered the guest off, "host-qmp-quit" after a QMP quit,
// "" if QEMU reported nothing (killed) or still runs.
func (s *Sandbox) ShutdownReason() string { return s.vm.ShutdownReason() }

// Accel is the accelerator the VM runs with.
func (s *Sandbox) Accel() hypervisor.Accel { return s.vm.Accel() }

// Stop shuts the pod down: the agent removes every container and powers
// the VM off; if that does not happen in time QEMU is told to quit and
// finally killed. The VM directory is removed. Stop is idempotent.
func (s *Sandbox) Stop(ctx context.Context) error { return s.end(ctx, true) }

// Discard ends a pod whose guest holds nothing worth saving: its
// containers have exited (or are to be killed anyway), its root
// filesystems are read-only disks under a tmpfs overlay, and it has no
// shared filesystem the guest could still owe writes to. QEMU is told to
// quit at once, skipping the agent's DestroySandbox and the guest's power
// off (what they would do — SIGKILL every process, sync a tmpfs — changes
// nothing the host keeps). A pod with shared volumes ends as with Stop.
func (s *Sandbox) Discard(ctx context.Context) error { return s.end(ctx, s.share != nil) }

// end stops the VM, first through the agent (DestroySandbox with power
// off) when viaAgent, then QMP quit, then SIGKILL; it removes the VM
// directory and the share.
func (s *Sandbox) end(ctx context.Context, viaAgent bool) error {
	select {
	case <-s.vm.Done():
	default:
		if viaAgent {
			s.powerOff(ctx)
		}
	}
	s.client.Close()
	err := s.vm.Stop(ctx)
	s.closeShare(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("stop the pod VM: %w", err)
	}
	return nil
}

// powerOff asks the agent to destroy the sandbox and power off, and waits
// a while for the VM to go.
func (s *Sandbox) powerOff(ctx context.Context) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := s.Agent.DestroySandbox(actx, &api.DestroySandboxRequest{PowerOff: true})
	cancel()
	if err != nil {
		return
	}
	select {
	case <-s.vm.Done():
	case <-time.After(5 * time.Second):
		s.log.Warn("the VM did not power off in time; stopping it", "id", s.ID)
	case <-ctx.Done():
	}
}

// Kill ends the VM at once and cleans up.
func (s *Sandbox) Kill() error {
	s.client.Close()
	_ = s.vm.Kill()
	err := s.vm.Cleanup()
	s.closeShare(context.Background())
	return err
}

// startShare sets up the pod's shared directory and starts virtiofsd on
// it; on failure nothing is left.
func startShare(cfg Config, log *slog.Logger) (*sharedFS, error) {
	share, err := setupShare(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	share.vfsd, err = startVirtiofsd(cfg.VirtiofsdPath, filepath.Join(cfg.StateDir, "virtiofsd"), share.shared, log)
	if err != nil {
		if cerr := share.close(context.Background()); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return share, nil
}

// closeShare stops virtiofsd and unmounts the volumes (the VM must be
// gone). Failures are logged: they leave mounts the pod dir removal
// refuses to delete through.
func (s *Sandbox) closeShare(ctx context.Context) {
	if s.share == nil {
		return
	}
	if err := s.share.close(ctx); err != nil {
		s.log.Warn("clean up the pod's shared directory", "id", s.ID, "err", err)
		return
	}
	_ = os.RemoveAll(filepath.Join(filepath.Dir(s.share.mounts), "virtiofsd"))
	s.share = nil
}

// HasSharedFS reports whether volumes can be added to the pod.
func (s *Sandbox) HasSharedFS() bool { return s.share != nil }

// AddVolume shares v with the guest and returns the OCI mount and the
// agent's volume entry that deliver it to a container. owner names the
// container for ReleaseVolumes. The pod needs Config.SharedFS.
func (s *Sandbox) AddVolume(owner string, v Volume) (specs.Mount, *api.SharedVolume, error) {
	if s.share == nil {
		return specs.Mount{}, nil, fmt.Errorf("volume %s: pod %s was started without a shared filesystem, so volumes cannot be added to it (the shim starts pods with one when the config sets shared_fs = true)", v.Source, s.ID)
	}
	name, err := s.share.add(owner, v)
	if err != nil {
		return specs.Mount{}, nil, err
	}
	return VolumeMount(name, v), &api.SharedVolume{Name: name, Readonly: v.ReadOnly}, nil
}

// ReleaseVolumes unmounts the host side of owner's volumes (after the
// container is gone from the guest).
func (s *Sandbox) ReleaseVolumes(owner string) error {
	if s.share == nil {
		return nil
	}
	return s.share.release(owner)
}

// AddDisk hot-plugs d into the running VM; the guest sees it as a
// virtio-blk disk with serial d.Serial. The VM needs Config.HotplugSlots.
func (s *Sandbox) AddDisk(ctx context.Context, d hypervisor.Disk) error {
	if err := s.vm.HotplugDisk(ctx, d); err != nil {
		return fmt.Errorf("add disk %s to pod %s: %w", d.Serial, s.ID, err)
	}
	return nil
}

// RemoveDisk hot-unplugs the disk with serial from the VM; the guest must
// have stopped using it.
func (s *Sandbox) RemoveDisk(ctx context.Context, serial string) error {
	if err := s.vm.UnplugDisk(ctx, serial); err != nil {
		return fmt.Errorf("remove disk %s from pod %s: %w", serial, s.ID, err)
	}
	return nil
}

// CreateContainer creates container id from spec in the guest, its rootfs
// being the read-only disk with the given serial and filesystem. An error
// explains a VM that died meanwhile.
func (s *Sandbox) CreateContainer(ctx context.Context, id string, spec *specs.Spec, serial, fstype string, volumes ...*api.SharedVolume) error {
	return s.createContainer(ctx, id, spec, serial, fstype, false, volumes)
}

// RunContainer is CreateContainer and StartContainer in one round trip.
func (s *Sandbox) RunContainer(ctx context.Context, id string, spec *specs.Spec, serial, fstype string, volumes ...*api.SharedVolume) error {
	return s.createContainer(ctx, id, spec, serial, fstype, true, volumes)
}

func (s *Sandbox) createContainer(ctx context.Context, id string, spec *specs.Spec, serial, fstype string, start bool, volumes []*api.SharedVolume) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode the OCI spec: %w", err)
	}
	_, err = s.Agent.CreateContainer(ctx, &api.CreateContainerRequest{
		ContainerId: id, OciSpec: b,
		Rootfs:  &api.Storage{Driver: "blk", Source: serial, Fstype: fstype},
		Volumes: volumes,
		Start:   start,
	})
	return s.Explain(AgentError(err))
}

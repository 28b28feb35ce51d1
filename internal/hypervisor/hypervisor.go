package hypervisor

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// Accel is the accelerator a VM runs with.
type Accel string

const (
	// AccelAuto lets DetectAccel (or the driver, which calls it) decide.
	AccelAuto Accel = ""
	// AccelKVM runs the guest on hardware virtualisation through /dev/kvm.
	AccelKVM Accel = "kvm"
	// AccelTCG emulates the guest CPU in software (QEMU's Tiny Code
	// Generator): slower, but works on any host.
	AccelTCG Accel = "tcg"
)

// ParseAccel turns a user-supplied string ("kvm", "tcg", "auto" or "") into an
// Accel. Matching ignores case and surrounding space.
func ParseAccel(s string) (Accel, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return AccelAuto, nil
	case "kvm":
		return AccelKVM, nil
	case "tcg":
		return AccelTCG, nil
	}
	return AccelAuto, fmt.Errorf("unknown accelerator %q: use kvm, tcg or auto", s)
}

// Disk is a host file exposed to the guest as a virtio block device.
type Disk struct {
	// Serial is the virtio-blk serial the guest sees (at most 20 bytes); the
	// guest finds the disk by it under /dev/disk/by-id/virtio-<Serial>.
	Serial string
	// Path is the host file (or block device) backing the disk.
	Path string
	// ReadOnly exposes the disk read-only to the guest and opens the file
	// read-only on the host.
	ReadOnly bool
	// Format is the image format; "raw" when empty.
	Format string
	// Cache is QEMU's cache mode (writeback, none, unsafe, directsync,
	// writethrough); "writeback" when empty. "none" needs O_DIRECT, which
	// tmpfs does not support.
	Cache string
}

// PortKind says what backs a virtio-serial port on the host side.
type PortKind string

const (
	// PortSocket is a unix socket server that QEMU listens on; the host
	// side connects to it to talk to the guest.
	PortSocket PortKind = "socket"
	// PortFile appends everything the guest writes to the port to a file.
	PortFile PortKind = "file"
)

// Port is a virtio-serial port.
type Port struct {
	// Name is the port name the guest sees (/dev/virtio-ports/<Name>),
	// e.g. "coffer.agent".
	Name string
	// Kind is PortSocket or PortFile.
	Kind PortKind
	// Path is the host socket or file. When empty the driver picks a path
	// inside Config.StateDir; VM.PortPath reports it.
	Path string
}

// Config describes one VM. Zero values get the defaults documented on each
// field (see WithDefaults).
type Config struct {
	// ID names the VM in logs and in the QEMU process arguments. Defaults
	// to the base name of StateDir.
	ID string
	// StateDir is the per-VM directory holding the QMP socket, default
	// port sockets and logs. Start creates it; it must not exist or be
	// empty. Cleanup removes it.
	StateDir string
	// QEMUPath is the QEMU binary; "qemu-system-x86_64" looked up in PATH
	// when empty.
	QEMUPath string

	// Kernel, Initrd and Cmdline are used for direct kernel boot. Kernel is
	// required. Cmdline is passed verbatim: include console=ttyS0 to get
	// kernel messages in the console log.
	Kernel, Initrd, Cmdline string

	// MemoryMiB is guest RAM in MiB (default 256); VCPUs the number of
	// virtual CPUs (default 1).
	MemoryMiB, VCPUs int

	// Accel is the accelerator; AccelAuto runs DetectAccel (honouring
	// COFFER_ACCEL) with AccelCacheDir as its cache.
	Accel Accel
	// AccelCacheDir caches the KVM probe result when Accel is AccelAuto.
	// Empty disables the cache (the probe then runs on every start on
	// hosts that pass the cheap KVM checks). Callers starting many VMs
	// should call DetectAccel once and set Accel instead.
	AccelCacheDir string
	// MachineType is the QEMU machine: q35 (default), pc or microvm.
	MachineType string
	// TCGCacheMiB bounds QEMU's translated-code buffer under TCG
	// (tb-size; default DefaultTCGCacheMiB). QEMU's own default reserves
	// 1 GiB, of which a booted guest touches ~66 MiB and a busy one more:
	// host memory per pod. Smaller saves memory but costs boot time (see
	// docs/architecture.md). Ignored under KVM.
	TCGCacheMiB int

	// Disks become virtio-blk devices, in order.
	Disks []Disk
	// Ports become virtserialport devices on one virtio-serial controller.
	Ports []Port
	// HotplugSlots is how many disks can be hot-plugged into the running
	// VM at once (0..MaxHotplugSlots, default 0 = none). On q35 each slot
	// is a pcie-root-port created at boot, since q35 has no hotplug on its
	// root bus; other machine types do not support it.
	HotplugSlots int

	// ConsoleLog receives the guest serial console (ttyS0); default
	// <StateDir>/console.log. Output is appended.
	ConsoleLog string
	// KeepLogs makes Cleanup keep console.log and qemu.log (and StateDir
	// itself) while still removing sockets.
	KeepLogs bool

	// SharedMemory backs guest RAM with a shared memfd instead of private
	// anonymous memory. vhost-user devices (virtio-fs) need it: their
	// backend process maps guest RAM.
	SharedMemory bool
	// FS are virtio-fs devices served by vhost-user backends (virtiofsd);
	// they need SharedMemory.
	FS []FSDevice

	// ExtraArgs are appended to the QEMU command line as-is.
	ExtraArgs []string
}

// FSDevice is a virtio-fs device whose backend (virtiofsd) listens on a
// unix socket.
type FSDevice struct {
	// Tag is the name the guest mounts (mount -t virtiofs <Tag> DIR), at
	// most 36 bytes.
	Tag string
	// Socket is the backend's vhost-user socket; it must accept a
	// connection when QEMU starts.
	Socket string
}

// maxFSTag is the size of the virtio-fs config's tag field.
const maxFSTag = 36

// Defaults applied by WithDefaults.
const (
	DefaultQEMU        = "qemu-system-x86_64"
	DefaultMemoryMiB   = 256
	DefaultVCPUs       = 1
	DefaultMachineType = "q35"
	DefaultTCGCacheMiB = 64
	DefaultDiskFormat  = "raw"
	DefaultDiskCache   = "writeback"
)

// CPUModel is QEMU's -cpu for an accelerator: the host's CPU under KVM;
// under TCG the emulated "max" CPU without ERMS and FSRM. With those two
// flags the guest kernel copies and clears memory with `rep movsb` /
// `rep stosb`, which TCG emulates one byte per iteration; without them it
// uses 8-byte moves and unrolled loops (initramfs unpack 63–69 ms instead
// of 101–127 ms; raw boot to init paired A/B −163 ms median, `coffer run`
// −80 ms, 2026-11-27).
func CPUModel(accel Accel) string {
	if accel == AccelKVM {
		return "host"
	}
	return "max,-erms,-fsrm"
}

// WithDefaults returns a copy of c with every empty field that has a default
// filled in. Slices are copied so the result can be changed freely.
func (c Config) WithDefaults() Config {
	if c.QEMUPath == "" {
		c.QEMUPath = DefaultQEMU
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.VCPUs == 0 {
		c.VCPUs = DefaultVCPUs
	}
	if c.MachineType == "" {
		c.MachineType = DefaultMachineType
	}
	if c.TCGCacheMiB == 0 {
		c.TCGCacheMiB = DefaultTCGCacheMiB
	}
	if c.ID == "" && c.StateDir != "" {
		c.ID = filepath.Base(c.StateDir)
	}
	if c.ConsoleLog == "" && c.StateDir != "" {
		c.ConsoleLog = filepath.Join(c.StateDir, "console.log")
	}
	c.Disks = append([]Disk(nil), c.Disks...)
	for i := range c.Disks {
		if c.Disks[i].Format == "" {
			c.Disks[i].Format = DefaultDiskFormat
		}
		if c.Disks[i].Cache == "" {
			c.Disks[i].Cache = DefaultDiskCache
		}
	}
	c.Ports = append([]Port(nil), c.Ports...)
	c.FS = append([]FSDevice(nil), c.FS...)
	c.ExtraArgs = append([]string(nil), c.ExtraArgs...)
	return c
}

// MaxHotplugSlots bounds Config.HotplugSlots.
const MaxHotplugSlots = 32

// maxVirtioBlkSerial is VIRTIO_BLK_ID_BYTES: the guest sees at most this many
// bytes of a disk serial.
const maxVirtioBlkSerial = 20

// Validate reports the first problem that would stop a VM from starting, as
// an actionable error. Call it on the result of WithDefaults.
func (c Config) Validate() error {
	if c.StateDir == "" {
		return fmt.Errorf("vm config: StateDir is empty: set a per-VM state directory")
	}
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("vm config: StateDir %q is not absolute: use an absolute path", c.StateDir)
	}
	if c.TCGCacheMiB < 0 || c.TCGCacheMiB > 4096 {
		return fmt.Errorf("vm %s: TCGCacheMiB=%d is out of range: use 1-4096 MiB (or 0 for the default %d)", c.ID, c.TCGCacheMiB, DefaultTCGCacheMiB)
	}
	if c.Kernel == "" {
		return fmt.Errorf("vm %s: Kernel is empty: direct kernel boot needs a kernel image (build one with `coffer guest build`)", c.ID)
	}
	if c.MemoryMiB < 16 {
		return fmt.Errorf("vm %s: MemoryMiB=%d is too small: use at least 16", c.ID, c.MemoryMiB)
	}
	if c.VCPUs < 1 {
		return fmt.Errorf("vm %s: VCPUs=%d: use at least 1", c.ID, c.VCPUs)
	}
	switch c.Accel {
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return fmt.Errorf("vm %s: unknown accelerator %q: use kvm, tcg or leave empty for auto", c.ID, c.Accel)
	}
	if c.HotplugSlots < 0 || c.HotplugSlots > MaxHotplugSlots {
		return fmt.Errorf("vm %s: HotplugSlots=%d: use 0 to %d", c.ID, c.HotplugSlots, MaxHotplugSlots)
	}
	if machine, _, _ := strings.Cut(c.MachineType, ","); c.HotplugSlots > 0 && machine != "q35" {
		return fmt.Errorf("vm %s: HotplugSlots=%d needs MachineType q35, not %q: disk hot-plug uses PCIe root ports, which %s lacks (use q35 or set HotplugSlots to 0)", c.ID, c.HotplugSlots, c.MachineType, machine)
	}
	serials := map[string]bool{}
	for i, d := range c.Disks {
		if d.Path == "" {
			return fmt.Errorf("vm %s: disk %d has no Path", c.ID, i)
		}
		if d.Serial == "" {
			return fmt.Errorf("vm %s: disk %d (%s) has no Serial: the guest finds disks by serial", c.ID, i, d.Path)
		}
		if len(d.Serial) > maxVirtioBlkSerial {
			return fmt.Errorf("vm %s: disk serial %q is %d bytes: virtio-blk serials are at most %d bytes", c.ID, d.Serial, len(d.Serial), maxVirtioBlkSerial)
		}
		if serials[d.Serial] {
			return fmt.Errorf("vm %s: disk serial %q is used twice: serials must be unique", c.ID, d.Serial)
		}
		serials[d.Serial] = true
	}
	tags := map[string]bool{}
	for i, f := range c.FS {
		if !c.SharedMemory {
			return fmt.Errorf("vm %s: virtio-fs device %q needs SharedMemory: its vhost-user backend maps guest RAM", c.ID, f.Tag)
		}
		if f.Tag == "" || len(f.Tag) > maxFSTag || strings.ContainsAny(f.Tag, ",\x00") {
			return fmt.Errorf("vm %s: virtio-fs device %d has tag %q: use 1 to %d bytes without ','", c.ID, i, f.Tag, maxFSTag)
		}
		if f.Socket == "" {
			return fmt.Errorf("vm %s: virtio-fs device %q has no Socket", c.ID, f.Tag)
		}
		if tags[f.Tag] {
			return fmt.Errorf("vm %s: virtio-fs tag %q is used twice", c.ID, f.Tag)
		}
		tags[f.Tag] = true
	}
	names := map[string]bool{}
	for i, p := range c.Ports {
		if p.Name == "" {
			return fmt.Errorf("vm %s: port %d has no Name", c.ID, i)
		}
		if strings.ContainsAny(p.Name, "/\x00") {
			return fmt.Errorf("vm %s: port name %q contains '/': the guest exposes ports as /dev/virtio-ports/<name>", c.ID, p.Name)
		}
		if names[p.Name] {
			return fmt.Errorf("vm %s: port name %q is used twice", c.ID, p.Name)
		}
		names[p.Name] = true
		switch p.Kind {
		case PortSocket, PortFile:
		default:
			return fmt.Errorf("vm %s: port %q has kind %q: use %q or %q", c.ID, p.Name, p.Kind, PortSocket, PortFile)
		}
	}
	return nil
}

// VM is a running virtual machine, as every driver exposes it.
type VM interface {
	// PID is the hypervisor process id.
	PID() int
	// Accel is the accelerator the VM runs with.
	Accel() Accel
	// Done is closed once the hypervisor process has exited and been reaped.
	Done() <-chan struct{}
	// ExitErr says why the VM ended, once Done is closed: nil for a clean
	// guest poweroff or a requested quit.
	ExitErr() error
	// ShutdownReason is how the VM ended, once Done is closed:
	// "guest-shutdown" when the guest powered itself off, "host-qmp-quit"
	// when the host told it to quit, another QMP SHUTDOWN reason, or ""
	// when the hypervisor reported none (killed, crashed, still running).
	ShutdownReason() string
	// Stop shuts the VM down (gracefully, then forcibly) and cleans up.
	Stop(ctx context.Context) error
	// Kill ends the hypervisor process immediately.
	Kill() error
	// Cleanup removes the VM's state directory.
	Cleanup() error
	// ConsoleTail returns the last n lines of the guest console.
	ConsoleTail(n int) string
	// PortPath returns the host path behind the virtio-serial port name.
	PortPath(name string) string
}

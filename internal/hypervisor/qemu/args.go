package qemu

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/coffer-project/coffer/internal/hypervisor"
)

// Fixed file names inside Config.StateDir.
const (
	qmpSocketName = "qmp.sock"
	qemuLogName   = "qemu.log"
)

// maxSocketPath is the usable length of sun_path (108 bytes with the NUL).
const maxSocketPath = 107

// layout is where one VM's files live.
type layout struct {
	qmp     string
	qemuLog string
	console string
	// ports[i] is the host path of cfg.Ports[i].
	ports []string
}

func newLayout(cfg hypervisor.Config) (layout, error) {
	l := layout{
		qmp:     filepath.Join(cfg.StateDir, qmpSocketName),
		qemuLog: filepath.Join(cfg.StateDir, qemuLogName),
		console: cfg.ConsoleLog,
	}
	sockets := []string{l.qmp}
	for _, p := range cfg.Ports {
		path := p.Path
		if path == "" {
			ext := ".log"
			if p.Kind == hypervisor.PortSocket {
				ext = ".sock"
			}
			path = filepath.Join(cfg.StateDir, "port-"+p.Name+ext)
		}
		l.ports = append(l.ports, path)
		if p.Kind == hypervisor.PortSocket {
			sockets = append(sockets, path)
		}
	}
	for _, f := range cfg.FS {
		sockets = append(sockets, f.Socket)
	}
	for _, s := range sockets {
		if len(s) > maxSocketPath {
			return layout{}, fmt.Errorf("vm %s: unix socket path %s is %d bytes, over the %d-byte limit: use a shorter StateDir (or port Path)", cfg.ID, s, len(s), maxSocketPath)
		}
	}
	return l, nil
}

// machineName is the machine type without its options ("microvm" for
// "microvm,acpi=off").
func machineName(machineType string) string {
	name, _, _ := strings.Cut(machineType, ",")
	return name
}

// virtioSuffix is the virtio transport for the machine: microvm has no PCI
// bus by default, so its devices sit on virtio-mmio ("-device").
func virtioSuffix(machineType string) string {
	if machineName(machineType) == "microvm" {
		return "-device"
	}
	return "-pci"
}

// opt escapes a value for QEMU's key=value option syntax, where a comma is
// written as two commas.
func opt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// AccelArg is the value of QEMU's -accel option: under TCG it bounds the
// translated-code buffer to tcgCacheMiB (QEMU's default reserves 1 GiB).
func AccelArg(accel hypervisor.Accel, tcgCacheMiB int) string {
	if accel == hypervisor.AccelTCG && tcgCacheMiB > 0 {
		return "tcg,tb-size=" + strconv.Itoa(tcgCacheMiB)
	}
	return string(accel)
}

// buildArgs returns QEMU's arguments (without argv[0]) for cfg, which must
// have its defaults applied; accel must be kvm or tcg.
func buildArgs(cfg hypervisor.Config, accel hypervisor.Accel, l layout) []string {
	cpu := hypervisor.CPUModel(accel)
	machine := cfg.MachineType
	var memArgs []string
	if cfg.SharedMemory {
		// vhost-user backends map guest RAM through this memfd.
		machine += ",memory-backend=ram0"
		memArgs = []string{"-object", "memory-backend-memfd,id=ram0,size=" + strconv.Itoa(cfg.MemoryMiB) + "M,share=on"}
	}
	args := []string{
		"-name", "guest=" + opt(cfg.ID),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-no-reboot",
		"-machine", machine,
		"-accel", AccelArg(accel, cfg.TCGCacheMiB),
		"-cpu", cpu,
		"-m", strconv.Itoa(cfg.MemoryMiB),
	}
	args = append(args, memArgs...)
	args = append(args,
		"-smp", strconv.Itoa(cfg.VCPUs),
		"-kernel", cfg.Kernel,
	)
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	if cfg.Cmdline != "" {
		args = append(args, "-append", cfg.Cmdline)
	}
	args = append(args,
		"-chardev", "file,id=con,path="+opt(l.console)+",append=on",
		"-serial", "chardev:con",
		"-qmp", "unix:"+opt(l.qmp)+",server=on,wait=off",
	)
	args = append(args, rootPortArgs(cfg.HotplugSlots)...)
	suffix := virtioSuffix(cfg.MachineType)
	if len(cfg.Ports) > 0 {
		args = append(args, "-device", "virtio-serial"+suffix+",id=vser0")
		for i, p := range cfg.Ports {
			id := fmt.Sprintf("port%d", i)
			switch p.Kind {
			case hypervisor.PortSocket:
				args = append(args, "-chardev", "socket,id="+id+",path="+opt(l.ports[i])+",server=on,wait=off")
			case hypervisor.PortFile:
				args = append(args, "-chardev", "file,id="+id+",path="+opt(l.ports[i])+",append=on")
			}
			args = append(args, "-device", "virtserialport,bus=vser0.0,chardev="+id+",id=v"+id+",name="+opt(p.Name))
		}
	}
	for i, d := range cfg.Disks {
		id := fmt.Sprintf("disk%d", i)
		args = append(args,
			"-drive", "if=none,id="+id+",file="+opt(d.Path)+",format="+opt(d.Format)+",readonly="+onOff(d.ReadOnly)+",cache="+opt(d.Cache),
			"-device", "virtio-blk"+suffix+",drive="+id+",id=v"+id+",serial="+opt(d.Serial),
		)
	}
	for i, f := range cfg.FS {
		id := fmt.Sprintf("fs%d", i)
		// queue-size 1024 as virtiofsd and Kata use: fewer round trips
		// for readahead and large writes than the default 128.
		args = append(args,
			"-chardev", "socket,id="+id+",path="+opt(f.Socket),
			"-device", "vhost-user-fs"+suffix+",chardev="+id+",id=v"+id+",tag="+f.Tag+",queue-size=1024",
		)
	}
	return append(args, cfg.ExtraArgs...)
}

// hotplugBus is the id of the pcie-root-port behind hot-plug slot i.
func hotplugBus(i int) string { return fmt.Sprintf("hp%d", i) }

// rootPortFirstSlot is the first pcie.0 slot holding hot-plug root ports.
// They are packed eight to a slot as functions of multifunction devices, so
// 32 ports take slots 0x08-0x0b and the rest of pcie.0 stays free for
// devices QEMU places itself.
const rootPortFirstSlot = 0x08

// rootPortArgs returns the -device arguments for n hot-plug root ports on
// pcie.0 (q35). Chassis numbers are unique; io-reserve=0 stops the firmware
// reserving I/O space per port (a hot-plugged virtio-blk-pci on PCIe is
// modern-only and has no I/O BAR, and 32 ports would exhaust I/O space).
func rootPortArgs(n int) []string {
	var args []string
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=%d,slot=%d,addr=0x%x.%d,io-reserve=0",
			hotplugBus(i), i+1, i+1, rootPortFirstSlot+i/8, i%8)
		if i%8 == 0 && i+1 < n {
			dev += ",multifunction=on"
		}
		args = append(args, "-device", dev)
	}
	return args
}

// shellQuote renders argv so it can be pasted into a shell, for logs.
func shellQuote(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			b.WriteString(a)
			continue
		}
		b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
	}
	return b.String()
}

// Package qemu is the QEMU driver: it owns the life of one qemu-system-x86_64
// process per pod VM.
//
// Start builds the command line from a hypervisor.Config (direct kernel
// boot, -nodefaults, no display, -no-reboot so a guest poweroff or panic ends
// the process, the serial console appended to a log file, a QMP socket, one
// virtio-serial controller with a port per Config.Ports, virtio-blk disks),
// runs QEMU with its output in <StateDir>/qemu.log, and returns once QMP
// answers, so every socket exists. If QEMU dies during start-up the error
// quotes QEMU's message and the last console lines, and nothing is left
// behind.
//
// The returned VM talks QMP through a small built-in client (one connection;
// responses matched by id; events such as SHUTDOWN recorded so ExitErr can
// tell a clean poweroff from a guest reboot/panic or a kill). Stop asks QEMU
// to quit and falls back to SIGKILL; Kill is immediate; Cleanup removes the
// state directory.
//
// Disk hot-plug (q35 only): Config.HotplugSlots pcie-root-ports (ids
// hp0..hpN-1, packed as functions of pcie.0 slots 0x08-0x0b) are created at
// boot because q35's root bus has no hot-plug. HotplugDisk adds a block node
// (blockdev-add, named after the serial) and a virtio-blk-pci device on a
// free port, rolling the node back if device_add fails. UnplugDisk sends
// device_del, waits (at most DefaultUnplugTimeout) for DEVICE_DELETED,
// which QEMU sends only once the guest has ejected the device (QEMU 7.2 q35
// uses ACPI PCI hot-plug; the guest's built-in acpiphp/pciehp handle it
// with no virtio driver needed), then deletes the node. An unplug the guest
// does not complete leaves the disk attached and can be retried.
//
// No orphans: QEMU runs in its own process group with Pdeathsig=SIGKILL. The
// kernel delivers Pdeathsig when the *thread* that forked the child exits, so
// the fork happens on a goroutine locked to its OS thread that then waits for
// (reaps) the child; that thread lives exactly as long as QEMU. If the owning
// Go process dies for any reason, QEMU is killed.
//
// Machine types: q35 (default) and pc use virtio-*-pci devices; microvm uses
// virtio-*-device (virtio-mmio). MachineType may carry options
// ("microvm,acpi=off"); they are passed through. q35 is the default: under
// TCG the three boot the test init in about the same time (~2.2-2.6 s on a
// 2-core host; see TestBootTiming), while microvm sometimes hangs in TSC
// calibration under TCG ("tsc: Unable to calibrate against PIT"; the
// tsc_early_khz= kernel parameter avoids it), needs ACPI (acpi=off leaves
// "poweroff" halting instead of exiting) and the virtio_mmio module for any
// virtio device.
package qemu

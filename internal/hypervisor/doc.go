// Package hypervisor owns the hypervisor-neutral description of a pod VM and
// the choice of accelerator.
//
// It defines Config (kernel, initrd, command line, memory, vCPUs, disks,
// virtio-serial ports, disk hot-plug slots, console log and the per-VM state
// directory), the VM interface every driver implements, and DetectAccel,
// which decides between KVM and TCG emulation:
//
//   - an explicit choice always wins: Config.Accel / DetectOptions.Requested,
//     then the COFFER_ACCEL environment variable (kvm or tcg);
//   - otherwise KVM is used only when /proc/cpuinfo shows vmx or svm,
//     /dev/kvm opens and answers KVM_CREATE_VM, and a probe VM booting the
//     real guest kernel under KVM actually runs (prints its banner and exits
//     by itself). Some hosts pass the first two checks but cannot run a guest
//     (nested virtualisation without the needed MSRs, sandboxed kernels), so
//     the probe boot is the deciding test. Its result is cached in a file keyed
//     by the guest kernel's SHA-256, the QEMU version and the host kernel
//     release, so it runs once per combination.
//
// DetectAccel always returns a human-readable reason ("tcg: host CPU has no
// vmx/svm flag ...") that callers print, so the accelerator in use is never a
// surprise.
//
// The QEMU driver lives in the qemu sub-package. This package has no
// QEMU-specific process management beyond the short accelerator probe.
package hypervisor

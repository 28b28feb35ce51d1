// Package agent is the guest side of Coffer: coffer-agent runs as PID 1 of
// the pod VM. It owns the guest's PID 1 duties (early mounts, kernel
// modules, zombie reaping, hostname, power off), the agent API server
// (ttrpc over a virtio-serial port or vsock), the sandbox and container
// state, container rootfs storage (read-only block device + tmpfs overlay),
// the pod's virtio-fs share of host volumes (mounted on first use; bind
// mounts must name one of its volumes) and the stdio buffers of every process. Container creation itself is
// delegated to package runner.
//
// The agent never imports host-only packages (hypervisor, sandbox, shim).
package agent

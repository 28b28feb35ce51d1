// Package sandbox is the host side of one pod: it prepares the container
// rootfs disk, boots the pod VM through the hypervisor driver, connects to
// the guest agent, drives containers and their stdio through the agent API,
// records the pod's state in the runtime directory and tears everything
// down (agent, VM, sockets, state) when the pod ends.
package sandbox

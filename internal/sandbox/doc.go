// Package sandbox is the host side of one pod: it prepares the container
// rootfs disk, boots the pod VM through the hypervisor driver, shares host
// volumes with it (one virtiofsd per pod, bind mounts in the pod's shared
// directory), connects to the guest agent, drives containers and their
// stdio through the agent API, records the pod's state in the runtime
// directory and tears everything down (agent, VM, virtiofsd, mounts,
// sockets, state) when the pod ends.
package sandbox

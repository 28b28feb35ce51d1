// Package shim is Coffer's containerd runtime v2 shim
// (containerd-shim-coffer-v2, runtime name io.containerd.coffer.v2): it
// serves containerd's task API and runs each pod's containers in one
// Coffer VM, driven through the guest agent (internal/sandbox).
//
// It owns the shim's two lives: the short-lived `start` / `delete`
// invocations (Manager: spawn the long-lived shim on a socket, clean up
// after a dead one) and the long-lived task service (Service: Create,
// Start, Exec, Wait, Kill, Delete, State, Pids, Stats, Update, ResizePty,
// CloseIO, Connect, Shutdown, with TaskCreate/Start/Exit/Delete/ExecAdded/
// ExecStarted/OOM events; exit times are the guest's, whose clock the
// agent sets to the host's at CreateSandbox).
//
// Dependencies: containerd v1.7 (github.com/containerd/containerd
// v1.7.35, package runtime/v2/shim) and its task API over ttrpc. The
// shim serves task API v2 (containerd 1.6/1.7) and v3 (containerd 2.x,
// taskv3.go: a bridge onto the v2 implementation) on the same socket;
// `start` tells containerd which one to use (bootstrap.go): containerd
// 2.x sends bootstrap parameters on stdin and gets a BootstrapResult
// with version 3, older releases get the bare socket address (v2).
// containerd v2's pkg/shim is not used: it always answers in the
// bootstrap format, which containerd 1.6 cannot parse.
//
// Pods (podjoin.go): containers carrying the CRI annotations
// io.kubernetes.cri.container-type=container and
// io.kubernetes.cri.sandbox-id=<pod> join that pod's running shim and
// VM: `start` returns the pod shim's address (the socket is named after
// the sandbox id) instead of spawning a shim, and Create hot-plugs the
// container's rootfs image as a disk with serial "c-<hash of id>"
// (Delete unplugs it). The sandbox container (type "sandbox", or no
// annotations) spawns the shim and boots the VM with hot-plug slots; the
// VM goes when the pod's last container is deleted.
//
// Configuration (config.go, documented in docs/containerd.md): built-in
// defaults, then /etc/coffer/config.toml or the file named by
// containerd's runtime option ConfigPath (runtimeoptions.v1.Options),
// then an allow-list of pod annotations; resolved per pod at Create, so a
// bad value fails that Create before any VM starts.
//
// Where things live: the pod directory (rootfs images, VM sockets and
// logs, shim.json: the shim and VM pids and the disks hot-plugged for
// joining containers, which `delete` uses after a shim died) is $COFFER_RUNTIME_DIR/shim/<namespace>/<id>, or
// /run/coffer/shim/... when COFFER_RUNTIME_DIR is unset. The guest image
// comes from guest_dir in the config, else $COFFER_GUEST_DIR or
// guest.DefaultCacheDir().
package shim

// Package runner creates and runs containers inside the guest: it owns the
// container init process (namespaces, rootfs, mounts, pivot_root, hostname,
// sysctls, masked and read-only paths, rlimits, user, capabilities), the
// per-container cgroup v2 (limits, stats, kill), exec into a running
// container, and reaping of every child of the agent (which is PID 1).
//
// Process model: the agent re-executes itself (/proc/self/exe) with the first
// argument InitArg. That child is born in fresh mount, pid, uts, ipc and
// cgroup namespaces and directly inside the container's cgroup
// (CLONE_INTO_CGROUP); it receives its configuration over a SOCK_SEQPACKET
// socket on fd 3, prepares the rootfs, reports "ready", waits for "start"
// and finally execve()s the container command, so the user process is PID 1
// of its pid namespace exactly as with runc. Where the spec allows, a
// container's init goes through the C stage instead (package cstage and
// cstage_linux.go): the agent prepares the rootfs on a locked OS thread in
// the child's namespaces and the child, which never starts the Go runtime,
// mounts proc and execs; execs go through it too. With the Go stage, exec
// processes join an existing
// container: the pid namespace is joined on a locked OS thread before fork,
// and the mount, uts, ipc and cgroup namespaces by the C constructor in
// package nsenter before the Go runtime starts (a multi-threaded process
// cannot change its mount namespace).
//
// Nothing here runs on the host: this package is imported only by the agent.
package runner

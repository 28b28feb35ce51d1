// Package nsenter joins the namespaces of an existing process before the Go
// runtime starts. Importing it (for its side effect) installs a C
// constructor that runs in every start of the binary; it does nothing unless
// the environment variable named by EnvPID holds a PID. Then it joins that
// process's ipc, uts, net, cgroup and mount namespaces, in that order, and
// clears the variable. The mount namespace can only be changed by a
// single-threaded process, which is why this runs before Go starts threads.
// The pid namespace is not joined here: the parent joins it for its
// children (setns on a locked thread) before forking.
package nsenter

/*
#cgo CFLAGS: -Wall -Werror
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Priority 200: before the C stage's constructor (package cstage, 300), which an
// exec through the C stage runs once the namespaces are joined.
__attribute__((constructor(200))) static void coffer_nsenter(void) {
	const char *pid = getenv("_COFFER_NSENTER_PID");
	if (pid == NULL || pid[0] == '\0') {
		return;
	}
	static const struct {
		const char *name;
		int type;
	} ns[] = {
		{"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"net", CLONE_NEWNET},
		{"cgroup", CLONE_NEWCGROUP}, {"mnt", CLONE_NEWNS},
	};
	int fds[sizeof(ns) / sizeof(ns[0])];
	char path[64];
	size_t i;
	// Open every namespace first: after the mount namespace changes,
	// /proc may no longer show the target.
	for (i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
		snprintf(path, sizeof(path), "/proc/%s/ns/%s", pid, ns[i].name);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0) {
			fprintf(stderr, "coffer: nsenter: open %s: %s\n", path, strerror(errno));
			_exit(121);
		}
	}
	for (i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
		if (setns(fds[i], ns[i].type) < 0) {
			fprintf(stderr, "coffer: nsenter: setns %s of pid %s: %s\n", ns[i].name, pid, strerror(errno));
			_exit(122);
		}
		close(fds[i]);
	}
	unsetenv("_COFFER_NSENTER_PID");
}
*/
import "C"

// EnvPID is the environment variable the constructor reads.
const EnvPID = "_COFFER_NSENTER_PID"

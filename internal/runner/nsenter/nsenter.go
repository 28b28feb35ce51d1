// Package nsenter joins the namespaces of an existing process before the Go
// runtime starts. Importing it (for its side effect) installs a C
// constructor that runs in every start of the binary; it does nothing unless
// the environment variable named by EnvFD holds a file descriptor number.
// That descriptor is a pidfd of the process to join (the container's init):
// the constructor joins its ipc, uts, net, cgroup and mount namespaces in
// one setns(2), closes the descriptor and clears the variable. A pidfd
// names one process for good, so a dead init whose pid was reused cannot
// lead an exec into another process's namespaces: setns then fails. The
// mount namespace can only be changed by a single-threaded process, which
// is why this runs before Go starts threads. The pid namespace is not
// joined here: the parent joins it for its children (setns on a locked
// thread) before forking.
package nsenter

/*
#cgo CFLAGS: -Wall -Werror
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Priority 200: before the C stage's constructor (package cstage, 300), which an
// exec through the C stage runs once the namespaces are joined.
__attribute__((constructor(200))) static void coffer_nsenter(void) {
	const char *v = getenv("_COFFER_NSENTER_FD");
	if (v == NULL || v[0] == '\0') {
		return;
	}
	char *end;
	errno = 0;
	long fd = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || fd < 3 || fd > 1023) {
		fprintf(stderr, "coffer: nsenter: bad pidfd %s\n", v);
		_exit(121);
	}
	if (setns((int)fd, CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWCGROUP | CLONE_NEWNS) < 0) {
		fprintf(stderr, "coffer: nsenter: join the container's namespaces: %s\n", strerror(errno));
		_exit(122);
	}
	close((int)fd);
	unsetenv("_COFFER_NSENTER_FD");
}
*/
import "C"

// EnvFD is the environment variable the constructor reads: the number of
// an inherited pidfd.
const EnvFD = "_COFFER_NSENTER_FD"

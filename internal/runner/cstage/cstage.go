//go:build linux && cgo

// Package cstage is the C half of a container's init stage: the last steps
// between a container's namespaces being ready and its command running,
// done before the Go runtime starts, so that starting a container does not
// start a second Go runtime (under TCG that cost 75–120 ms per container,
// plus a slow execve out of a multi-threaded process).
//
// Importing the package installs a C constructor that does nothing unless
// the binary was started with argv[1] == Arg. Then the process (forked by
// the agent into the container's new namespaces and cgroup, with its sync
// socket on fd 3) never reaches Go's main: it follows the agent's
// instructions and execs the container command, or reports an error and
// exits. The agent prepares the rootfs itself, on a locked OS thread that
// joined the child's mount namespace (package runner); only what must be
// done by the container's pid 1 happens here:
//
//  1. a "P" message lists the proc filesystems to mount (a procfs belongs
//     to the pid namespace of the process that mounts it): each record is
//     destination, mount flags (decimal) and data; the stage mounts them
//     and answers {"type":"mounted"};
//  2. an "F" message carries the process: terminal (the pty slave comes
//     with the message as SCM_RIGHTS), oom_score_adj, working directory,
//     rlimits, then, after {"type":"ready"} and (with "wait") the agent's
//     {"type":"start"}, the bounding set, groups, gid, uid, capability sets,
//     no_new_privs and the execve of the resolved path.
//
// Records are NUL-terminated tag and value strings (see package runner's
// cstage encoder). Any failure is sent as {"type":"error","error":"…"}
// and the stage exits 127; a message it cannot parse, 120. On success the
// socket closes with the execve (it is close-on-exec), which is how the
// agent learns that the container runs.
package cstage

/*
#cgo CFLAGS: -Wall -Werror -O2
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define CSTAGE_ARG "coffer-cinit"
#define SYNC_FD 3
#define MAX_MSG (4 << 20)
#define MAX_LIST 4096
#define MAX_RLIMITS 64

// cs_fail reports err to the agent as a sync "error" message and exits.
__attribute__((noreturn, format(printf, 1, 2))) static void cs_fail(const char *fmt, ...) {
	char msg[1024], out[2200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	// JSON string escaping: quote, backslash and control characters.
	size_t n = 0;
	n += snprintf(out, sizeof(out), "{\"type\":\"error\",\"error\":\"");
	for (const unsigned char *p = (const unsigned char *)msg; *p && n < sizeof(out) - 16; p++) {
		if (*p == '"' || *p == '\\') {
			out[n++] = '\\';
			out[n++] = *p;
		} else if (*p < 0x20) {
			n += snprintf(out + n, sizeof(out) - n, "\\u%04x", *p);
		} else {
			out[n++] = *p;
		}
	}
	n += snprintf(out + n, sizeof(out) - n, "\"}");
	(void)send(SYNC_FD, out, n, MSG_NOSIGNAL);
	_exit(127);
}

static void cs_send(const char *json) {
	if (send(SYNC_FD, json, strlen(json), MSG_NOSIGNAL) < 0) {
		_exit(120); // the agent is gone
	}
}

// cs_recv reads one message into buf (NUL-terminated after its length)
// and returns its length; *fd gets a passed descriptor or -1.
static size_t cs_recv(char *buf, size_t cap, int *fd) {
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = {.iov_base = buf, .iov_len = cap - 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf)};
	ssize_t n;
	do {
		n = recvmsg(SYNC_FD, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n <= 0 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		_exit(120); // the agent gave up, or a message we cannot hold
	}
	buf[n] = '\0';
	if (fd != NULL) {
		*fd = -1;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
				memcpy(fd, CMSG_DATA(c), sizeof(int));
			}
		}
	}
	return (size_t)n;
}

// cs_fields splits buf[1:n] (after the message type byte) into its
// NUL-terminated strings; returns their count.
static size_t cs_fields(char *buf, size_t n, char **out, size_t max) {
	size_t count = 0;
	size_t i = 1;
	while (i < n) {
		char *s = buf + i;
		size_t len = strnlen(s, n - i);
		if (i + len >= n || count == max) {
			cs_fail("coffer-cinit: malformed message from the agent");
		}
		out[count++] = s;
		i += len + 1;
	}
	return count;
}

// cs_parse parses a decimal number of digits only, at most max; it
// returns -1 for anything else.
static int cs_parse(const char *s, unsigned long long max, unsigned long long *out) {
	unsigned long long v = 0;
	if (*s == '\0') {
		return -1;
	}
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9' || v > (max - (unsigned long long)(*p - '0')) / 10) {
			return -1;
		}
		v = v * 10 + (unsigned long long)(*p - '0');
	}
	*out = v;
	return 0;
}

static unsigned long long cs_num(const char *tag, const char *s, unsigned long long max) {
	unsigned long long v;
	if (cs_parse(s, max, &v) < 0) {
		cs_fail("coffer-cinit: bad number %s=%s from the agent", tag, s);
	}
	return v;
}

// cs_snum parses an optionally negative decimal number in [-max, max].
static long long cs_snum(const char *tag, const char *s, long long max) {
	unsigned long long v;
	if (cs_parse(*s == '-' ? s + 1 : s, (unsigned long long)max, &v) < 0) {
		cs_fail("coffer-cinit: bad number %s=%s from the agent", tag, s);
	}
	return *s == '-' ? -(long long)v : (long long)v;
}

static void cs_mount_procs(char *buf, size_t n) {
	static char *f[MAX_LIST];
	size_t count = cs_fields(buf, n, f, MAX_LIST);
	if (count % 3 != 0) {
		cs_fail("coffer-cinit: malformed proc mount list");
	}
	for (size_t i = 0; i < count; i += 3) {
		unsigned long flags = (unsigned long)cs_num("flags", f[i + 1], ULONG_MAX);
		if (mount("proc", f[i], "proc", flags, f[i + 2][0] ? f[i + 2] : NULL) < 0) {
			cs_fail("mount proc on %s: %s", f[i], strerror(errno));
		}
	}
}

struct cs_caps {
	uint64_t bounding, effective, permitted, inheritable, ambient;
};

static void cs_run(void) {
	char *buf = malloc(MAX_MSG);
	// Records: args, env and groups (MAX_LIST each), rlimits
	// (MAX_RLIMITS) and fewer than 32 others; two strings each.
	static char *f[2 * (3 * MAX_LIST + MAX_RLIMITS + 32)];
	static struct {
		int resource;
		struct rlimit rl;
	} rlimits[MAX_RLIMITS];
	size_t nrlimits = 0;
	static char *argv[MAX_LIST + 1], *envp[MAX_LIST + 1];
	static gid_t gids[MAX_LIST];
	if (buf == NULL) {
		cs_fail("coffer-cinit: out of memory");
	}
	int tty = -1;
	size_t n;
	// The agent resolves paths in the container only once this process
	// is in all of its namespaces (for an exec, after the nsenter
	// constructor): until then its /proc/<pid>/root leads out of it.
	cs_send("{\"type\":\"joined\"}");
	for (;;) {
		n = cs_recv(buf, MAX_MSG, &tty);
		if (buf[0] == 'P') {
			cs_mount_procs(buf, n);
			cs_send("{\"type\":\"mounted\"}");
			continue;
		}
		if (buf[0] == 'F') {
			break;
		}
		cs_fail("coffer-cinit: unexpected message from the agent");
	}
	size_t count = cs_fields(buf, n, f, sizeof(f) / sizeof(f[0]));
	if (count % 2 != 0) {
		cs_fail("coffer-cinit: malformed process message");
	}
	const char *path = NULL, *cwd = "/";
	size_t argc = 0, envc = 0, ngids = 0;
	int wait_start = 0, nnp = 0, have_caps = 0, have_oom = 0, want_tty = 0;
	long long oom = 0;
	uid_t uid = 0;
	gid_t gid = 0;
	struct cs_caps caps = {0};
	for (size_t i = 0; i < count; i += 2) {
		const char *k = f[i];
		char *v = f[i + 1];
		if (!strcmp(k, "path")) {
			path = v;
		} else if (!strcmp(k, "arg")) {
			if (argc == MAX_LIST) cs_fail("coffer-cinit: too many arguments");
			argv[argc++] = v;
		} else if (!strcmp(k, "env")) {
			if (envc == MAX_LIST) cs_fail("coffer-cinit: too many environment variables");
			envp[envc++] = v;
		} else if (!strcmp(k, "cwd")) {
			cwd = v;
		} else if (!strcmp(k, "uid")) {
			// (uid_t)-1 would leave the ids unchanged: refused.
			uid = (uid_t)cs_num(k, v, UINT32_MAX - 1);
		} else if (!strcmp(k, "gid")) {
			gid = (gid_t)cs_num(k, v, UINT32_MAX - 1);
		} else if (!strcmp(k, "group")) {
			if (ngids == sizeof(gids) / sizeof(gids[0])) cs_fail("coffer-cinit: too many groups");
			gids[ngids++] = (gid_t)cs_num(k, v, UINT32_MAX - 1);
		} else if (!strcmp(k, "rlimit")) {
			// "resource soft hard", applied in order after chdir (as
			// the Go stage does: a low RLIMIT_NOFILE must not fail the
			// stage's own opens).
			unsigned long long r[3];
			char *save = NULL, *tok = strtok_r(v, " ", &save);
			for (int j = 0; j < 3; j++) {
				if (tok == NULL) cs_fail("coffer-cinit: malformed rlimit");
				r[j] = cs_num(k, tok, j == 0 ? RLIM_NLIMITS : ULLONG_MAX);
				tok = strtok_r(NULL, " ", &save);
			}
			if (nrlimits == MAX_RLIMITS) cs_fail("coffer-cinit: too many rlimits");
			rlimits[nrlimits].resource = (int)r[0];
			rlimits[nrlimits].rl.rlim_cur = r[1];
			rlimits[nrlimits].rl.rlim_max = r[2];
			nrlimits++;
		} else if (!strcmp(k, "capb")) {
			have_caps = 1;
			caps.bounding = cs_num(k, v, ULLONG_MAX);
		} else if (!strcmp(k, "cape")) {
			caps.effective = cs_num(k, v, ULLONG_MAX);
		} else if (!strcmp(k, "capp")) {
			caps.permitted = cs_num(k, v, ULLONG_MAX);
		} else if (!strcmp(k, "capi")) {
			caps.inheritable = cs_num(k, v, ULLONG_MAX);
		} else if (!strcmp(k, "capa")) {
			caps.ambient = cs_num(k, v, ULLONG_MAX);
		} else if (!strcmp(k, "oom")) {
			have_oom = 1;
			oom = cs_snum(k, v, 1000);
		} else if (!strcmp(k, "nnp")) {
			nnp = 1;
		} else if (!strcmp(k, "wait")) {
			wait_start = 1;
		} else if (!strcmp(k, "tty")) {
			want_tty = 1;
		} else {
			cs_fail("coffer-cinit: unknown field %s from the agent", k);
		}
	}
	if (path == NULL || argc == 0) {
		cs_fail("no process to run: the process args are empty");
	}
	argv[argc] = NULL;
	envp[envc] = NULL;
	if (want_tty) {
		if (tty < 0) cs_fail("coffer-cinit: the agent sent no terminal");
		if (setsid() < 0) cs_fail("setsid: %s", strerror(errno));
		if (ioctl(tty, TIOCSCTTY, 0) < 0) cs_fail("set controlling terminal: %s", strerror(errno));
		for (int fd = 0; fd < 3; fd++) {
			if (dup2(tty, fd) < 0) cs_fail("dup pty to fd %d: %s", fd, strerror(errno));
		}
		if (tty > 2) close(tty);
	} else if (tty >= 0) {
		close(tty);
	}
	if (have_oom) {
		char s[32];
		int len = snprintf(s, sizeof(s), "%lld", oom);
		int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, s, len) != len) cs_fail("set oom_score_adj: %s", strerror(errno));
		close(fd);
	}
	if (chdir(cwd) < 0) {
		cs_fail("chdir to working directory %s: %s", cwd, strerror(errno));
	}
	for (size_t i = 0; i < nrlimits; i++) {
		if (setrlimit(rlimits[i].resource, &rlimits[i].rl) < 0) {
			cs_fail("set rlimit %d to %llu/%llu: %s", rlimits[i].resource, (unsigned long long)rlimits[i].rl.rlim_cur,
				(unsigned long long)rlimits[i].rl.rlim_max, strerror(errno));
		}
	}
	cs_send("{\"type\":\"ready\"}");
	if (wait_start) {
		// Not into buf: path, argv and envp point into it.
		char start[64];
		cs_recv(start, sizeof(start), NULL);
		if (strcmp(start, "{\"type\":\"start\"}") != 0) {
			_exit(120); // the agent gave up on this container
		}
	}
	if (have_caps) {
		// Every capability number: the kernel's last one is not read
		// from a file the container could control; EINVAL marks numbers
		// past it.
		for (int c = 0; c < 64; c++) {
			if (caps.bounding & (1ULL << c)) continue;
			if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) {
				cs_fail("drop capability %d from the bounding set: %s", c, strerror(errno));
			}
		}
	}
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) cs_fail("set keepcaps: %s", strerror(errno));
	// Raw system calls: one thread, and no libc set*id broadcast needed.
	if (syscall(SYS_setgroups, ngids, gids) < 0) cs_fail("setgroups: %s", strerror(errno));
	if (syscall(SYS_setresgid, gid, gid, gid) < 0) cs_fail("setgid %u: %s", gid, strerror(errno));
	if (syscall(SYS_setresuid, uid, uid, uid) < 0) cs_fail("setuid %u: %s", uid, strerror(errno));
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) cs_fail("clear keepcaps: %s", strerror(errno));
	if (have_caps) {
		struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
		struct __user_cap_data_struct data[2] = {
			{.effective = (uint32_t)caps.effective, .permitted = (uint32_t)caps.permitted, .inheritable = (uint32_t)caps.inheritable},
			{.effective = (uint32_t)(caps.effective >> 32), .permitted = (uint32_t)(caps.permitted >> 32), .inheritable = (uint32_t)(caps.inheritable >> 32)},
		};
		if (syscall(SYS_capset, &hdr, data) < 0) cs_fail("capset: %s", strerror(errno));
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) {
			cs_fail("clear ambient capabilities: %s", strerror(errno));
		}
		for (int c = 0; c < 64; c++) {
			if (!(caps.ambient & (1ULL << c))) continue;
			if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0) {
				cs_fail("raise ambient capability %d (it must also be permitted and inheritable): %s", c, strerror(errno));
			}
		}
	}
	if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		cs_fail("set no_new_privs: %s", strerror(errno));
	}
	// On success the sync socket closes with the exec.
	if (fcntl(SYNC_FD, F_SETFD, FD_CLOEXEC) < 0) cs_fail("close-on-exec sync socket: %s", strerror(errno));
	execve(path, argv, envp);
	cs_fail("exec %s: %s", argv[0], strerror(errno));
}

// Priority 300: after package nsenter's constructor (200), so an exec joins the
// container's namespaces first.
__attribute__((constructor(300))) static void coffer_cstage(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc < 2 || argv == NULL || argv[1] == NULL || strcmp(argv[1], CSTAGE_ARG) != 0) {
		return;
	}
	const char *pid = getenv("_COFFER_NSENTER_FD");
	if (pid != NULL && pid[0] != '\0') {
		// The nsenter constructor (priority 200) should have run and
		// cleared it: never run an exec outside the container.
		cs_fail("coffer-cinit: the container's namespaces were not joined");
	}
	cs_run();
	_exit(127);
}
*/
import "C"

// Available reports whether this binary has the C stage (it needs cgo).
const Available = true

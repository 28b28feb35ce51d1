// Command containerd benchmarks Coffer's containerd shim against its
// baselines in one run: `ctr run --rm` of the same busybox image with the
// runtimes io.containerd.runc.v2 and io.containerd.coffer.v2, and
// `coffer run --rm` of the same rootfs, each running `true`. Rounds run
// every case once in a new shuffled order (after one warm-up round), so
// load on the machine hits every case alike. It prints medians (min/max),
// the shim's own overhead (coffer shim − coffer run) and the ratio
// coffer shim / coffer run against the target (≤ 1.10), as a table or
// JSON. The raw VM boot floor is bench/sandbox's.
//
// It owns nothing outside its temporary directory: a private containerd
// (Debian's, with its own root, state and socket), an isolated
// COFFER_RUNTIME_DIR, all removed on exit, also on Ctrl-C. Run it as root:
// ./bench/containerd/run.sh [-n 10] [-json].
package main

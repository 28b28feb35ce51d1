// Command sandbox benchmarks a coffer sandbox against its baselines in one
// run, on the same kernel and accelerator: the raw QEMU boot floor (the
// guest kernel with a trivial initrd that powers off at once), `coffer run
// --rm -- true`, and `runc run` of the same rootfs on the host. It also
// breaks a coffer run into phases, compares erofs and ext4 rootfs disks
// (image build and container start) and measures the host memory of an
// idle sandbox. It prints medians (min/max), ratios against the baselines
// and PASS/MISS against the project's targets, as a table or as JSON.
//
// It owns nothing outside its temporary directory: every pod runs in an
// isolated COFFER_RUNTIME_DIR and everything is removed on exit, also on
// Ctrl-C. Run it as root: ./bench/sandbox/run.sh [-n 10] [-json].
//
// The trivial initrd's /init is tinyinit/, a static Go program that prints
// a marker with the guest uptime and powers the VM off.
package main

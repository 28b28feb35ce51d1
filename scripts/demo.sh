#!/usr/bin/env bash
# The Coffer demo: run a busybox container in its own VM and show that it
# has its own kernel, its own hostname and its own view of the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A busybox rootfs (static busybox from Debian's busybox-static).
mkdir -p "$work/rootfs"/{bin,etc,proc,sys,dev,tmp,root}
cp /bin/busybox "$work/rootfs/bin/busybox"
for app in $(/bin/busybox --list); do
  [ "$app" = busybox ] || ln -s busybox "$work/rootfs/bin/$app"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$work/rootfs/etc/passwd"

echo "== host"
echo "   kernel:   $(uname -r)"
echo "   hostname: $(hostname)"
echo "   cpus:     $(nproc), memory: $(free -m | awk '/Mem:/{print $2}') MiB"
echo
echo "== coffer run --rm --memory 64m --rootfs ./busybox -- sh -c '...'"
start=$(date +%s.%N)
"$BIN/coffer" run --rm --name demo --memory 64m --sysctl kernel.shmmax=123456789 \
  --rootfs "$work/rootfs" -- sh -c '
echo "   kernel:   $(uname -r)   <- the guest kernel, not the host'"'"'s"
echo "   hostname: $(hostname)"
echo "   cpus:     $(nproc), memory: $(free -m | awk "/Mem:/{print \$2}") MiB (the VM)"
echo "   memory limit of this container: $(( $(cat /sys/fs/cgroup/memory.max) / 1048576 )) MiB (cgroup v2 in the guest)"
echo "   kernel.shmmax in the guest: $(cat /proc/sys/kernel/shmmax)"
echo "   PID 1 here: $(cat /proc/1/comm); processes visible: $(ls -d /proc/[0-9]* | wc -l)"
echo hello > /written-by-container && echo "   wrote /written-by-container inside the VM"
'
end=$(date +%s.%N)
echo
echo "== back on the host"
echo "   kernel.shmmax on the host is still $(cat /proc/sys/kernel/shmmax)"
if [ -e "$work/rootfs/written-by-container" ]; then echo "   ERROR: the container wrote to the host rootfs"; exit 1; fi
echo "   the host rootfs dir is unchanged (no /written-by-container)"
awk -v s="$start" -v e="$end" 'BEGIN { printf "   whole run, VM boot to teardown: %.2f s\n", e - s }'

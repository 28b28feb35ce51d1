#!/usr/bin/env bash
# Builds and runs the containerd benchmark (see docs/benchmarks.md).
# Usage: ./bench/containerd/run.sh [-n 10] [-json] [-h for all flags]
# Needs root, containerd + ctr (Debian's), `make build` and `coffer guest build`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go build -trimpath -o "$out/bench-containerd" ./bench/containerd
# The raw boot floor's /init: static, no C library in that initrd.
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$out/tinyinit" ./bench/sandbox/tinyinit
# Not exec: the trap removes the build dir afterwards.
"$out/bench-containerd" -coffer "$root/bin/coffer" -shim "$root/bin/containerd-shim-coffer-v2" -init "$out/tinyinit" "$@"

#!/usr/bin/env bash
# Builds and runs the sandbox benchmark (see docs/benchmarks.md).
# Usage: ./bench/sandbox/run.sh [-n 10] [-json] [-quiet-wait 60s] [-h for all flags]
# Needs root, `make build` and `coffer guest build` (make bench does both).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go build -trimpath -o "$out/bench-sandbox" ./bench/sandbox
# The trivial initrd's /init: static, no C library in that initrd.
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$out/tinyinit" ./bench/sandbox/tinyinit
# Not exec: the trap removes the build dir afterwards.
"$out/bench-sandbox" -coffer "$root/bin/coffer" -init "$out/tinyinit" "$@"

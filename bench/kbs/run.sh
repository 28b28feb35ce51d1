#!/usr/bin/env bash
# Builds bin/coffer-kbs and runs the KBS benchmark (see docs/benchmarks.md).
# Usage: ./bench/kbs/run.sh [-d 10s] [-json] [-cpuprofile kbs.pprof] [-h for all flags]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
version=$(git describe --always --dirty 2>/dev/null || echo dev)
mkdir -p bin
# As `make build` builds it.
CGO_ENABLED=0 go build -trimpath -ldflags "-X github.com/coffer-project/coffer/internal/version.Version=$version" \
	-o bin/coffer-kbs ./cmd/coffer-kbs
go build -trimpath -o "$out/bench-kbs" ./bench/kbs
# Not exec: the trap removes the build dir afterwards.
"$out/bench-kbs" -kbs "$root/bin/coffer-kbs" "$@"

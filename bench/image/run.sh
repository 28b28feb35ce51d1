#!/usr/bin/env bash
# Builds bin/coffer and runs the image pull benchmark against skopeo + umoci.
# Usage: ./bench/image/run.sh [-n 5] [-size 200] [-layers 5] [-json]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
version=$(git describe --always --dirty 2>/dev/null || echo dev)
mkdir -p bin
# As `make build` builds it.
CGO_ENABLED=0 go build -trimpath -ldflags "-X github.com/coffer-project/coffer/internal/version.Version=$version" \
	-o bin/coffer ./cmd/coffer
go build -trimpath -o "$out/bench-image" ./bench/image
"$out/bench-image" -coffer "$root/bin/coffer" "$@"

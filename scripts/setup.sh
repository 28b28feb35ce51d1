#!/usr/bin/env bash
# Installs everything Coffer needs on a Debian 12 machine. Idempotent: it
# only installs what is missing. The guest kernel is fetched later by
# `coffer guest build` (apt-get download, unpacked into a cache dir, never
# installed on the host).
set -euo pipefail

PKGS=(
  qemu-system-x86   # the hypervisor
  qemu-utils
  busybox-static    # test/demo container rootfs
  cpio              # initrd inspection in tests
  e2fsprogs         # mkfs.ext4 (rootfs disks)
  erofs-utils       # mkfs.erofs (rootfs disks, default)
  kmod
  runc              # baseline in benchmarks
  containerd        # containerd integration tests (ctr comes with it)
  swtpm swtpm-tools # vTPM for confidential mode
  docker-registry   # image tests run their own instance on loopback
  skopeo            # image encryption interop tests
  gpg gpg-agent     # GPG simple-signing interop test (keys, skopeo --sign-by)
  umoci             # baseline of the image benchmark
  protobuf-compiler # make proto
  gcc libc6-dev     # the agent links statically with cgo (nsenter)
  procps psmisc util-linux
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The image tests start their own docker-registry per run; the packaged
# service (listening on :5000) is not wanted.
if [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/docker-registry ]; then
  $SUDO /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
  $SUDO update-rc.d docker-registry disable >/dev/null 2>&1 || true
fi
# `coffer guest build` uses apt-get download: make sure package lists exist.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock || true)" ]; then
  $SUDO apt-get update -qq
fi

# Go itself. go.mod names the Go version the code needs (1.26.x); Debian 12
# ships 1.19, which cannot build it. A `go` on PATH that builds this module
# (e.g. /usr/local/go from go.dev, or any go that switches toolchains) is
# kept as it is. Otherwise Debian's golang-go from bookworm-backports (1.21 or
# later: it understands GOTOOLCHAIN) is installed, and it fetches the exact
# toolchain go.mod names from the Go module proxy (the module
# golang.org/toolchain, checked against the checksum database, which
# proxy.golang.org also serves), into the module cache. Inside this
# repository that happens by itself (Debian's go.env says GOTOOLCHAIN=auto);
# this script sets GOTOOLCHAIN for the tools it builds outside it.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
GO_WANT="$(sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' "$ROOT/go.mod")"
version_ge() { # A B: A >= B, both dotted versions
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}
# The Go version that builds this module with the go on PATH (after any
# toolchain switch), or nothing.
repo_go_version() { go_version_in "$ROOT"; }
go_version_in() { # DIR [env...]: the version `go env GOVERSION` gives in DIR
  local dir="$1" v
  shift
  command -v go >/dev/null 2>&1 || return 0
  v="$(cd "$dir" && env "$@" go env GOVERSION 2>/dev/null)" || return 0
  printf '%s\n' "$v" | sed -n 's/^go\([0-9][0-9.]*\).*/\1/p'
}
have="$(repo_go_version)"
if [ -z "$have" ] || ! version_ge "$have" "$GO_WANT"; then
  local_go="$(go_version_in / GOTOOLCHAIN=local)"
  if [ -z "$local_go" ] || ! version_ge "$local_go" 1.21; then
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" != bookworm ]; then
      echo "setup: this needs Go >= $GO_WANT (go.mod); install it (https://go.dev/dl/, e.g. into /usr/local/go with /usr/local/go/bin on PATH) and run again" >&2
      exit 1
    fi
    # apt's own view (a commented-out or disabled entry does not count).
    if ! apt-cache policy 2>/dev/null | grep -q ' bookworm-backports/'; then
      echo "setup: adding Debian's bookworm-backports to apt's sources (for golang-go >= 1.21)"
      printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' 'Components: main' \
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' |
        $SUDO tee /etc/apt/sources.list.d/coffer-bookworm-backports.sources >/dev/null
    fi
    echo "setup: installing golang-go from bookworm-backports (bootstrap for Go $GO_WANT; this replaces Debian 12's golang-go 1.19 if it is installed)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports golang-go >/dev/null
    # The go just installed comes first, even if an older one (e.g. an old
    # /usr/local/go) is earlier on PATH.
    PATH="$(dirname "$(readlink -f /usr/bin/go)"):$PATH"
    export PATH
    hash -r
  fi
  export GOTOOLCHAIN="go$GO_WANT"
  echo "setup: fetching the Go $GO_WANT toolchain from the module proxy (GOTOOLCHAIN=$GOTOOLCHAIN)"
  if ! (cd "$ROOT" && go version) || [ "$(repo_go_version)" != "$GO_WANT" ]; then
    echo "setup: could not get Go $GO_WANT through $(command -v go) (GOTOOLCHAIN=$GOTOOLCHAIN; GOPROXY=$(go env GOPROXY)): it needs the Go module proxy; or install Go $GO_WANT from https://go.dev/dl/ into /usr/local/go" >&2
    exit 1
  fi
  if [ "$(go_version_in "$ROOT" -u GOTOOLCHAIN)" != "$GO_WANT" ]; then
    echo "setup: note: this go does not switch to Go $GO_WANT by itself (GOTOOLCHAIN is local in its environment or go env): run make with GOTOOLCHAIN=$GOTOOLCHAIN or set \`go env -w GOTOOLCHAIN=auto\`" >&2
  fi
fi

GOBIN="$(go env GOPATH)/bin"
export PATH="$PATH:$GOBIN"
need_go_tool() { # name module@version
  command -v "$1" >/dev/null 2>&1 || { echo "setup: go install $2"; go install "$2"; }
}
need_go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
need_go_tool protoc-gen-go-ttrpc github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@v1.2.10
need_go_tool staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2
need_go_tool gotestsum gotest.tools/gotestsum@v1.13.0

# containerd 2.x (task API v3 tests) and crictl (CRI tests), kept out of
# the system PATH so they do not replace Debian's containerd 1.6.
TOOLS=/usr/local/lib/coffer-tools
need_tool_in() { # dir name tags module@version
  [ -x "$1/$2" ] || { echo "setup: go install $4 into $1"; $SUDO mkdir -p "$1"; $SUDO env GOBIN="$1" PATH="$PATH" GOTOOLCHAIN="${GOTOOLCHAIN:-}" go install -tags "$3" "$4"; }
}
need_tool_in $TOOLS containerd no_btrfs,no_devmapper,no_zfs github.com/containerd/containerd/v2/cmd/containerd@v2.4.2
need_tool_in $TOOLS ctr no_btrfs,no_devmapper,no_zfs github.com/containerd/containerd/v2/cmd/ctr@v2.4.2
need_tool_in $TOOLS crictl "" sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0
# cosign, the reference for sigstore signatures (interop tests; a few minutes to build).
need_tool_in $TOOLS cosign "" github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5

# skopeo with sigstore (Debian's 1.9 is built with it disabled), for the
# signature interop tests. `go install skopeo@v` is refused (the proxy lists
# no versions and the checksum database does not know it), so the module is
# downloaded, checked against the hash pinned here, and built from source
# with its go.mod/go.sum as they are (-mod=readonly: go.sum verifies every
# dependency and nothing is added).
SKOPEO_VERSION=v1.16.1
SKOPEO_SUM="h1:2H/GNi5tOzZPC67+6sU+QmOB0new1Tx23gN6Pqk5LxA="
if [ ! -x "$TOOLS/skopeo" ]; then
  echo "setup: building skopeo $SKOPEO_VERSION (sigstore enabled) into $TOOLS"
  work="$(mktemp -d)"
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  info="$(cd "$work" && GONOSUMDB=github.com/containers/skopeo GOFLAGS=-mod=mod go mod download -json "github.com/containers/skopeo@$SKOPEO_VERSION")"
  sum="$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p')"
  src="$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  if [ "$sum" != "$SKOPEO_SUM" ]; then
    echo "setup: skopeo $SKOPEO_VERSION module hash is '$sum', want $SKOPEO_SUM: refusing to build it" >&2
    exit 1
  fi
  cp -r "$src" "$work/skopeo" && chmod -R u+w "$work/skopeo" && rm -rf "$work/skopeo/vendor"
  (cd "$work/skopeo" && CGO_ENABLED=0 go build -mod=readonly -trimpath \
    -tags "containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devmapper" \
    -o "$work/skopeo-bin" ./cmd/skopeo)
  $SUDO mkdir -p "$TOOLS" && $SUDO install -m 0755 "$work/skopeo-bin" "$TOOLS/skopeo"
fi

echo "setup: ok ($(qemu-system-x86_64 --version | head -1))"

# Coffer build, test and demo. `make demo` and `make test` do all set-up.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/coffer-project/coffer/internal/version.Version=$(VERSION)
# The agent is PID 1 of an initrd with no C library: link it statically.
# cgo is needed for the nsenter constructor (see internal/runner/nsenter).
AGENT_LDFLAGS := -s -w $(LDFLAGS) -linkmode external -extldflags -static
export PATH := $(PATH):$(shell $(GO) env GOPATH)/bin
# Where `coffer guest build` puts the guest image (root's default).
GUEST_DIR ?= /var/lib/coffer/guest
export COFFER_GUEST_DIR := $(GUEST_DIR)
# Tests that boot VMs or read the kernel package use the guest cache.
TEST_ENV := COFFER_TEST_KERNEL=$(GUEST_DIR)/vmlinuz \
	COFFER_TEST_KERNEL_DIR=$$(ls -d $(GUEST_DIR)/kernel/*/ 2>/dev/null | head -1)

.PHONY: all build setup guest demo test unit race integration lint proto bench clean

all: build

setup:
	./scripts/setup.sh

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/coffer ./cmd/coffer
	CGO_ENABLED=1 $(GO) build -trimpath -tags netgo,osusergo -ldflags '$(AGENT_LDFLAGS)' -o $(BIN)/coffer-agent ./cmd/coffer-agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/coffer-kbs ./cmd/coffer-kbs
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/containerd-shim-coffer-v2 ./cmd/containerd-shim-coffer-v2

guest: build
	$(BIN)/coffer guest build --cache-dir $(GUEST_DIR) --agent $(BIN)/coffer-agent

demo: setup guest
	./scripts/demo.sh

proto:
	protoc -I api/agent --go_out=paths=source_relative:api/agent \
		--go-ttrpc_out=paths=source_relative:api/agent api/agent/agent.proto

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	staticcheck ./...

# Fast tests: no VM boots (-short), no root needed.
unit:
	$(GO) test -count=1 -short ./...
	$(MAKE) race

# The KBS's 200 concurrent sessions under the race detector (~10 s on the
# 2-core machine once the race build is cached; needs cgo).
race:
	$(GO) test -race -count=1 -run 'TestConcurrentSessions' ./internal/kbs/server/

# Integration tests boot real VMs (TCG here); they need root.
integration: guest
	COFFER_BIN=$(BIN)/coffer $(GO) test -count=1 -timeout 25m -tags integration -v ./test/...

test: setup guest lint
	$(TEST_ENV) $(GO) test -count=1 -timeout 10m ./...
	$(MAKE) race
	COFFER_BIN=$(BIN)/coffer $(GO) test -count=1 -timeout 25m -tags integration ./test/...

bench: guest
	./bench/sandbox/run.sh
	./bench/kbs/run.sh
	./bench/containerd/run.sh
	./bench/image/run.sh

clean:
	rm -rf $(BIN)

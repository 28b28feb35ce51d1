package shim

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// containerd 2.x releases with the bootstrap protocol (2.4 has it) write
// a containerd.runtime.bootstrap.v1.BootstrapParams message to the stdin
// of `shim start` and read a BootstrapResult from its stdout; the
// result's version says which task API the shim serves (3:
// containerd.task.v3.Task). containerd 1.6/1.7 (and 2.x releases before
// the bootstrap protocol) write the runtime options (a
// google.protobuf.Any, or nothing) and read a bare socket address, which
// means task API v2. The shim serves both services
// on its socket, so the answer only has to tell containerd which one to
// use. The two messages are decoded and encoded here field by field
// (numbers from containerd's api/runtime/bootstrap/v1/bootstrap.proto):
// the containerd api module that defines them does not build with the
// containerd 1.7 shim package this shim uses.

// maxBootstrapInput bounds what `start` reads from stdin (containerd
// itself sends at most 10 MiB).
const maxBootstrapInput = 10 << 20

// Field numbers of BootstrapParams and BootstrapResult.
const (
	bpInstanceID        = 1
	bpNamespace         = 2
	bpContainerdVersion = 4

	brVersion  = 1
	brAddress  = 2
	brProtocol = 3
)

// bootstrapParams is the part of containerd's BootstrapParams the shim
// uses.
type bootstrapParams struct {
	InstanceID, Namespace, ContainerdVersion string
}

var errNotBootstrap = errors.New("not a containerd bootstrap message")

// parseBootstrapParams decodes a BootstrapParams message. Unknown fields
// are skipped; a malformed message is an error.
func parseBootstrapParams(b []byte) (bootstrapParams, error) {
	var p bootstrapParams
	if len(b) == 0 {
		return p, errNotBootstrap
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return p, fmt.Errorf("%w: %w", errNotBootstrap, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == bpInstanceID || num == bpNamespace || num == bpContainerdVersion) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return p, fmt.Errorf("%w: %w", errNotBootstrap, protowire.ParseError(n))
			}
			switch num {
			case bpInstanceID:
				p.InstanceID = string(v)
			case bpNamespace:
				p.Namespace = string(v)
			case bpContainerdVersion:
				p.ContainerdVersion = string(v)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return p, fmt.Errorf("%w: %w", errNotBootstrap, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return p, nil
}

// readBootstrap reads `start`'s stdin and reports whether containerd
// sent bootstrap parameters for this shim (task id and namespace match):
// then it speaks the bootstrap protocol and task API v3.
func readBootstrap(r io.Reader, id, ns string) (bootstrapParams, bool) {
	b, err := io.ReadAll(io.LimitReader(r, maxBootstrapInput))
	if err != nil {
		return bootstrapParams{}, false
	}
	p, err := parseBootstrapParams(b)
	if err != nil || p.InstanceID != id || p.Namespace != ns {
		return bootstrapParams{}, false
	}
	return p, true
}

// bootstrapResult encodes the BootstrapResult announcing task API v3 over
// ttrpc at address.
func bootstrapResult(address string) []byte {
	var b []byte
	b = protowire.AppendTag(b, brVersion, protowire.VarintType)
	b = protowire.AppendVarint(b, 3)
	b = protowire.AppendTag(b, brAddress, protowire.BytesType)
	b = protowire.AppendString(b, address)
	b = protowire.AppendTag(b, brProtocol, protowire.BytesType)
	b = protowire.AppendString(b, "ttrpc")
	return b
}

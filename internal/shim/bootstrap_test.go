package shim

import (
	"bytes"
	"context"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// encodeParams builds a BootstrapParams message the way containerd 2.x
// does, with the fields the shim ignores (log level, addresses, an
// extension, the socket dir) in between.
func encodeParams(id, ns string) []byte {
	var b []byte
	str := func(num protowire.Number, s string) {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	str(bpInstanceID, id)
	str(bpNamespace, ns)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, protowire.EncodeZigZag(-1))
	str(bpContainerdVersion, "2.4.2")
	str(5, "/run/containerd/containerd.sock.ttrpc")
	ext, _ := proto.Marshal(&anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: []byte{0x08, 0x01}})
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	b = protowire.AppendBytes(b, ext)
	str(9, "/run/containerd/s")
	return b
}

func TestReadBootstrap(t *testing.T) {
	p, ok := readBootstrap(bytes.NewReader(encodeParams("c1", "default")), "c1", "default")
	if !ok || p.ContainerdVersion != "2.4.2" {
		t.Fatalf("containerd 2.x params: ok %v, %+v", ok, p)
	}
	// Another task's or namespace's parameters are not ours.
	if _, ok := readBootstrap(bytes.NewReader(encodeParams("c2", "default")), "c1", "default"); ok {
		t.Error("parameters for another id accepted")
	}
	if _, ok := readBootstrap(bytes.NewReader(encodeParams("c1", "k8s.io")), "c1", "default"); ok {
		t.Error("parameters for another namespace accepted")
	}
	// containerd 1.6/1.7 send the runtime options (an Any) or nothing.
	opts, _ := proto.Marshal(&anypb.Any{TypeUrl: "runtimeoptions.v1.Options", Value: []byte("\n\x10/etc/coffer.toml")})
	for name, in := range map[string][]byte{"options": opts, "empty": nil, "garbage": []byte("unix:///run/x")} {
		if _, ok := readBootstrap(bytes.NewReader(in), "c1", "default"); ok {
			t.Errorf("%s: taken for bootstrap parameters", name)
		}
	}
}

func TestBootstrapResult(t *testing.T) {
	b := bootstrapResult("unix:///run/containerd/s/abc")
	got := map[protowire.Number]any{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatal(protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			got[num], b = v, b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeString(b)
			got[num], b = v, b[n:]
		default:
			t.Fatalf("field %d has wire type %d", num, typ)
		}
	}
	if got[brVersion] != uint64(3) || got[brAddress] != "unix:///run/containerd/s/abc" || got[brProtocol] != "ttrpc" {
		t.Errorf("BootstrapResult = %v, want version 3, the address and ttrpc", got)
	}
}

func FuzzParseBootstrapParams(f *testing.F) {
	f.Add(encodeParams("c1", "default"))
	f.Add([]byte("unix:///run/x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseBootstrapParams(b)
		if err == nil && len(p.InstanceID)+len(p.Namespace)+len(p.ContainerdVersion) > len(b) {
			t.Fatalf("decoded more than the input: %+v", p)
		}
	})
}

// TestTaskV3Bridge: v3 requests reach the v2 implementation field for
// field, and its errors come back unchanged.
func TestTaskV3Bridge(t *testing.T) {
	in := &taskv3.CreateTaskRequest{ID: "c1", Bundle: "/b", Terminal: true, Stdin: "/in", Stdout: "/out",
		Rootfs: []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/l"}}}}
	var out taskAPI.CreateTaskRequest
	if err := reencode(in, &out); err != nil {
		t.Fatal(err)
	}
	if out.ID != "c1" || out.Bundle != "/b" || !out.Terminal || out.Stdin != "/in" || out.Stdout != "/out" ||
		len(out.Rootfs) != 1 || out.Rootfs[0].Options[0] != "lowerdir=/l" {
		t.Errorf("v2 request = %+v", &out)
	}
	s := &Service{containers: map[string]*container{}}
	_, err := taskV3{s}.State(context.Background(), &taskv3.StateRequest{ID: "nope"})
	if !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Errorf("State of an unknown task over v3: %v, want not found", err)
	}
	if _, err := (taskV3{s}).Connect(context.Background(), &taskv3.ConnectRequest{ID: "x"}); err != nil {
		t.Errorf("Connect over v3: %v", err)
	}
}

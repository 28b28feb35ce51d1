package policy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/coffer-project/coffer/internal/rvps"
	"github.com/coffer-project/coffer/internal/store"
)

func TestDefaultsCompile(t *testing.T) {
	names := DefaultNames()
	want := "[affirming allow_all default default_cpu deny_all dev]"
	if fmt.Sprint(names) != want {
		t.Fatalf("DefaultNames = %v, want %v", names, want)
	}
	for _, n := range names {
		src, err := Default(n)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Compile(n, src)
		if err != nil {
			t.Errorf("built-in %s does not compile: %v", n, err)
			continue
		}
		if p.RegoVersion() != "v1" {
			t.Errorf("built-in %s parsed as %s", n, p.RegoVersion())
		}
	}
	if _, err := Default("nope"); err == nil {
		t.Error("unknown default accepted")
	}
}

func TestWriteDefaults(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory()
	get := func(ns, key string) string {
		t.Helper()
		b, err := st.Get(ctx, ns, key)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if err := WriteDefaults(ctx, st, false, nil); err != nil {
		t.Fatal(err)
	}
	if get(store.NSAttestPolicies, DefaultAppraisalPolicyID) != mustDefaultT(t, DefaultCPU) {
		t.Error("default_cpu not installed")
	}
	if get(store.NSResourcePolicy, ResourcePolicyKey) != mustDefaultT(t, ResourceDefault) {
		t.Error("production resource policy not installed")
	}
	// Switching to dev replaces the built-in production policy...
	if err := WriteDefaults(ctx, st, true, nil); err != nil {
		t.Fatal(err)
	}
	if get(store.NSResourcePolicy, ResourcePolicyKey) != mustDefaultT(t, ResourceDev) {
		t.Error("dev start did not install the dev policy over the built-in default")
	}
	// ...and back (a dev data dir must not stay permissive).
	if err := WriteDefaults(ctx, st, false, nil); err != nil {
		t.Fatal(err)
	}
	if get(store.NSResourcePolicy, ResourcePolicyKey) != mustDefaultT(t, ResourceDefault) {
		t.Error("production start kept the dev policy")
	}
	// The user's policies are never overwritten.
	user := "package policy\nallow := true\n"
	userCPU := "package policy\ntrust_claims := {\"hardware\": 2}\n"
	if _, err := st.Put(ctx, store.NSResourcePolicy, ResourcePolicyKey, []byte(user), true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, store.NSAttestPolicies, DefaultAppraisalPolicyID, []byte(userCPU), true); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []bool{true, false} {
		if err := WriteDefaults(ctx, st, dev, nil); err != nil {
			t.Fatal(err)
		}
		if get(store.NSResourcePolicy, ResourcePolicyKey) != user || get(store.NSAttestPolicies, DefaultAppraisalPolicyID) != userCPU {
			t.Fatalf("dev=%v overwrote the user's policy", dev)
		}
	}
	st.Close()
	if err := WriteDefaults(ctx, st, false, nil); !errors.Is(err, store.ErrClosed) {
		t.Errorf("closed store err = %v", err)
	}
}

// TestEndToEndWithRVPS runs the stored default policy against the RVPS
// over bbolt, as coffer-kbs wires them.
func TestEndToEndWithRVPS(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "kbs.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := WriteDefaults(ctx, st, false, nil); err != nil {
		t.Fatal(err)
	}
	src, err := st.Get(ctx, store.NSAttestPolicies, DefaultAppraisalPolicyID)
	if err != nil {
		t.Fatal(err)
	}
	rv := rvps.New(st)
	p := compile(t, DefaultAppraisalPolicyID, string(src), WithReferenceValues(rv.Query))
	a, err := p.EvaluateAppraisal(ctx, jsonMap(t, sampleInput))
	if err != nil || a.Status != StatusContraindicated {
		t.Fatalf("before RVs: %+v %v", a, err)
	}
	// kbs-client set-sample-reference-value style registrations.
	msg := `{"version":"0.1.0","type":"sample","payload":"eyJzdm4iOlsiMSJdLCJsYXVuY2hfZGlnZXN0IjpbImFiY2RlIl0sIm1ham9yX3ZlcnNpb24iOjEsIm1pbmltdW1fbWlub3JfdmVyc2lvbiI6MX0="}`
	if err := rv.Register(ctx, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	a, err = p.EvaluateAppraisal(ctx, jsonMap(t, sampleInput))
	if err != nil || a.Status != StatusAffirming {
		t.Fatalf("after RVs: %+v %v", a, err)
	}
}

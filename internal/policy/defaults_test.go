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

// WriteDefaults replaces a built-in resource policy of the other mode only
// when a start wrote it (or, in a data directory from before the origin
// was recorded, nobody said): one an admin stored is kept.
func TestWriteDefaultsKeepsAdminBuiltin(t *testing.T) {
	ctx := context.Background()
	policyText := func(st store.Store) string {
		t.Helper()
		b, err := st.Get(ctx, store.NSResourcePolicy, ResourcePolicyKey)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, dev := range []bool{false, true} {
		want, other := ResourceDefault, ResourceDev
		if dev {
			want, other = ResourceDev, ResourceDefault
		}
		st := store.NewMemory()
		if err := WriteDefaults(ctx, st, dev, nil); err != nil {
			t.Fatal(err)
		}
		if origin, err := st.Get(ctx, store.NSResourcePolicy, ResourcePolicyOriginKey); err != nil || string(origin) != "builtin "+want {
			t.Errorf("dev=%v: origin %q (%v), want %q", dev, origin, err, "builtin "+want)
		}
		// The admin installs the other mode's built-in: a restart in the
		// same mode keeps it.
		if err := PutResourcePolicy(ctx, st, mustDefault(other)); err != nil {
			t.Fatal(err)
		}
		if err := WriteDefaults(ctx, st, dev, nil); err != nil {
			t.Fatal(err)
		}
		if policyText(st) != mustDefaultT(t, other) {
			t.Errorf("dev=%v: a restart replaced the %s policy an admin set", dev, other)
		}
		// A data directory from before the origin was recorded, holding the
		// other mode's built-in: replaced, as before.
		legacy := store.NewMemory()
		if _, err := legacy.Put(ctx, store.NSResourcePolicy, ResourcePolicyKey, mustDefault(other), true); err != nil {
			t.Fatal(err)
		}
		if err := WriteDefaults(ctx, legacy, dev, nil); err != nil {
			t.Fatal(err)
		}
		if policyText(legacy) != mustDefaultT(t, want) {
			t.Errorf("dev=%v: the other mode's built-in of an old data dir was kept", dev)
		}
	}
}

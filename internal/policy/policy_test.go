package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// rvMap is a reference value source for tests.
type rvMap map[string]any

func (m rvMap) query(_ context.Context, id string) (any, bool, error) {
	v, ok := m[id]
	return v, ok, nil
}

func mustDefaultT(t testing.TB, name string) string {
	t.Helper()
	s, err := Default(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func compile(t testing.TB, name, src string, opts ...Option) *Policy {
	t.Helper()
	p, err := Compile(name, src, opts...)
	if err != nil {
		t.Fatalf("Compile(%s): %v", name, err)
	}
	return p
}

func jsonMap(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// sampleInput is the annotated evidence Trustee builds for the sample TEE.
const sampleInput = `{
  "sample": {"svn": "1", "launch_digest": "abcde", "platform_version": {"major": 1, "minor": 4}, "debug": false},
  "report_data": "cmVwb3J0",
  "runtime_data_claims": {"nonce": "n", "tee-pubkey": {"kty": "EC"}, "additional-evidence": ""}
}`

// trusteeRVs are the reference values from Trustee's integration tests.
var trusteeRVs = rvMap{
	"svn":                   []any{"1"},
	"launch_digest":         []any{"abcde"},
	"major_version":         json.Number("1"),
	"minimum_minor_version": json.Number("1"),
}

func TestV0AndV1Syntax(t *testing.T) {
	ctx := context.Background()
	srcs := map[string]string{
		"v1": `package policy
import rego.v1
default allow := false
allow if { input.ok == true; data.plugin == "resource" }`,
		"v1-no-import": `package policy
default allow := false
allow if input.ok == true
`,
		"v0": `package policy
default allow = false
allow { input.ok == true; data.plugin == "resource" }`,
		"v0-future-keywords": `package policy
import future.keywords.in
default allow = false
allow { data.plugin in ["resource"]; input.ok }`,
	}
	wantVersion := map[string]string{"v1": "v1", "v1-no-import": "v1", "v0": "v0", "v0-future-keywords": "v0"}
	for name, src := range srcs {
		p := compile(t, name, src)
		if p.RegoVersion() != wantVersion[name] {
			t.Errorf("%s parsed as %s, want %s", name, p.RegoVersion(), wantVersion[name])
		}
		d, err := p.EvaluateAllow(ctx, map[string]any{"ok": true}, map[string]any{"plugin": "resource"})
		if err != nil || !d.Allow {
			t.Errorf("%s: allow case = %+v, %v", name, d, err)
		}
		d, err = p.EvaluateAllow(ctx, map[string]any{"ok": false}, map[string]any{"plugin": "resource"})
		if err != nil || d.Allow || len(d.Reasons) == 0 {
			t.Errorf("%s: deny case = %+v, %v", name, d, err)
		}
	}
}

func TestParseErrorsMentionLine(t *testing.T) {
	cases := map[string]struct {
		src, want string
	}{
		"v1 syntax error":  {"package policy\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n", "line 6"},
		"v0 syntax error":  {"package policy\n\ndefault allow = false\nallow {\n  input.x = = 1\n}\n", "line 5"},
		"garbage":          {"package policy\n\nthis is not rego ][\n", "line 3"},
		"compile error":    {"package policy\nimport rego.v1\n\nallow if {\n  undefined_function(1)\n}\n", "line 5"},
		"unsafe var":       {"package policy\nimport rego.v1\nallow if {\n  x == 1\n}\n", "line 4"},
		"wrong package":    {"package kbs\nallow := true\n", "package policy"},
		"empty":            {"  \n", "empty"},
		"http.send denied": {"package policy\nimport rego.v1\nallow if {\n  http.send({\"method\": \"get\", \"url\": \"http://x\"}).status_code == 200\n}\n", "line 4"},
	}
	for name, c := range cases {
		_, err := Compile("bad.rego", c.src)
		var ce *CompileError
		if !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want *CompileError", name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"bad.rego"`) {
			t.Errorf("%s: error %q does not mention %q and the policy name", name, err, c.want)
		}
	}
}

func TestQueryReferenceValueBuiltin(t *testing.T) {
	ctx := context.Background()
	src := `package policy
import rego.v1
trust_claims := {"executables": 3} if query_reference_value("digest") == ["a", "b"]
trust_claims := {"executables": 33} if query_reference_value("digest") == null
extensions := [{"name": "rv", "key": 1, "value": {"digest": query_reference_value("digest"), "obj": query_reference_value("obj"), "none": query_reference_value("none")}}]
`
	p := compile(t, "rv", src, WithReferenceValues(rvMap{"digest": []string{"a", "b"}, "obj": map[string]any{"n": json.Number("7")}}.query))
	a, err := p.EvaluateAppraisal(ctx, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if a.TrustVector.Executables != 3 {
		t.Errorf("executables = %d, want 3 (builtin did not return the value)", a.TrustVector.Executables)
	}
	got, _ := json.Marshal(a.Extensions)
	if string(got) != `[{"name":"rv","key":1,"value":{"digest":["a","b"],"none":null,"obj":{"n":7}}}]` {
		t.Errorf("extensions = %s", got)
	}
	if fmt.Sprint(a.MissingReferenceValues) != "[none]" {
		t.Errorf("missing = %v", a.MissingReferenceValues)
	}

	// Without a source every lookup is null.
	p = compile(t, "rv", src)
	a, err = p.EvaluateAppraisal(ctx, map[string]any{})
	if err != nil || a.TrustVector.Executables != 33 {
		t.Errorf("without source: %+v %v", a.TrustVector, err)
	}

	// A failing source is an evaluation error, not a silent null.
	boom := errors.New("store unavailable")
	p = compile(t, "rv", src, WithReferenceValues(func(context.Context, string) (any, bool, error) { return nil, false, boom }))
	if _, err := p.EvaluateAppraisal(ctx, map[string]any{}); !errors.Is(err, boom) || !strings.Contains(err.Error(), "digest") {
		t.Errorf("failing source err = %v", err)
	}

	// The lookup gets the caller's context.
	type ctxKey struct{}
	var seen any
	p = compile(t, "rv", src, WithReferenceValues(func(ctx context.Context, _ string) (any, bool, error) {
		seen = ctx.Value(ctxKey{})
		return nil, false, nil
	}))
	if _, err := p.EvaluateAppraisal(context.WithValue(ctx, ctxKey{}, "marker"), map[string]any{}); err != nil || seen != "marker" {
		t.Errorf("context not passed: %v %v", seen, err)
	}
}

func TestAppraisalSampleDefaultPolicy(t *testing.T) {
	ctx := context.Background()
	in := jsonMap(t, sampleInput)

	// Without reference values: {configuration 2, executables 33, hardware 97} -> contraindicated.
	p := compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU), WithReferenceValues(rvMap{}.query))
	a, err := p.EvaluateAppraisal(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	want := TrustVector{Configuration: 2, Executables: 33, Hardware: 97}
	if a.TrustVector != want || a.Status != StatusContraindicated {
		t.Fatalf("no RVs: %+v %s, want %+v contraindicated", a.TrustVector, a.Status, want)
	}
	joined := strings.Join(a.Reasons, "\n")
	for _, s := range []string{"hardware=97 (contraindicated)", "executables=33 (warning)",
		`query_reference_value("launch_digest")`, `query_reference_value("svn")`, "launch_digest, svn"} {
		if !strings.Contains(joined, s) {
			t.Errorf("reasons do not mention %q:\n%s", s, joined)
		}
	}
	if strings.Contains(joined, "input.snp") {
		t.Errorf("reasons mention the unrelated snp rules:\n%s", joined)
	}

	// With Trustee's test RVs -> affirming, {configuration 2, executables 3, hardware 2}.
	p = compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU), WithReferenceValues(trusteeRVs.query))
	a, err = p.EvaluateAppraisal(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	want = TrustVector{Configuration: 2, Executables: 3, Hardware: 2}
	if a.TrustVector != want || a.Status != StatusAffirming || len(a.Reasons) != 0 || len(a.MissingReferenceValues) != 0 {
		t.Fatalf("with RVs: %+v", a)
	}

	// Minor version below the minimum -> hardware 97 again, explained.
	rvs := rvMap{}
	for k, v := range trusteeRVs {
		rvs[k] = v
	}
	rvs["minimum_minor_version"] = json.Number("5")
	p = compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU), WithReferenceValues(rvs.query))
	a, _ = p.EvaluateAppraisal(ctx, in)
	if a.TrustVector.Hardware != 97 || !strings.Contains(strings.Join(a.Reasons, "\n"), "minimum_minor_version") {
		t.Fatalf("minor below minimum: %+v", a)
	}
}

// snpInput is Coffer's flat SNP claims.
func snpInput(t testing.TB, mods func(m map[string]any)) map[string]any {
	snp := map[string]any{
		"measurement":             "AABBCC",
		"reported_tcb_bootloader": 3, "reported_tcb_tee": 0, "reported_tcb_snp": 8, "reported_tcb_microcode": 115,
		"policy_debug_allowed": false, "policy_migrate_ma": false, "policy_smt_allowed": true,
	}
	if mods != nil {
		mods(snp)
	}
	b, _ := json.Marshal(map[string]any{"snp": snp})
	return jsonMap(t, string(b))
}

var snpRVs = rvMap{
	"snp_launch_measurement": []any{"aabbcc", "ddeeff"},
	"snp_bootloader":         []any{json.Number("3")},
	"snp_tee_svn":            json.Number("0"),
	"snp_snp_svn":            json.Number("8"),
	"snp_microcode":          "115",
}

func TestAppraisalSNPDefaultPolicy(t *testing.T) {
	ctx := context.Background()
	good := compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU), WithReferenceValues(snpRVs.query))
	cases := []struct {
		name   string
		p      *Policy
		mods   func(map[string]any)
		want   TrustVector
		status Status
	}{
		{"all good", good, nil, TrustVector{Executables: 3, Hardware: 2, Configuration: 2}, StatusAffirming},
		{"string claims (Trustee style)", good, func(m map[string]any) {
			m["reported_tcb_bootloader"], m["reported_tcb_tee"], m["reported_tcb_snp"], m["reported_tcb_microcode"] = "3", "0", "9", "200"
			m["policy_debug_allowed"], m["policy_migrate_ma"] = "0", "0"
		}, TrustVector{Executables: 3, Hardware: 2, Configuration: 2}, StatusAffirming},
		{"wrong measurement", good, func(m map[string]any) { m["measurement"] = "001122" },
			TrustVector{Executables: 33, Hardware: 2, Configuration: 2}, StatusWarning},
		{"old microcode", good, func(m map[string]any) { m["reported_tcb_microcode"] = 114 },
			TrustVector{Executables: 3, Hardware: 97, Configuration: 2}, StatusContraindicated},
		{"debug allowed", good, func(m map[string]any) { m["policy_debug_allowed"] = true },
			TrustVector{Executables: 3, Hardware: 2, Configuration: 96}, StatusContraindicated},
		{"optional claims absent", good, func(m map[string]any) { delete(m, "policy_migrate_ma"); delete(m, "policy_smt_allowed") },
			TrustVector{Executables: 3, Hardware: 2, Configuration: 2}, StatusAffirming},
		{"debug claim absent", good, func(m map[string]any) { delete(m, "policy_debug_allowed") },
			TrustVector{Executables: 3, Hardware: 2, Configuration: 36}, StatusWarning},
		{"migrate_ma", good, func(m map[string]any) { m["policy_migrate_ma"] = true },
			TrustVector{Executables: 3, Hardware: 2, Configuration: 36}, StatusWarning},
		{"no RVs", compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU)), nil,
			TrustVector{Executables: 33, Hardware: 97, Configuration: 2}, StatusContraindicated},
	}
	for _, c := range cases {
		a, err := c.p.EvaluateAppraisal(ctx, snpInput(t, c.mods))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if a.TrustVector != c.want || a.Status != c.status {
			t.Errorf("%s: %+v %s, want %+v %s\n%s", c.name, a.TrustVector, a.Status, c.want, c.status, strings.Join(a.Reasons, "\n"))
		}
	}
	// SMT pinned by a reference value.
	rvs := rvMap{"snp_smt_allowed": false}
	for k, v := range snpRVs {
		rvs[k] = v
	}
	p := compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU), WithReferenceValues(rvs.query))
	a, _ := p.EvaluateAppraisal(ctx, snpInput(t, nil))
	if a.TrustVector.Configuration != 36 {
		t.Errorf("smt mismatch: configuration = %d, want 36", a.TrustVector.Configuration)
	}
	a, _ = p.EvaluateAppraisal(ctx, snpInput(t, func(m map[string]any) { m["policy_smt_allowed"] = false }))
	if a.TrustVector.Configuration != 2 {
		t.Errorf("smt match: configuration = %d, want 2", a.TrustVector.Configuration)
	}
	// Wrong measurement is explained with the line of the check.
	a, _ = good.EvaluateAppraisal(ctx, snpInput(t, func(m map[string]any) { m["measurement"] = "00" }))
	if j := strings.Join(a.Reasons, "\n"); !strings.Contains(j, "snp_measurement_ok") {
		t.Errorf("wrong measurement reasons:\n%s", j)
	}
}

func TestAppraisalSemantics(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, src string
		want      TrustVector
		status    Status
		errWant   string
	}{
		{"undefined trust_claims", "package policy\nx := 1\n", TrustVector{}, StatusNone, ""},
		{"partial vector", "package policy\ntrust_claims := {\"hardware\": 2, \"sourced-data\": -40}\n",
			TrustVector{Hardware: 2, SourcedData: -40}, StatusWarning, ""},
		{"unknown claim", "package policy\ntrust_claims := {\"hardwares\": 2}\n", TrustVector{}, "", `unknown claim "hardwares"`},
		{"non-integer", "package policy\ntrust_claims := {\"hardware\": 2.5}\n", TrustVector{}, "", "integer"},
		{"string value", "package policy\ntrust_claims := {\"hardware\": \"2\"}\n", TrustVector{}, "", "integer"},
		{"out of range", "package policy\ntrust_claims := {\"hardware\": 128}\n", TrustVector{}, "", "-127..127"},
		{"not an object", "package policy\ntrust_claims := [2]\n", TrustVector{}, "", "must be an object"},
		{"empty object", "package policy\ntrust_claims := {}\n", TrustVector{}, "", "empty"},
		{"conflict", "package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 2} if true\ntrust_claims := {\"hardware\": 3} if true\n", TrustVector{}, "", "line"},
		{"bad extensions", "package policy\ntrust_claims := {\"hardware\": 2}\nextensions := {\"a\": 1}\n", TrustVector{}, "", "extensions must be an array"},
		{"bad extension key", "package policy\ntrust_claims := {\"hardware\": 2}\nextensions := [{\"name\": \"x\", \"key\": \"k\", \"value\": 1}]\n", TrustVector{}, "", "key must be"},
	}
	for _, c := range cases {
		p := compile(t, c.name, c.src)
		a, err := p.EvaluateAppraisal(ctx, map[string]any{})
		if c.errWant != "" {
			if err == nil || !strings.Contains(err.Error(), c.errWant) {
				t.Errorf("%s: err = %v, want mention of %q", c.name, err, c.errWant)
			}
			continue
		}
		if err != nil || a.TrustVector != c.want || a.Status != c.status {
			t.Errorf("%s: %+v %s %v; want %+v %s", c.name, a.TrustVector, a.Status, err, c.want, c.status)
		}
	}
}

func TestTiers(t *testing.T) {
	cases := map[int]Status{0: StatusNone, 1: StatusNone, -1: StatusNone, 2: StatusAffirming, -2: StatusAffirming,
		31: StatusAffirming, 32: StatusWarning, -95: StatusWarning, 95: StatusWarning, 96: StatusContraindicated,
		-127: StatusContraindicated, 127: StatusContraindicated}
	for v, want := range cases {
		if got := TierOf(v); got != want {
			t.Errorf("TierOf(%d) = %s, want %s", v, got, want)
		}
	}
	if s := (TrustVector{Hardware: 2, Executables: 33, Configuration: 0}).Status(); s != StatusWarning {
		t.Errorf("status = %s", s)
	}
	if s := (TrustVector{}).Status(); s != StatusNone {
		t.Errorf("zero status = %s", s)
	}
}

// token builds EAR-like token claims with one cpu0 submodule.
func token(tee string, status Status, extra map[string]any) map[string]any {
	sub := map[string]any{
		"ear.status":                      string(status),
		"ear.trustworthiness-vector":      map[string]any{"hardware": 2},
		"ear.veraison.annotated-evidence": map[string]any{tee: map[string]any{"x": 1}},
	}
	for k, v := range extra {
		sub[k] = v
	}
	return map[string]any{"submods": map[string]any{"cpu0": sub}}
}

var resourceData = map[string]any{"plugin": "resource", "resource-path": []any{"one", "two", "three"}, "query": map[string]any{}}

func TestResourceDefaults(t *testing.T) {
	ctx := context.Background()
	pol := map[string]*Policy{}
	for _, n := range []string{ResourceDefault, ResourceDev, ResourceAllowAll, ResourceDenyAll, ResourceAffirming} {
		pol[n] = compile(t, n, mustDefaultT(t, n))
	}
	other := map[string]any{"plugin": "nebula-ca", "resource-path": []any{"x"}}
	cases := []struct {
		policy string
		input  map[string]any
		data   map[string]any
		allow  bool
		reason string
	}{
		{ResourceDefault, token("snp", StatusAffirming, nil), resourceData, true, ""},
		{ResourceDefault, token("sample", StatusAffirming, nil), resourceData, false, "sample TEE"},
		{ResourceDefault, token("snp", StatusAffirming, map[string]any{"coffer.simulated": true}), resourceData, false, "simulated"},
		{ResourceDefault, token("snp", StatusWarning, nil), resourceData, false, `ear.status is "warning"`},
		{ResourceDefault, token("snp", StatusAffirming, nil), other, false, `plugin "nebula-ca"`},
		{ResourceDefault, map[string]any{"submods": map[string]any{}}, resourceData, false, "no submods"},
		{ResourceDefault, map[string]any{}, resourceData, false, "no submods"},
		{ResourceDev, token("sample", StatusContraindicated, nil), resourceData, true, ""},
		{ResourceDev, token("snp", StatusAffirming, map[string]any{"coffer.simulated": true}), resourceData, true, ""},
		{ResourceDev, token("snp", StatusAffirming, nil), other, false, `plugin "nebula-ca"`},
		{ResourceDev, map[string]any{}, resourceData, false, "no submods"},
		{ResourceAllowAll, map[string]any{}, resourceData, true, ""},
		{ResourceAllowAll, map[string]any{}, other, false, "nebula-ca"},
		{ResourceDenyAll, token("snp", StatusAffirming, nil), resourceData, false, "deny_all"},
		{ResourceAffirming, token("sample", StatusAffirming, nil), resourceData, true, ""},
		{ResourceAffirming, token("snp", StatusContraindicated, nil), resourceData, false, `cpu0: ear.status is "contraindicated"`},
	}
	for i, c := range cases {
		d, err := pol[c.policy].EvaluateAllow(ctx, c.input, c.data)
		if err != nil {
			t.Errorf("%d %s: %v", i, c.policy, err)
			continue
		}
		if d.Allow != c.allow {
			t.Errorf("%d %s: allow = %v, want %v (%s)", i, c.policy, d.Allow, c.allow, d.Explain())
			continue
		}
		if !c.allow && !strings.Contains(d.Explain(), c.reason) {
			t.Errorf("%d %s: reasons %q do not mention %q", i, c.policy, d.Reasons, c.reason)
		}
		if c.allow && len(d.Reasons) != 0 {
			t.Errorf("%d %s: allowed with reasons %q", i, c.policy, d.Reasons)
		}
	}
}

func TestDenyExplanationWithoutReasons(t *testing.T) {
	ctx := context.Background()
	// Trustee's test policy (kbs/test Makefile style), v0 syntax, no deny_reasons.
	src := `package policy

default allow = false

allow {
	data["resource-path"][0] == "one"
	data["resource-path"][1] == "two"
	input.submods.cpu0["ear.veraison.annotated-evidence"]["sample"]
}

allow {
	data.plugin == "special"
	input.admin == true
}
`
	p := compile(t, "test.rego", src)
	d, err := p.EvaluateAllow(ctx, token("snp", StatusAffirming, nil), resourceData)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow {
		t.Fatal("allowed")
	}
	j := d.Explain()
	for _, s := range []string{`policy "test.rego" denied`, "no allow rule matched",
		"allow (line 5): condition 3 of 3 failed at line 8", "allow (line 11): condition 1 of 2 failed at line 12: data.plugin == \"special\""} {
		if !strings.Contains(j, s) {
			t.Errorf("explanation does not contain %q:\n%s", s, j)
		}
	}
	d, _ = p.EvaluateAllow(ctx, token("sample", StatusAffirming, nil), resourceData)
	if !d.Allow {
		t.Errorf("sample token denied: %s", d.Explain())
	}
	// A non-boolean allow denies and says so.
	p = compile(t, "str", "package policy\nallow := \"yes\"\n")
	d, _ = p.EvaluateAllow(ctx, map[string]any{}, nil)
	if d.Allow || !strings.Contains(d.Explain(), "not a boolean") {
		t.Errorf("non-bool allow: %+v", d)
	}
	// No allow rule at all.
	p = compile(t, "none", "package policy\nx := 1\n")
	d, _ = p.EvaluateAllow(ctx, map[string]any{}, nil)
	if d.Allow || !strings.Contains(d.Explain(), "no allow rule") {
		t.Errorf("no allow rule: %+v", d)
	}
	// Explanations off still names the rules' lines.
	p = compile(t, "test.rego", src, WithExplain(false))
	d, _ = p.EvaluateAllow(ctx, token("snp", StatusAffirming, nil), resourceData)
	if d.Allow || !strings.Contains(d.Explain(), "lines 5, 11") {
		t.Errorf("explain off: %s", d.Explain())
	}
	// "reasons" is accepted as an alternative name.
	p = compile(t, "r", "package policy\nimport rego.v1\nreasons contains \"custom\" if true\n")
	d, _ = p.EvaluateAllow(ctx, map[string]any{}, nil)
	if fmt.Sprint(d.Reasons) != "[custom]" {
		t.Errorf("reasons = %q", d.Reasons)
	}
}

func TestInputForms(t *testing.T) {
	ctx := context.Background()
	p := compile(t, "in", "package policy\nimport rego.v1\nallow if input.a.b == 1\n")
	for _, in := range []any{
		map[string]any{"a": map[string]any{"b": 1}},
		json.RawMessage(`{"a":{"b":1}}`),
		[]byte(`{"a":{"b":1}}`),
		struct {
			A struct {
				B int `json:"b"`
			} `json:"a"`
		}{A: struct {
			B int `json:"b"`
		}{B: 1}},
	} {
		d, err := p.EvaluateAllow(ctx, in, nil)
		if err != nil || !d.Allow {
			t.Errorf("input %T: %+v %v", in, d, err)
		}
	}
	if _, err := p.EvaluateAllow(ctx, json.RawMessage(`{`), nil); err == nil {
		t.Error("malformed JSON input accepted")
	}
}

func TestConcurrentEvaluation(t *testing.T) {
	ctx := context.Background()
	app := compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU), WithReferenceValues(trusteeRVs.query))
	res := compile(t, ResourceDefault, mustDefaultT(t, ResourceDefault))
	in := jsonMap(t, sampleInput)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				a, err := app.EvaluateAppraisal(ctx, in)
				if err != nil || a.Status != StatusAffirming {
					t.Errorf("appraisal: %+v %v", a, err)
					return
				}
				// Different data per goroutine must not leak between evaluations.
				plugin := "resource"
				if (g+i)%2 == 1 {
					plugin = fmt.Sprintf("p%d", g)
				}
				d, err := res.EvaluateAllow(ctx, token("snp", StatusAffirming, nil), map[string]any{"plugin": plugin})
				if err != nil || d.Allow != (plugin == "resource") {
					t.Errorf("resource %s: %+v %v", plugin, d, err)
					return
				}
				if !d.Allow && !strings.Contains(d.Explain(), plugin) {
					t.Errorf("wrong reasons for %s: %s", plugin, d.Explain())
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU))
	if _, err := p.EvaluateAppraisal(ctx, jsonMap(t, sampleInput)); err == nil {
		t.Error("evaluation with a cancelled context succeeded")
	}
}

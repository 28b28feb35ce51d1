package policy

import (
	"context"
	"encoding/json"
	"reflect"
	"sync"
	"testing"
)

// syncRVs is a reference value source that tests change between calls.
type syncRVs struct {
	mu sync.Mutex
	m  rvMap
}

func (s *syncRVs) query(ctx context.Context, id string) (any, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.query(ctx, id)
}

func (s *syncRVs) set(id string, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == nil {
		delete(s.m, id)
		return
	}
	s.m[id] = v
}

// The default appraisal policy is cached by the members it reads: inputs
// that differ only in members it cannot see (nonce, key, report data) hit;
// every change of a reference value it read misses; a cached result is
// the result of evaluating.
func TestAppraisalCache(t *testing.T) {
	ctx := context.Background()
	rvs := &syncRVs{m: rvMap{}}
	for k, v := range trusteeRVs {
		rvs.m[k] = v
	}
	p := compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU), WithReferenceValues(rvs.query))
	if p.memo == nil || !reflect.DeepEqual(p.memo.keys, []string{"sample", "snp"}) {
		t.Fatalf("default_cpu is not cached by sample and snp: %+v", p.memo)
	}
	uncached := compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU), WithReferenceValues(rvs.query), WithAppraisalCache(0))
	if uncached.memo != nil {
		t.Fatal("WithAppraisalCache(0) still caches")
	}
	input := func(nonce string) map[string]any {
		in := jsonMap(t, sampleInput)
		in["runtime_data_claims"].(map[string]any)["nonce"] = nonce
		return in
	}
	check := func(step string, in map[string]any, wantStatus Status, wantHits int) {
		t.Helper()
		got, err := p.EvaluateAppraisal(ctx, in)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		want, err := uncached.EvaluateAppraisal(ctx, in)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: cached policy says %+v, evaluation %+v", step, got, want)
		}
		if got.Status != wantStatus {
			t.Errorf("%s: status %s, want %s", step, got.Status, wantStatus)
		}
		if h := p.memo.hitCount(); h != wantHits {
			t.Errorf("%s: %d cache hits, want %d", step, h, wantHits)
		}
	}
	check("first", input("a"), StatusAffirming, 0)
	check("other nonce", input("b"), StatusAffirming, 1)
	rvs.set("svn", []any{"2"}) // replaced
	check("svn replaced", input("c"), StatusContraindicated, 1)
	check("svn replaced, again", input("d"), StatusContraindicated, 2)
	rvs.set("svn", nil) // deleted or expired
	check("svn gone", input("e"), StatusContraindicated, 2)
	rvs.set("svn", []any{"1"})
	check("svn back", input("f"), StatusAffirming, 2)
	check("svn back, again", input("g"), StatusAffirming, 3)
	other := input("h")
	other["sample"].(map[string]any)["debug"] = true
	check("other claims", other, StatusWarning, 3)
	// A caller changing a result does not change the cache.
	a, _ := p.EvaluateAppraisal(ctx, other)
	if len(a.Reasons) == 0 {
		t.Fatal("a warning appraisal has no reasons")
	}
	a.Reasons[0] = "changed"
	check("after a caller's change", other, StatusWarning, 5)
}

// Policies that can see more of the input than named members, or whose
// evaluation is not a function of input and reference values, are not
// cached.
func TestAppraisalCacheRefused(t *testing.T) {
	for name, body := range map[string]string{
		"whole input":      `trust_claims := {"hardware": 2} if count(input) > 0`,
		"input as a value": `trust_claims := {"hardware": 2} if { x := input; x.sample }`,
		"dynamic member":   `trust_claims := {"hardware": 2} if { some k; input[k].debug == false }`,
		"with":             "trust_claims := t if { t := c with input.sample as {} }\nc := {\"hardware\": 2} if input.sample",
		"time":             `trust_claims := {"hardware": 2} if time.now_ns() > 0`,
		"random":           `trust_claims := {"hardware": rand.intn("x", 3)}`,
	} {
		p := compile(t, name, "package policy\nimport rego.v1\n"+body+"\n")
		if p.memo != nil {
			t.Errorf("%s: cached by %v", name, p.memo.keys)
		}
	}
	p := compile(t, "members", "package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 2} if { input.sample.debug == false; input[\"snp\"] }\n")
	if p.memo == nil || !reflect.DeepEqual(p.memo.keys, []string{"sample", "snp"}) {
		t.Errorf("named members: %+v", p.memo)
	}
}

// An input that is not a JSON object map is evaluated, not cached.
func TestAppraisalCacheRawInput(t *testing.T) {
	p := compile(t, DefaultCPU, mustDefaultT(t, DefaultCPU), WithReferenceValues(trusteeRVs.query))
	for range 2 {
		a, err := p.EvaluateAppraisal(context.Background(), json.RawMessage(sampleInput))
		if err != nil || a.Status != StatusAffirming {
			t.Fatal(a, err)
		}
	}
	if h := p.memo.hitCount(); h != 0 {
		t.Fatalf("%d hits for raw JSON input", h)
	}
}

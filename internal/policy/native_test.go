package policy

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/coffer-project/coffer/internal/policy/builtin"
)

// regoOnly returns a copy of p without its native allow rule.
func regoOnly(p *Policy) *Policy {
	q := *p
	q.native = nil
	return &q
}

func TestNativeForBuiltinsOnly(t *testing.T) {
	for name := range nativeAllows {
		p := compile(t, name, mustDefaultT(t, name))
		if p.native == nil {
			t.Errorf("built-in %s has no native allow rule", name)
		}
		// One byte more is a user's policy: Rego only.
		if q := compile(t, name, mustDefaultT(t, name)+"\n"); q.native != nil {
			t.Errorf("%s plus a newline kept the native rule", name)
		}
	}
	if p := compile(t, builtin.ResourceAffirming, mustDefaultT(t, builtin.ResourceAffirming)); p.native != nil {
		t.Error("affirming.rego got a native rule it does not have")
	}
}

// nativeSeeds are token claims around the shapes the built-in policies
// look at.
var nativeSeeds = []string{
	`{"submods":{"cpu0":{"ear.status":"affirming","ear.veraison.annotated-evidence":{"snp":{"x":1}}}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming","ear.veraison.annotated-evidence":{"sample":{"x":1}}}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming","ear.veraison.annotated-evidence":{"sample":false}}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming","ear.veraison.annotated-evidence":{"sample":null}}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming","coffer.simulated":true}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming","coffer.simulated":"true"}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming","ear.veraison.annotated-evidence":{"snp":{"simulated":true}}}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming","ear.veraison.annotated-evidence":{"snp":{"simulated":1}}}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming","ear.veraison.annotated-evidence":"sample"}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming","ear.veraison.annotated-evidence":[{"sample":1}]}}}`,
	`{"submods":{"cpu0":{"ear.status":"warning"},"cpu1":{"ear.status":"affirming"}}}`,
	`{"submods":{"cpu0":{"ear.status":"affirming"},"cpu1":{"ear.status":"affirming"}}}`,
	`{"submods":{"cpu0":"affirming"}}`,
	`{"submods":["x"]}`, `{"submods":"abc"}`, `{"submods":{}}`, `{"submods":null}`, `{}`, `[]`, `null`,
}

// FuzzNativeAllow checks the safety property of the native rules: they
// never allow a request the Rego policy denies (with the plugin of the
// data varied too).
func FuzzNativeAllow(f *testing.F) {
	for _, s := range nativeSeeds {
		f.Add([]byte(s), "resource")
	}
	f.Add([]byte(nativeSeeds[0]), "nebula-ca")
	pols := map[string][2]*Policy{}
	for name := range nativeAllows {
		text, err := builtin.Text(name)
		if err != nil {
			f.Fatal(err)
		}
		p, err := Compile(name, text)
		if err != nil {
			f.Fatal(err)
		}
		pols[name] = [2]*Policy{p, regoOnly(p)}
	}
	f.Fuzz(func(t *testing.T, claims []byte, plugin string) {
		if !json.Valid(claims) {
			return
		}
		data := map[string]any{"plugin": plugin, "resource-path": []any{"a", "b", "c"}, "query": map[string]any{}}
		for name, pp := range pols {
			fast, ferr := pp[0].EvaluateAllow(context.Background(), json.RawMessage(claims), data)
			slow, serr := pp[1].EvaluateAllow(context.Background(), json.RawMessage(claims), data)
			if ferr != nil || serr != nil {
				// Only ambiguous claims (a member named twice) are
				// refused, and by both paths alike.
				if !errors.Is(ferr, errDuplicateMember) || !errors.Is(serr, errDuplicateMember) {
					t.Fatalf("%s: native path error %v, Rego error %v", name, ferr, serr)
				}
				continue
			}
			if fast.Allow && !slow.Allow {
				t.Fatalf("%s: native allows %s (plugin %q) but Rego denies: %s", name, claims, plugin, slow.Explain())
			}
			if fast.Allow != slow.Allow || fast.Explain() != slow.Explain() {
				t.Fatalf("%s: %s (plugin %q): native path %+v, Rego %+v", name, claims, plugin, fast, slow)
			}
		}
	})
}

// The native rules decide the common cases themselves (not by falling
// back): a hit must not evaluate Rego at all.
func TestNativeAllowDecidesCommonCases(t *testing.T) {
	dev := compile(t, ResourceDev, mustDefaultT(t, ResourceDev))
	def := compile(t, ResourceDefault, mustDefaultT(t, ResourceDefault))
	allowed := []struct {
		p      *Policy
		claims string
	}{
		{dev, nativeSeeds[1]}, {dev, nativeSeeds[4]}, {def, nativeSeeds[0]}, {def, nativeSeeds[2]},
		{def, nativeSeeds[5]}, {def, nativeSeeds[7]}, {def, nativeSeeds[11]},
	}
	for _, a := range allowed {
		in, err := toValue(json.RawMessage(a.claims))
		if err != nil {
			t.Fatal(err)
		}
		dv, _ := toValue(json.RawMessage(`{"plugin":"resource"}`))
		if !a.p.native(in, dv) {
			t.Errorf("%s: native rule does not allow %s", a.p.Name(), a.claims)
		}
	}
}

// FuzzProjectJSON checks the projection: in full it is jsonToValue, and
// every native rule decides the same on the claims projected onto
// nativeClaims as on the whole claims.
func FuzzProjectJSON(f *testing.F) {
	for _, s := range nativeSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"submods":{"cpu0":{"x":[1,{"a":"}\"]"}],"ear.status":"affirming"},"cpu0":{"ear.status":"warning"}}, "z": -1.5e3}`))
	data, _ := toValue(json.RawMessage(`{"plugin":"resource"}`))
	f.Fuzz(func(t *testing.T, claims []byte) {
		if !json.Valid(claims) {
			if _, err := projectJSON(claims, nativeClaims); err == nil {
				t.Fatal("invalid JSON accepted")
			}
			return
		}
		whole, err := jsonToValue(claims)
		if errors.Is(err, errDuplicateMember) {
			// Refused in full, so refused projected too: no rule can
			// decide on a member the whole value does not have.
			if _, err := projectJSON(claims, nativeClaims); !errors.Is(err, errDuplicateMember) {
				t.Fatalf("duplicate members refused in full but projected: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		full, err := projectJSON(claims, &projShape{full: true})
		if err != nil || full.Compare(whole) != 0 {
			t.Fatalf("full projection %v, %v; want %v", full, err, whole)
		}
		proj, err := projectJSON(claims, nativeClaims)
		if err != nil {
			t.Fatal(err)
		}
		for name, rule := range nativeAllows {
			if a, b := rule(proj, data), rule(whole, data); a != b {
				t.Fatalf("%s: %v on the projection %v, %v on %s", name, a, proj, b, claims)
			}
		}
	})
}

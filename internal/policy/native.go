package policy

import (
	"github.com/coffer-project/coffer/internal/policy/builtin"
	"github.com/open-policy-agent/opa/v1/ast"
)

// nativeAllow is a Go rendering of one built-in resource policy's allow
// rule. It answers true only when it is certain that the Rego policy
// allows the request; for anything else (a denial, or an input shape it
// does not recognise) it answers false and EvaluateAllow runs the Rego
// policy, so denials and their reasons always come from Rego. OPA's
// per-query set-up costs ~50 µs per request; this costs ~1 µs.
//
// A policy gets one only when its text is byte-identical to the built-in
// (whoever stored it). FuzzNativeAllow checks that it never allows what
// the Rego policy denies.
type nativeAllow func(input, data ast.Value) bool

// nativeAllows maps built-in resource policies to their native allow rule.
var nativeAllows = map[string]nativeAllow{
	builtin.ResourceDev:      devAllow,
	builtin.ResourceDefault:  defaultAllow,
	builtin.ResourceAllowAll: func(_, data ast.Value) bool { return memberIs(data, "plugin", "resource") },
}

// nativeClaims is every member of the token claims a native rule reads.
var nativeClaims = &projShape{members: map[string]*projShape{
	"submods": {any: &projShape{members: map[string]*projShape{
		"ear.status":       {full: true},
		"coffer.simulated": {full: true},
		"ear.veraison.annotated-evidence": {members: map[string]*projShape{
			// Only whether .sample is defined and not false matters: an
			// object (the sample claims) is kept as an empty object.
			"sample": {members: map[string]*projShape{}},
			"snp":    {members: map[string]*projShape{"simulated": {full: true}}},
		}},
	}}},
}}

// nativeFor returns the native allow rule for a module text identical to a
// built-in policy's, or nil.
func nativeFor(module string) nativeAllow {
	for name, f := range nativeAllows {
		if text, err := builtin.Text(name); err == nil && text == module {
			return f
		}
	}
	return nil
}

// member returns v[key] when v is an object that has it.
func member(v ast.Value, key string) (ast.Value, bool) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, false
	}
	t := obj.Get(ast.StringTerm(key))
	if t == nil {
		return nil, false
	}
	return t.Value, true
}

// memberIs reports whether v[key] is the string want.
func memberIs(v ast.Value, key, want string) bool {
	m, ok := member(v, key)
	s, isStr := m.(ast.String)
	return ok && isStr && string(s) == want
}

// submods returns input.submods when it is a non-empty object (has_submods
// in the built-in policies).
func submods(input ast.Value) (ast.Object, bool) {
	v, ok := member(input, "submods")
	if !ok {
		return nil, false
	}
	obj, ok := v.(ast.Object)
	return obj, ok && obj.Len() > 0
}

// devAllow is dev.rego's allow: the resource plugin and an attested TEE.
func devAllow(input, data ast.Value) bool {
	if !memberIs(data, "plugin", "resource") {
		return false
	}
	_, ok := submods(input)
	return ok
}

// defaultAllow is default.rego's allow: the resource plugin, an attested
// TEE, no sample or simulated evidence, and every submodule affirming.
func defaultAllow(input, data ast.Value) bool {
	if !memberIs(data, "plugin", "resource") {
		return false
	}
	subs, ok := submods(input)
	if !ok {
		return false
	}
	sure := true
	subs.Foreach(func(_, t *ast.Term) {
		if sure && !plainAffirming(t.Value) {
			sure = false
		}
	})
	return sure
}

// plainAffirming reports whether a submodule is certainly affirming, not
// from the sample TEE and not simulated, in default.rego's terms.
func plainAffirming(s ast.Value) bool {
	if _, isObj := s.(ast.Object); !isObj {
		return false
	}
	if !memberIs(s, "ear.status", "affirming") {
		return false
	}
	if v, ok := member(s, "coffer.simulated"); ok && v.Compare(ast.Boolean(true)) == 0 {
		return false
	}
	ae, ok := member(s, "ear.veraison.annotated-evidence")
	if !ok {
		return true
	}
	if _, isObj := ae.(ast.Object); !isObj {
		return false // let Rego decide what .sample means here
	}
	// any_sample: .sample defined and not false.
	if v, ok := member(ae, "sample"); ok && v.Compare(ast.Boolean(false)) != 0 {
		return false
	}
	// simulated: .snp.simulated == true.
	if snp, ok := member(ae, "snp"); ok {
		if v, ok := member(snp, "simulated"); ok && v.Compare(ast.Boolean(true)) == 0 {
			return false
		}
	}
	return true
}

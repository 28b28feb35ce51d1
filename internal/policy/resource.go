package policy

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Decision is the result of EvaluateAllow.
type Decision struct {
	// Policy is the name the policy was compiled with.
	Policy string `json:"policy"`
	Allow  bool   `json:"allow"`
	// Reasons says why the request was denied: the policy's own
	// deny_reasons / reasons when it defines them and they are non-empty,
	// otherwise an explanation naming each allow rule and the condition
	// that failed. Empty when allowed.
	Reasons []string `json:"reasons,omitempty"`
}

// Explain returns the reasons as one line, for error details and logs.
func (d Decision) Explain() string {
	if d.Allow {
		return fmt.Sprintf("policy %q allowed the request", d.Policy)
	}
	return fmt.Sprintf("policy %q denied the request: %s", d.Policy, strings.Join(d.Reasons, "; "))
}

// EvaluateAllow evaluates data.policy.allow with input (the verified token
// claims) and data (Trustee: {"plugin", "resource-path", "query"}). Only a
// boolean true allows; undefined or any other value denies. A denial
// always carries reasons. Errors are evaluation failures (the caller
// should deny too).
func (p *Policy) EvaluateAllow(ctx context.Context, input any, data map[string]any) (Decision, error) {
	d := Decision{Policy: p.name}
	var dv ast.Value
	if data != nil {
		var err error
		if dv, err = ast.InterfaceToValue(data); err != nil {
			return d, fmt.Errorf("policy %q: data is not JSON-like: %w", p.name, err)
		}
	}
	if p.native != nil && ctx.Err() == nil {
		// The native rules read only the members nativeClaims names: a
		// token's JSON is projected onto them, not converted in full.
		if in, err := projectValue(input, nativeClaims); err == nil && p.native(in, dv) {
			d.Allow = true
			return d, nil
		}
	}
	in, err := toValue(input)
	if err != nil {
		return d, fmt.Errorf("policy %q: input is not JSON-like: %w", p.name, err)
	}
	vars, err := p.eval(ctx, p.allow, in, dv)
	if err != nil {
		return d, err
	}
	list, _ := vars["allow"].([]any)
	if len(list) > 0 {
		if b, ok := list[0].(bool); ok && b {
			d.Allow = true
			return d, nil
		}
	}
	d.Reasons = p.denyReasons(ctx, in, dv, list)
	return d, nil
}

func (p *Policy) denyReasons(ctx context.Context, in, dv ast.Value, allow []any) []string {
	var reasons []string
	if p.reasons != nil {
		vars, err := p.eval(ctx, *p.reasons, in, dv)
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("deny_reasons could not be evaluated: %v", err))
		} else {
			reasons = append(reasons, stringsOf(vars["dr"])...)
			reasons = append(reasons, stringsOf(vars["r"])...)
		}
		if len(reasons) > 0 {
			return dedupe(reasons)
		}
	}
	if len(allow) > 0 {
		if _, isBool := allow[0].(bool); !isBool {
			return []string{fmt.Sprintf("data.policy.allow is %s, not a boolean; only true allows", jsonText(allow[0]))}
		}
	}
	bodies := p.rules["allow"]
	if len(bodies) == 0 {
		return append(reasons, "the policy defines no allow rule, so it denies every request")
	}
	reasons = append(reasons, "no allow rule matched")
	if !p.cfg.explain {
		lines := make([]string, 0, len(bodies))
		for _, b := range bodies {
			lines = append(lines, fmt.Sprint(b.line))
		}
		return append(reasons, "allow rules are at lines "+strings.Join(lines, ", "))
	}
	fails, err := p.traceRun(ctx, p.allow, in, dv)
	if err != nil {
		return append(reasons, fmt.Sprintf("could not trace the policy: %v", err))
	}
	for _, f := range p.failuresIn(fails, "allow") {
		reasons = append(reasons, f.String())
	}
	return reasons
}

// stringsOf flattens a comprehension result holding a set/array of
// strings or a string into strings, sorted.
func stringsOf(x any) []string {
	list, _ := x.([]any)
	var out []string
	for _, v := range list {
		switch t := v.(type) {
		case string:
			out = append(out, t)
		case []any:
			for _, e := range t {
				if s, ok := e.(string); ok {
					out = append(out, s)
				} else {
					out = append(out, jsonText(e))
				}
			}
		default:
			out = append(out, jsonText(t))
		}
	}
	sort.Strings(out)
	return out
}

func dedupe(s []string) []string {
	out := s[:0]
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

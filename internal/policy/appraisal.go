package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/coffer-project/coffer/internal/attestation/ear"
	"github.com/open-policy-agent/opa/v1/ast"
)

// Status is an EAR trust tier / appraisal status.
type Status string

// EAR statuses, from best to worst as ranked for the overall status
// (none < affirming < warning < contraindicated).
const (
	StatusNone            Status = "none"
	StatusAffirming       Status = "affirming"
	StatusWarning         Status = "warning"
	StatusContraindicated Status = "contraindicated"
)

func (s Status) rank() int {
	switch s {
	case StatusAffirming:
		return 1
	case StatusWarning:
		return 2
	case StatusContraindicated:
		return 3
	}
	return 0
}

// TierOf returns the trust tier of one claim value; the rule is the EAR
// token's (ear.Tier, veraison/rust-ear), so the policy's explanations and
// the token's status never disagree.
func TierOf(v int) Status {
	if v < -128 || v > 127 {
		return StatusContraindicated
	}
	return Status(ear.Tier(int8(v)))
}

// The AR4SI trustworthiness claims, in EAR order.
const (
	ClaimInstanceIdentity = "instance-identity"
	ClaimConfiguration    = "configuration"
	ClaimExecutables      = "executables"
	ClaimFileSystem       = "file-system"
	ClaimHardware         = "hardware"
	ClaimRuntimeOpaque    = "runtime-opaque"
	ClaimStorageOpaque    = "storage-opaque"
	ClaimSourcedData      = "sourced-data"
)

// claimNames lists the AR4SI claims in EAR order.
var claimNames = [...]string{
	ClaimInstanceIdentity, ClaimConfiguration, ClaimExecutables, ClaimFileSystem,
	ClaimHardware, ClaimRuntimeOpaque, ClaimStorageOpaque, ClaimSourcedData,
}

// ClaimNames returns the AR4SI claim names in EAR order.
func ClaimNames() []string { return append([]string(nil), claimNames[:]...) }

// TrustVector is an EAR trustworthiness vector (JSON member names as in
// the token's "ear.trustworthiness-vector").
type TrustVector struct {
	InstanceIdentity int `json:"instance-identity"`
	Configuration    int `json:"configuration"`
	Executables      int `json:"executables"`
	FileSystem       int `json:"file-system"`
	Hardware         int `json:"hardware"`
	RuntimeOpaque    int `json:"runtime-opaque"`
	StorageOpaque    int `json:"storage-opaque"`
	SourcedData      int `json:"sourced-data"`
}

func (v *TrustVector) field(name string) *int {
	switch name {
	case ClaimInstanceIdentity:
		return &v.InstanceIdentity
	case ClaimConfiguration:
		return &v.Configuration
	case ClaimExecutables:
		return &v.Executables
	case ClaimFileSystem:
		return &v.FileSystem
	case ClaimHardware:
		return &v.Hardware
	case ClaimRuntimeOpaque:
		return &v.RuntimeOpaque
	case ClaimStorageOpaque:
		return &v.StorageOpaque
	case ClaimSourcedData:
		return &v.SourcedData
	}
	return nil
}

// Get returns the value of the named claim.
func (v TrustVector) Get(name string) (int, bool) {
	if f := v.field(name); f != nil {
		return *f, true
	}
	return 0, false
}

// Status returns the worst tier over all claims.
func (v TrustVector) Status() Status {
	worst := StatusNone
	for _, n := range claimNames {
		c, _ := v.Get(n)
		if t := TierOf(c); t.rank() > worst.rank() {
			worst = t
		}
	}
	return worst
}

// Extension is one EAR extension produced by data.policy.extensions.
type Extension struct {
	Name  string `json:"name"`
	Key   int32  `json:"key"`
	Value any    `json:"value"`
}

// Appraisal is the result of EvaluateAppraisal.
type Appraisal struct {
	// Policy is the name the policy was compiled with.
	Policy      string      `json:"policy"`
	TrustVector TrustVector `json:"ear.trustworthiness-vector"`
	Status      Status      `json:"ear.status"`
	Extensions  []Extension `json:"extensions,omitempty"`
	// Reasons explains a status other than affirming: each claim in the
	// warning or contraindicated tier with its AR4SI meaning, and (when
	// explanations are on) the condition that kept the claim's rules from
	// matching. Empty when the status is affirming or none.
	Reasons []string `json:"reasons,omitempty"`
	// MissingReferenceValues lists ids passed to query_reference_value
	// that were not registered or had expired.
	MissingReferenceValues []string `json:"missing_reference_values,omitempty"`
}

// EvaluateAppraisal evaluates the policy as a Trustee appraisal policy
// over input (the annotated evidence of one TEE). An undefined
// data.policy.trust_claims gives an all-zero vector (status none); a
// trust_claims that is not an object, is empty, names an unknown claim or
// holds a value that is not an integer in −127..127 is an error, as is a
// malformed extensions array.
func (p *Policy) EvaluateAppraisal(ctx context.Context, input any) (Appraisal, error) {
	if p.memo == nil {
		return p.evaluateAppraisal(ctx, input)
	}
	proj, ok := p.memo.project(input)
	if !ok {
		return p.evaluateAppraisal(ctx, input)
	}
	if a, hit := p.memo.get(ctx, p, proj); hit {
		return a, nil
	}
	notes := &evalNotes{}
	a, err := p.evaluateAppraisal(context.WithValue(ctx, notesKey{}, notes), input)
	if err == nil {
		notes.mu.Lock()
		lookups := notes.lookups
		notes.mu.Unlock()
		p.memo.put(proj, lookups, a)
	}
	return a, err
}

func (p *Policy) evaluateAppraisal(ctx context.Context, input any) (Appraisal, error) {
	a := Appraisal{Policy: p.name}
	in, err := toValue(input)
	if err != nil {
		return a, fmt.Errorf("policy %q: appraisal input is not JSON-like: %w", p.name, err)
	}
	notes, _ := ctx.Value(notesKey{}).(*evalNotes)
	if notes == nil {
		notes = &evalNotes{}
	}
	ctx = context.WithValue(ctx, notesKey{}, notes)
	vars, err := p.eval(ctx, p.appraisal, in, nil)
	if err != nil {
		return a, err
	}
	if err := p.parseTrustClaims(vars["tc"], &a.TrustVector); err != nil {
		return a, err
	}
	if a.Extensions, err = p.parseExtensions(vars["ext"]); err != nil {
		return a, err
	}
	a.Status = a.TrustVector.Status()
	a.MissingReferenceValues = notes.missing
	sort.Strings(a.MissingReferenceValues)
	if a.Status.rank() > StatusAffirming.rank() {
		a.Reasons = p.explainAppraisal(ctx, in, a)
	}
	return a, nil
}

func (p *Policy) parseTrustClaims(x any, v *TrustVector) error {
	list, _ := x.([]any)
	if len(list) == 0 {
		return nil // undefined: all claims 0
	}
	obj, ok := list[0].(map[string]any)
	if !ok {
		return fmt.Errorf("policy %q: data.policy.trust_claims must be an object of claim name to integer, got %s", p.name, jsonText(list[0]))
	}
	if len(obj) == 0 {
		return fmt.Errorf("policy %q: data.policy.trust_claims is an empty object; set at least one of %s", p.name, strings.Join(claimNames[:], ", "))
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		f := v.field(k)
		if f == nil {
			return fmt.Errorf("policy %q: data.policy.trust_claims has unknown claim %q; valid claims are %s", p.name, k, strings.Join(claimNames[:], ", "))
		}
		n, err := claimInt(obj[k])
		if err != nil {
			return fmt.Errorf("policy %q: data.policy.trust_claims[%q] = %s: %w", p.name, k, jsonText(obj[k]), err)
		}
		*f = n
	}
	return nil
}

func claimInt(x any) (int, error) {
	num, ok := x.(json.Number)
	if !ok {
		return 0, fmt.Errorf("must be an integer in -127..127")
	}
	n, err := num.Int64()
	if err != nil {
		return 0, fmt.Errorf("must be an integer in -127..127")
	}
	if n < -127 || n > 127 {
		return 0, fmt.Errorf("out of range: must be an integer in -127..127")
	}
	return int(n), nil
}

func (p *Policy) parseExtensions(x any) ([]Extension, error) {
	list, _ := x.([]any)
	if len(list) == 0 {
		return nil, nil
	}
	arr, ok := list[0].([]any)
	if !ok {
		return nil, fmt.Errorf("policy %q: data.policy.extensions must be an array of {\"name\",\"key\",\"value\"}, got %s", p.name, jsonText(list[0]))
	}
	out := make([]Extension, 0, len(arr))
	for i, e := range arr {
		obj, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("policy %q: data.policy.extensions[%d] must be an object {\"name\",\"key\",\"value\"}, got %s", p.name, i, jsonText(e))
		}
		name, ok := obj["name"].(string)
		if !ok || name == "" {
			return nil, fmt.Errorf("policy %q: data.policy.extensions[%d].name must be a non-empty string", p.name, i)
		}
		num, ok := obj["key"].(json.Number)
		k, err := num.Int64()
		if !ok || err != nil || k < math.MinInt32 || k > math.MaxInt32 {
			return nil, fmt.Errorf("policy %q: data.policy.extensions[%d] (%s): key must be a 32-bit integer", p.name, i, name)
		}
		val, ok := obj["value"]
		if !ok {
			return nil, fmt.Errorf("policy %q: data.policy.extensions[%d] (%s) has no value", p.name, i, name)
		}
		out = append(out, Extension{Name: name, Key: int32(k), Value: val})
	}
	return out, nil
}

func jsonText(x any) string {
	b, err := json.Marshal(x)
	if err != nil {
		return fmt.Sprint(x)
	}
	s := string(b)
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// explainAppraisal names the warning / contraindicated claims and, with
// explanations on, what kept each claim's rules from matching.
func (p *Policy) explainAppraisal(ctx context.Context, in ast.Value, a Appraisal) []string {
	var reasons []string
	var bad []string
	for _, n := range claimNames {
		c, _ := a.TrustVector.Get(n)
		t := TierOf(c)
		if t.rank() <= StatusAffirming.rank() {
			continue
		}
		bad = append(bad, n)
		msg := fmt.Sprintf("%s=%d (%s)", n, c, t)
		if m := claimMeaning(n, c); m != "" {
			msg += ": " + m
		}
		reasons = append(reasons, msg)
	}
	if p.cfg.explain && len(bad) > 0 {
		fails, err := p.traceRun(ctx, p.appraisal, in, nil)
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("could not trace the policy to explain the claims: %v", err))
		}
		for _, n := range bad {
			if err != nil {
				break
			}
			fs := p.failuresIn(fails, n, strings.ReplaceAll(n, "-", "_"))
			for _, f := range furthest(fs) {
				if f.idx < 0 {
					continue
				}
				reasons = append(reasons, n+": "+f.String())
			}
		}
	}
	if len(a.MissingReferenceValues) > 0 {
		reasons = append(reasons, "reference values queried but not registered or expired (optional ones included): "+strings.Join(a.MissingReferenceValues, ", ")+"; register the required ones with a reference-value message")
	}
	return reasons
}

// claimMeaning returns the AR4SI meaning of common claim values.
func claimMeaning(claim string, v int) string {
	generic := map[int]string{
		0:  "no claim being made",
		1:  "verifier malfunction",
		-1: "verifier malfunction",
		99: "cryptographic validation of the evidence failed",
	}
	specific := map[string]map[int]string{
		ClaimInstanceIdentity: {2: "recognized and not compromised", 96: "identity not recognized", 97: "identity compromised"},
		ClaimConfiguration: {2: "approved configuration", 3: "no known vulnerabilities", 32: "configuration has known vulnerabilities",
			36: "security-relevant configuration elements are unavailable to the verifier", 96: "unsupportable configuration (e.g. debug enabled)"},
		ClaimExecutables: {2: "only approved executables loaded", 3: "only approved boot-time executables loaded", 32: "unrecognized runtime executables loaded",
			33: "runtime memory includes executables, scripts, files or objects which are not recognized", 96: "contraindicated executables loaded", 99: "executables failed cryptographic validation"},
		ClaimFileSystem: {2: "only approved files", 32: "unrecognized files", 96: "contraindicated files"},
		ClaimHardware: {2: "genuine, supported hardware/firmware", 3: "hardware has known vulnerabilities but is patched", 32: "hardware/firmware has known vulnerabilities",
			96: "hardware/firmware is contraindicated", 97: "hardware or firmware not recognized (missing or mismatching reference values)"},
		ClaimRuntimeOpaque: {2: "memory encrypted and isolated", 32: "memory not encrypted", 96: "memory visible to untrusted parties"},
		ClaimStorageOpaque: {2: "hardware-protected secrets", 32: "secrets encrypted in software", 96: "secrets not protected"},
		ClaimSourcedData:   {2: "all data from trusted sources", 32: "data from unknown sources", 96: "data from contraindicated sources"},
	}
	if m, ok := specific[claim][v]; ok {
		return m
	}
	return generic[v]
}

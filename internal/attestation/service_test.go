package attestation

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-project/coffer/internal/attestation/ear"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/store"
	"github.com/coffer-project/coffer/internal/tee"
)

// newSampleService returns a service that verifies sample evidence and
// appraises it with appraisal (stored as default_cpu).
func newSampleService(t *testing.T, appraisal string) *Service {
	t.Helper()
	st := store.NewMemory()
	t.Cleanup(func() { st.Close() })
	signer, err := ear.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewService(ServiceConfig{Verifiers: []Verifier{NewSampleVerifier()}, Store: st, Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetPolicy(context.Background(), "default_cpu", []byte(appraisal)); err != nil {
		t.Fatalf("set appraisal policy: %v", err)
	}
	return s
}

// attestSample runs one sample attestation through s.
func attestSample(t *testing.T, s *Service) (*Result, error) {
	t.Helper()
	_, pub, err := protocol.NewTeeKey(protocol.AlgECDHESA256KW, protocol.CurveP256)
	if err != nil {
		t.Fatal(err)
	}
	nonce, err := protocol.NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	additional := ""
	digest, err := protocol.RuntimeDataDigest(protocol.HashSHA384, nonce, pub, &additional)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := tee.NewSample().Evidence(context.Background(), digest)
	if err != nil {
		t.Fatal(err)
	}
	return s.Attest(context.Background(), "sample", nonce, &protocol.Attestation{
		RuntimeData: protocol.RuntimeData{Nonce: nonce, TeePubKey: pub},
		TeeEvidence: protocol.TeeEvidence{PrimaryEvidence: ev},
	})
}

// The extensions an appraisal policy produces (data.policy.extensions)
// are members of the token's appraisal, signed with it;
// ear.trustee.identifiers from the policy replaces the default one.
func TestAttestCarriesPolicyExtensions(t *testing.T) {
	s := newSampleService(t, `package policy
import rego.v1
trust_claims := {"executables": 3, "hardware": 2}
extensions := [
	{"name": "example.workload", "key": 1000, "value": {"tier": "gold", "svn": to_number(input.sample.svn)}},
	{"name": "ear.trustee.identifiers", "key": -18, "value": {"validated": {"container_images": ["registry/app@sha256:00"]}}},
]
`)
	res, err := attestSample(t, s)
	if err != nil {
		t.Fatal(err)
	}
	// What the token's signature covers: the verified payload.
	payload, err := s.VerifyToken(res.Token)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Submods map[string]map[string]json.RawMessage `json:"submods"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	cpu := claims.Submods["cpu0"]
	if got := string(cpu["example.workload"]); got != `{"svn":1,"tier":"gold"}` {
		t.Errorf(`submods.cpu0["example.workload"] = %s, want {"svn":1,"tier":"gold"}`, got)
	}
	if got := string(cpu[ear.MemberIdentifiers]); got != `{"validated":{"container_images":["registry/app@sha256:00"]}}` {
		t.Errorf("submods.cpu0[%q] = %s, want the policy's", ear.MemberIdentifiers, got)
	}
	if got := string(cpu[ear.MemberStatus]); got != `"affirming"` {
		t.Errorf("ear.status %s", got)
	}
	// The EAR decoder sees it as an extension.
	var full ear.Claims
	if err := json.Unmarshal(payload, &full); err != nil {
		t.Fatal(err)
	}
	if ext := full.Submods["cpu0"].Extensions; len(ext) != 1 || ext["example.workload"] == nil {
		t.Errorf("decoded extensions %v, want example.workload only", ext)
	}

	// Without extensions the token keeps Trustee's empty identifiers.
	s = newSampleService(t, "package policy\nimport rego.v1\ntrust_claims := {\"executables\": 3}\n")
	if res, err = attestSample(t, s); err != nil {
		t.Fatal(err)
	}
	var plain struct {
		Submods map[string]map[string]json.RawMessage `json:"submods"`
	}
	if err := json.Unmarshal(res.Claims, &plain); err != nil {
		t.Fatal(err)
	}
	if got := string(plain.Submods["cpu0"][ear.MemberIdentifiers]); got != `{"validated":{}}` {
		t.Errorf("default identifiers %s", got)
	}
}

// An extension that would overwrite a standard member (or is given twice,
// or a non-object identifiers) fails the attestation with a check error
// naming the extension; no token is issued.
func TestAttestRefusesCollidingExtensions(t *testing.T) {
	for _, c := range []struct{ name, ext, want string }{
		{"status", `{"name": "ear.status", "key": 1, "value": "affirming"}`, `"ear.status" is a standard EAR appraisal member`},
		{"simulated", `{"name": "coffer.simulated", "key": 1, "value": false}`, `"coffer.simulated" is a standard EAR appraisal member`},
		{"vector", `{"name": "ear.trustworthiness-vector", "key": 1, "value": {}}`, `"ear.trustworthiness-vector" is a standard`},
		{"twice", `{"name": "x", "key": 1, "value": 1}, {"name": "x", "key": 2, "value": 2}`, `"x" is given twice`},
		{"identifiers not an object", `{"name": "ear.trustee.identifiers", "key": -18, "value": [1]}`, `"ear.trustee.identifiers" must be an object`},
		// encoding/json matches member names case-insensitively, with
		// Unicode folding ("ſ" is "s"): these would override the status
		// or the annotated evidence (the tee-pubkey) when a token is read.
		{"status, other case", `{"name": "EAR.STATUS", "key": 1, "value": "affirming"}`, `"EAR.STATUS" is a standard EAR appraisal member`},
		{"status, folded", `{"name": "ear.ſtatus", "key": 1, "value": "affirming"}`, `is a standard EAR appraisal member`},
		{"evidence, other case", `{"name": "EAR.veraison.annotated-evidence", "key": 1, "value": {}}`, `is a standard EAR appraisal member`},
		{"too big", `{"name": "big", "key": 1, "value": concat("", [x | some i in numbers.range(1, 2000); x := "0123456789"])}`, `exceed 16384 bytes`},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSampleService(t, "package policy\nimport rego.v1\ntrust_claims := {\"executables\": 3}\nextensions := ["+c.ext+"]\n")
			res, err := attestSample(t, s)
			if res != nil {
				t.Fatalf("token issued: %+v", res)
			}
			var ce *CheckError
			if !errors.As(err, &ce) || ce.Check != "appraisal-extensions" || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "default_cpu") {
				t.Fatalf("error %v, want an appraisal-extensions check error naming default_cpu and containing %q", err, c.want)
			}
		})
	}
}

package attestation

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/coffer-project/coffer/internal/attestation/ear"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/policy"
	"github.com/coffer-project/coffer/internal/store"
	"github.com/coffer-project/coffer/internal/version"
)

// ServiceConfig configures the attestation service.
type ServiceConfig struct {
	Verifiers []Verifier
	// Store holds the appraisal policies (store.NSAttestPolicies).
	Store store.Store
	// ReferenceValues backs query_reference_value in appraisal policies.
	ReferenceValues policy.ReferenceValueFunc
	Signer          *ear.Signer
	TokenTTL        time.Duration
	Log             *slog.Logger
	Now             func() time.Time
}

// Service verifies evidence, appraises it with the Rego policy
// default_<class> and issues EAR tokens, like Trustee's attestation
// service (in process).
type Service struct {
	verifiers map[string]Verifier
	cfg       ServiceConfig
	tokens    *ear.Verifier

	mu       sync.Mutex
	policies map[string]*policy.Policy // by policy id
	// policyWrite keeps the stored policy and the one in force equal.
	policyWrite sync.Mutex
}

// Result describes an attestation: the token and the appraisal.
type Result struct {
	Token string
	// Claims is the token's payload: the signed claims JSON.
	Claims json.RawMessage
	// Expiry is the token's exp claim (Unix seconds).
	Expiry    int64
	Status    string
	Reasons   []string
	Simulated bool
}

// NewService returns the service.
func NewService(cfg ServiceConfig) (*Service, error) {
	if cfg.Signer == nil {
		return nil, errors.New("attestation service: no token signer")
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = ear.DefaultTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Service{verifiers: map[string]Verifier{}, cfg: cfg, policies: map[string]*policy.Policy{}}
	for _, v := range cfg.Verifiers {
		s.verifiers[v.Tee()] = v
	}
	tv, err := ear.NewVerifier(ear.VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{cfg.Signer.PublicKey()}})
	if err != nil {
		return nil, err
	}
	s.tokens = tv
	return s, nil
}

// Supports reports whether a verifier for tee is configured.
func (s *Service) Supports(tee string) bool {
	_, ok := s.verifiers[tee]
	return ok
}

// VerifyToken checks a token this service issued (signature, exp, iat,
// nbf) and returns its claims JSON.
func (s *Service) VerifyToken(token string) (json.RawMessage, error) {
	return s.tokens.VerifyPayload(token, s.cfg.Now())
}

// CheckTokenExpiry applies VerifyToken's expiry rule to the exp of a token
// this service issued and the caller kept (Result.Expiry), whose
// signature therefore needs no check.
func (s *Service) CheckTokenExpiry(exp int64) error {
	return s.tokens.CheckExpiry(exp, s.cfg.Now())
}

// SetPolicy validates an appraisal policy and stores it under id.
func (s *Service) SetPolicy(ctx context.Context, id string, rego []byte) error {
	p, err := s.compile(id, string(rego))
	if err != nil {
		return err
	}
	s.policyWrite.Lock()
	defer s.policyWrite.Unlock()
	if _, err := s.cfg.Store.Put(ctx, store.NSAttestPolicies, id, rego, true); err != nil {
		return fmt.Errorf("store policy %s: %w", id, err)
	}
	s.mu.Lock()
	s.policies[id] = p
	s.mu.Unlock()
	return nil
}

func (s *Service) compile(id, rego string) (*policy.Policy, error) {
	return policy.Compile(id, rego, policy.WithReferenceValues(s.cfg.ReferenceValues))
}

// appraisalPolicy returns the compiled policy id, loading it from the store.
func (s *Service) appraisalPolicy(ctx context.Context, id string) (*policy.Policy, error) {
	s.mu.Lock()
	p, ok := s.policies[id]
	s.mu.Unlock()
	if ok {
		return p, nil
	}
	rego, err := s.cfg.Store.Get(ctx, store.NSAttestPolicies, id)
	if err != nil {
		return nil, fmt.Errorf("appraisal policy %s: %w", id, err)
	}
	if p, err = s.compile(id, string(rego)); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.policies[id] = p
	s.mu.Unlock()
	return p, nil
}

// Attest verifies att (for the session's tee and nonce), appraises it and
// returns a signed token. Verification failures name the failed check; an
// appraisal that is not affirming still yields a token (the resource
// policy decides), with the reasons in the result.
func (s *Service) Attest(ctx context.Context, tee, nonce string, att *protocol.Attestation) (*Result, error) {
	v, ok := s.verifiers[tee]
	if !ok {
		return nil, &CheckError{Check: "tee", Detail: fmt.Sprintf("no verifier for TEE %q", tee)}
	}
	additional := att.TeeEvidence.AdditionalEvidence
	if additional != "" {
		devs, err := protocol.ParseAdditionalEvidence(additional)
		if err != nil {
			return nil, &CheckError{Check: "evidence-format", Detail: err.Error()}
		}
		if len(devs) > 0 {
			names := make([]string, 0, len(devs))
			for n := range devs {
				names = append(names, n)
			}
			return nil, &CheckError{Check: "additional-evidence", Detail: fmt.Sprintf("device evidence %v cannot be verified by this KBS", names)}
		}
	}
	pub := att.RuntimeData.TeePubKey
	digest, err := protocol.RuntimeDataDigest("sha384", nonce, pub, &additional)
	if err != nil {
		return nil, &CheckError{Check: "runtime-data", Detail: err.Error()}
	}
	in := VerifyInput{Evidence: att.TeeEvidence.PrimaryEvidence, ReportData: digest}
	var initClaims map[string]any
	if att.InitData != nil {
		d, claims, err := protocol.InitDataDigest(att.InitData)
		if err != nil {
			return nil, &CheckError{Check: "init-data", Detail: err.Error()}
		}
		in.InitDataDigest, initClaims = d, claims
	}
	claims, err := v.Verify(ctx, in)
	if err != nil {
		return nil, err
	}
	annotated, simulated := annotate(tee, claims, nonce, pub, additional, initClaims)
	polID := "default_" + v.Class()
	pol, err := s.appraisalPolicy(ctx, polID)
	if err != nil {
		return nil, err
	}
	appr, err := pol.EvaluateAppraisal(ctx, annotated)
	if err != nil {
		return nil, fmt.Errorf("appraisal policy %s: %w", polID, err)
	}
	var vec ear.TrustVector
	for _, name := range ear.TrustClaimNames() {
		c, _ := appr.TrustVector.Get(name)
		if err := vec.Set(name, int64(c)); err != nil {
			return nil, fmt.Errorf("appraisal policy %s: %w", polID, err)
		}
	}
	extensions, identifiers, err := earExtensions(polID, appr.Extensions)
	if err != nil {
		return nil, err
	}
	claimsEAR := ear.NewClaims(s.cfg.Now(), s.cfg.TokenTTL, ear.DefaultIssuer,
		ear.VerifierID{Developer: ear.DefaultDeveloper, Build: "coffer-kbs " + version.Version})
	status := ear.Status(vec)
	claimsEAR.Submods[v.Class()+"0"] = ear.Appraisal{
		Status: status, TrustVector: vec, PolicyID: "default",
		AnnotatedEvidence: annotated, Identifiers: identifiers,
		Simulated: simulated, Extensions: extensions,
	}
	token, payload, err := s.cfg.Signer.SignPayload(claimsEAR)
	if err != nil {
		return nil, fmt.Errorf("sign the attestation token: %w", err)
	}
	return &Result{Token: token, Claims: payload, Expiry: claimsEAR.Expiry, Status: status, Reasons: appr.Reasons, Simulated: simulated}, nil
}

// earExtensions turns the appraisal policy's data.policy.extensions into
// members of the token's appraisal. ear.trustee.identifiers (which
// Trustee's default policy produces) replaces the default identifiers
// {"validated": {}} and must be an object; any other standard member name
// (ear.status, coffer.simulated, …) is refused, as is a name given twice:
// a policy cannot overwrite what the verifier and the trust vector say.
// The extensions' integer keys only matter for CBOR EARs and are dropped.
func earExtensions(polID string, exts []policy.Extension) (map[string]json.RawMessage, map[string]any, error) {
	identifiers := map[string]any{"validated": map[string]any{}}
	if len(exts) == 0 {
		return nil, identifiers, nil
	}
	refuse := func(format string, args ...any) error {
		return &CheckError{Check: "appraisal-extensions", Detail: fmt.Sprintf("appraisal policy %s: data.policy.extensions: ", polID) + fmt.Sprintf(format, args...)}
	}
	out := make(map[string]json.RawMessage, len(exts))
	identifiersSet := false
	size := 0
	for _, e := range exts {
		if _, dup := out[e.Name]; dup || e.Name == ear.MemberIdentifiers && identifiersSet {
			return nil, nil, refuse("%q is given twice", e.Name)
		}
		if e.Name == ear.MemberIdentifiers {
			identifiersSet = true
			obj, ok := e.Value.(map[string]any)
			if !ok {
				return nil, nil, refuse("%q must be an object (Trustee's {\"validated\": {...}})", e.Name)
			}
			identifiers = obj
			continue
		}
		if ear.IsStandardMember(e.Name) {
			return nil, nil, refuse("%q is a standard EAR appraisal member (letter case aside), not an extension; rename the extension", e.Name)
		}
		raw, err := json.Marshal(e.Value)
		if err != nil {
			return nil, nil, refuse("%q: value is not JSON: %v", e.Name, err)
		}
		// Every token carries them, and the server keeps each session's
		// token: a policy that copies its whole input must not make
		// megabyte tokens.
		if size += len(e.Name) + len(raw); size > maxExtensionBytes {
			return nil, nil, refuse("the extensions exceed %d bytes of JSON; keep them small (they travel in every token)", maxExtensionBytes)
		}
		out[e.Name] = raw
	}
	if len(out) == 0 {
		out = nil
	}
	return out, identifiers, nil
}

// maxExtensionBytes bounds the JSON of a policy's EAR extensions.
const maxExtensionBytes = 16 << 10

// annotate builds Trustee's annotated evidence (§3.2): the verifier claims
// under the TEE name, report_data and init_data lifted out, and the
// runtime data claims.
func annotate(tee string, claims Claims, nonce string, pub protocol.TeePubKey, additional string, initClaims map[string]any) (map[string]any, bool) {
	teeClaims := map[string]any{}
	out := map[string]any{}
	simulated := false
	for k, v := range claims {
		switch k {
		case "report_data":
			out["report_data"] = v
		case "init_data":
			out["init_data"] = v
		default:
			teeClaims[k] = v
		}
	}
	if b, ok := claims["simulated"].(bool); ok && b {
		simulated = true
	}
	out[tee] = teeClaims
	var jwk any
	if b, err := json.Marshal(pub); err == nil {
		_ = json.Unmarshal(b, &jwk)
	}
	out["runtime_data_claims"] = map[string]any{"nonce": nonce, "tee-pubkey": jwk, "additional-evidence": additional}
	if initClaims != nil {
		out["init_data_claims"] = initClaims
	}
	return out, simulated
}

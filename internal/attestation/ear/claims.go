package ear

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Defaults matching Trustee's attestation service (attestation_token_broker).
const (
	// Profile is the eat_profile Trustee uses; resource policies written for
	// Trustee keep working on our tokens.
	Profile = "tag:github.com,2024:confidential-containers/Trustee"
	// DefaultIssuer is Trustee's default iss.
	DefaultIssuer = "CoCo-Attestation-Service"
	// DefaultDeveloper is Trustee's default ear.verifier-id developer.
	DefaultDeveloper = "https://confidentialcontainers.org"
	// DefaultTTL is Trustee's default token lifetime (duration_min = 5).
	DefaultTTL = 5 * time.Minute
)

// Member names inside a submod (appraisal).
const (
	MemberStatus            = "ear.status"
	MemberTrustVector       = "ear.trustworthiness-vector"
	MemberPolicyID          = "ear.appraisal-policy-id"
	MemberAnnotatedEvidence = "ear.veraison.annotated-evidence"
	MemberIdentifiers       = "ear.trustee.identifiers"
	// MemberSimulated is Coffer's extension: true when the evidence came
	// from the simulated TEE (internal/tee/sim), whose chip keys are not
	// rooted in a hardware vendor. Absent (never false) otherwise, so
	// Trustee-shaped tokens are unchanged. Resource policies that must not
	// release secrets to simulated guests check
	// input.submods[_]["coffer.simulated"].
	MemberSimulated = "coffer.simulated"
)

// Claims is the EAR (draft-ietf-rats-ear) JWT claims set as Trustee's
// attestation service issues it.
type Claims struct {
	Profile   string `json:"eat_profile"`
	IssuedAt  int64  `json:"iat"`
	Expiry    int64  `json:"exp"`
	NotBefore int64  `json:"nbf,omitempty"`
	Issuer    string `json:"iss"`
	// Nonce is the optional eat_nonce (Trustee does not set it).
	Nonce      string     `json:"eat_nonce,omitempty"`
	VerifierID VerifierID `json:"ear.verifier-id"`
	// Submods holds one appraisal per attested environment, named
	// <class><index>: cpu0, gpu0, gpu1, …
	Submods map[string]Appraisal `json:"submods"`
}

// NewClaims returns claims with Trustee's profile, iat = now, exp = now + ttl
// and no submods yet.
func NewClaims(now time.Time, ttl time.Duration, issuer string, vid VerifierID) *Claims {
	return &Claims{
		Profile:    Profile,
		IssuedAt:   now.Unix(),
		Expiry:     now.Add(ttl).Unix(),
		Issuer:     issuer,
		VerifierID: vid,
		Submods:    map[string]Appraisal{},
	}
}

// ExpiresAt returns exp as a time.
func (c *Claims) ExpiresAt() time.Time { return time.Unix(c.Expiry, 0) }

// VerifierID is ear.verifier-id.
type VerifierID struct {
	Developer string `json:"developer"`
	Build     string `json:"build"`
}

// Appraisal is one submod of an EAR.
type Appraisal struct {
	// Status is the AR4SI tier: normally Status(TrustVector).
	Status      string      `json:"ear.status"`
	TrustVector TrustVector `json:"ear.trustworthiness-vector"`
	PolicyID    string      `json:"ear.appraisal-policy-id,omitempty"`
	// AnnotatedEvidence is the verifier's claims map, also the appraisal
	// policy's input: {"<tee>": {...}, "report_data", "runtime_data_claims":
	// {"nonce","tee-pubkey",…}, "init_data", "init_data_claims"}.
	AnnotatedEvidence map[string]any `json:"ear.veraison.annotated-evidence,omitempty"`
	// Identifiers is Trustee's ear.trustee.identifiers extension
	// ({"validated": {...}}).
	Identifiers map[string]any `json:"ear.trustee.identifiers,omitempty"`
	// Simulated is the coffer.simulated extension (see MemberSimulated).
	Simulated bool `json:"coffer.simulated,omitempty"`
	// Extensions holds any other member (policy-produced EAR extensions),
	// as JSON, so tokens round-trip without loss.
	Extensions map[string]json.RawMessage `json:"-"`
}

// appraisalFields is Appraisal without its methods, for default (un)marshalling.
type appraisalFields Appraisal

// IsStandardMember reports whether name is one of the appraisal members
// Appraisal has a field for (the EAR members, Trustee's identifiers and
// Coffer's simulated flag) in any letter case: such a name cannot be an
// extension. Case matters because encoding/json matches struct fields
// case-insensitively (with Unicode folding: "ſ" for "s"), so an extension
// "EAR.STATUS" written after "ear.status" would win when a token is read.
func IsStandardMember(name string) bool {
	for _, m := range [...]string{MemberStatus, MemberTrustVector, MemberPolicyID, MemberAnnotatedEvidence, MemberIdentifiers, MemberSimulated} {
		if strings.EqualFold(name, m) {
			return true
		}
	}
	return false
}

// MarshalJSON writes the known members plus Extensions (which must not
// reuse a known member name).
func (a Appraisal) MarshalJSON() ([]byte, error) {
	known, err := json.Marshal(appraisalFields(a))
	if err != nil {
		return nil, err
	}
	if len(a.Extensions) == 0 {
		return known, nil
	}
	names := make([]string, 0, len(a.Extensions))
	for name := range a.Extensions {
		if IsStandardMember(name) {
			return nil, fmt.Errorf("EAR appraisal extension %q collides with a standard member", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	buf.Write(known[:len(known)-1]) // drop '}'
	for _, name := range names {
		raw := a.Extensions[name]
		if !json.Valid(raw) {
			return nil, fmt.Errorf("EAR appraisal extension %q is not valid JSON", name)
		}
		key, _ := json.Marshal(name)
		buf.WriteByte(',')
		buf.Write(key)
		buf.WriteByte(':')
		if err := json.Compact(&buf, raw); err != nil {
			return nil, err
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// UnmarshalJSON reads the known members (numbers inside maps as
// json.Number, so large integers survive) and keeps the rest in Extensions.
func (a *Appraisal) UnmarshalJSON(data []byte) error {
	var out appraisalFields
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return err
	}
	for name, raw := range all {
		if IsStandardMember(name) {
			continue
		}
		if out.Extensions == nil {
			out.Extensions = map[string]json.RawMessage{}
		}
		out.Extensions[name] = raw
	}
	*a = Appraisal(out)
	return nil
}

// TrustVector is ear.trustworthiness-vector: the eight AR4SI
// trustworthiness claims, each in -128..127 (0 = no claim).
type TrustVector struct {
	InstanceIdentity int8 `json:"instance-identity"`
	Configuration    int8 `json:"configuration"`
	Executables      int8 `json:"executables"`
	FileSystem       int8 `json:"file-system"`
	Hardware         int8 `json:"hardware"`
	RuntimeOpaque    int8 `json:"runtime-opaque"`
	StorageOpaque    int8 `json:"storage-opaque"`
	SourcedData      int8 `json:"sourced-data"`
}

// TrustClaimNames returns the eight claim names in AR4SI key order (0..7).
func TrustClaimNames() []string {
	return []string{"instance-identity", "configuration", "executables", "file-system",
		"hardware", "runtime-opaque", "storage-opaque", "sourced-data"}
}

// field returns a pointer to the claim called name, or nil.
func (v *TrustVector) field(name string) *int8 {
	switch name {
	case "instance-identity":
		return &v.InstanceIdentity
	case "configuration":
		return &v.Configuration
	case "executables":
		return &v.Executables
	case "file-system":
		return &v.FileSystem
	case "hardware":
		return &v.Hardware
	case "runtime-opaque":
		return &v.RuntimeOpaque
	case "storage-opaque":
		return &v.StorageOpaque
	case "sourced-data":
		return &v.SourcedData
	}
	return nil
}

// Set sets the claim called name (as an appraisal policy's trust_claims
// output names it). Unknown names and values outside -128..127 are errors
// (Trustee panics on the first and silently wraps the second).
func (v *TrustVector) Set(name string, value int64) error {
	p := v.field(name)
	if p == nil {
		return fmt.Errorf("unknown trust claim %q (want one of %v)", name, TrustClaimNames())
	}
	if value < -128 || value > 127 {
		return fmt.Errorf("trust claim %s = %d is outside -128..127", name, value)
	}
	*p = int8(value)
	return nil
}

// Get returns the claim called name and whether the name is known.
func (v TrustVector) Get(name string) (int8, bool) {
	p := v.field(name)
	if p == nil {
		return 0, false
	}
	return *p, true
}

// Values returns the claims in TrustClaimNames order.
func (v TrustVector) Values() [8]int8 {
	return [8]int8{v.InstanceIdentity, v.Configuration, v.Executables, v.FileSystem,
		v.Hardware, v.RuntimeOpaque, v.StorageOpaque, v.SourcedData}
}

// Trust tiers (ear.status values), from best to worst: none < affirming <
// warning < contraindicated is the order used to pick the worst.
const (
	TierNone            = "none"
	TierAffirming       = "affirming"
	TierWarning         = "warning"
	TierContraindicated = "contraindicated"
)

func tierRank(t string) int {
	switch t {
	case TierAffirming:
		return 1
	case TierWarning:
		return 2
	case TierContraindicated:
		return 3
	}
	return 0
}

// Tier maps a claim value to its AR4SI tier exactly as veraison/rust-ear
// (TrustClaim::tier) does: -1..1 none; -32..31 affirming; -96..95
// warning; everything else contraindicated. (So -32 is affirming and 32 a
// warning; -96 is a warning and 96 contraindicated.)
func Tier(v int8) string {
	switch {
	case v >= -1 && v <= 1:
		return TierNone
	case v >= -32 && v < 32:
		return TierAffirming
	case v >= -96 && v < 96:
		return TierWarning
	}
	return TierContraindicated
}

// Status returns the worst tier over all eight claims (rust-ear
// Appraisal::update_status_from_trust_vector); all-zero gives "none".
func Status(v TrustVector) string {
	worst := TierNone
	for _, c := range v.Values() {
		if t := Tier(c); tierRank(t) > tierRank(worst) {
			worst = t
		}
	}
	return worst
}

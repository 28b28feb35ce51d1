package protocol

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Version is the KBS protocol version this package speaks. Trustee (and
// the guest-components client) require an exact match.
const Version = "0.4.0"

// Sentinel errors; every error returned by this package that is caused by
// bad input wraps one of them, so callers can map them with errors.Is.
var (
	// ErrMalformed: the input is not valid JSON of the expected shape
	// (missing required member, wrong type, duplicate member, bad UTF-8).
	ErrMalformed = errors.New("malformed KBS protocol message")
	// ErrTooLarge: the input exceeds one of the size limits below.
	ErrTooLarge = errors.New("KBS protocol message too large")
	// ErrVersionMismatch: the client speaks another protocol version.
	ErrVersionMismatch = errors.New("KBS protocol version mismatch")
	// ErrUnknownTee: the TEE name is not one of Tees().
	ErrUnknownTee = errors.New("unknown TEE type")
	// ErrInvalidKey: a tee-pubkey JWK (or a JWE header key) is invalid.
	ErrInvalidKey = errors.New("invalid TEE public key")
	// ErrUnsupportedAlgorithm: a key, JWE or hash algorithm is not supported.
	ErrUnsupportedAlgorithm = errors.New("unsupported algorithm")
	// ErrDecrypt: a JWE response could not be decrypted or authenticated.
	ErrDecrypt = errors.New("JWE decryption failed")
)

// Size limits. MaxRequestBody matches Trustee's default
// http_server.payload_request_size (2 MiB); the others bound individual
// members so one field cannot take the whole budget unnoticed.
const (
	// MaxRequestBody bounds any JSON body read by the Decode* helpers.
	MaxRequestBody = 2 << 20
	// MaxEvidenceSize bounds tee-evidence.primary_evidence (raw JSON) and
	// tee-evidence.additional_evidence (the JSON string's decoded length)
	// separately.
	MaxEvidenceSize = 1 << 20
	// MaxInitDataSize bounds init-data.body (Kata agent policies embedded
	// in the init data can be large).
	MaxInitDataSize = 1 << 20
	// MaxJWKSize bounds the JSON text of a tee-pubkey JWK (an 8192-bit RSA
	// modulus is ~1.4 KiB of base64url).
	MaxJWKSize = 16 << 10
	// MaxNonceSize bounds runtime-data.nonce and Challenge.nonce (Trustee
	// nonces are 44 characters; IBM SE nonces are larger JSON blobs).
	MaxNonceSize = 64 << 10
	// MaxExtraParamsSize bounds Request/Challenge extra-params.
	MaxExtraParamsSize = 64 << 10
	// MaxTokenSize bounds the attestation token in an AttestResponse.
	MaxTokenSize = 1 << 20
	// MaxVersionSize bounds Request.version.
	MaxVersionSize = 256
)

// NonceSize is the number of random bytes in a Trustee challenge nonce.
const NonceSize = 32

// TEE names as they appear on the wire (kbs-types Tee, serde names).
const (
	TeeAzSnpVtpm    = "az-snp-vtpm"
	TeeAzTdxVtpm    = "az-tdx-vtpm"
	TeeNvidia       = "nvidia"
	TeeSgx          = "sgx"
	TeeSnp          = "snp"
	TeeTdx          = "tdx"
	TeeCca          = "cca"
	TeeCsv          = "csv"
	TeeSe           = "se"
	TeeHygonDcu     = "hygondcu"
	TeeTpm          = "tpm"
	TeeSample       = "sample"
	TeeSampleDevice = "sampledevice"
)

// Tees returns every TEE name accepted on the wire, in kbs-types order.
// The slice is freshly allocated on each call.
func Tees() []string {
	return []string{
		TeeAzSnpVtpm, TeeAzTdxVtpm, TeeNvidia, TeeSgx, TeeSnp, TeeTdx, TeeCca,
		TeeCsv, TeeSe, TeeHygonDcu, TeeTpm, TeeSample, TeeSampleDevice,
	}
}

// ValidTee reports whether name is a TEE name accepted on the wire.
func ValidTee(name string) bool {
	switch name {
	case TeeAzSnpVtpm, TeeAzTdxVtpm, TeeNvidia, TeeSgx, TeeSnp, TeeTdx, TeeCca,
		TeeCsv, TeeSe, TeeHygonDcu, TeeTpm, TeeSample, TeeSampleDevice:
		return true
	}
	return false
}

// CheckVersion returns nil if v is exactly Version, else an error wrapping
// ErrVersionMismatch whose text matches Trustee's
// ("KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is …").
func CheckVersion(v string) error {
	if v == Version {
		return nil
	}
	return fmt.Errorf("%w: KBS Client Protocol Version Mismatch: expect =%s while the request is %s",
		ErrVersionMismatch, Version, truncateForError(v))
}

// Hash algorithm names used in extra-params and by RuntimeDataDigest.
const (
	HashSHA256 = "sha256"
	HashSHA384 = "sha384"
	HashSHA512 = "sha512"
	// DefaultHashAlgorithm is what a client uses when the Challenge does
	// not select one (guest-components DEFAULT_HASH_ALGORITHM).
	DefaultHashAlgorithm = HashSHA384
)

// Request is the body of POST /kbs/v0/auth.
type Request struct {
	Version string `json:"version"`
	Tee     string `json:"tee"`
	// ExtraParams is required on the wire (any JSON value). Guests send
	// {"supported-hash-algorithms": [...]}.
	ExtraParams json.RawMessage `json:"extra-params"`
}

// NewRequest returns the Request a client sends for tee, advertising the
// hash algorithms this package implements.
func NewRequest(tee string) Request {
	return Request{
		Version:     Version,
		Tee:         tee,
		ExtraParams: json.RawMessage(`{"supported-hash-algorithms":["sha256","sha384","sha512"]}`),
	}
}

// MarshalJSON emits extra-params as {} when it is unset (the member is
// required on the wire).
func (r Request) MarshalJSON() ([]byte, error) {
	type plain Request
	p := plain(r)
	if len(p.ExtraParams) == 0 {
		p.ExtraParams = json.RawMessage(`{}`)
	}
	return json.Marshal(p)
}

// UnmarshalJSON decodes a Request strictly: exact member names, version and
// tee required strings, tee a known name (ErrUnknownTee), extra-params
// required. Unknown members are ignored.
func (r *Request) UnmarshalJSON(data []byte) error {
	m, err := objectMembers(data, "request")
	if err != nil {
		return err
	}
	var out Request
	if out.Version, err = m.str("version", MaxVersionSize); err != nil {
		return err
	}
	if out.Tee, err = m.str("tee", 64); err != nil {
		return err
	}
	if !ValidTee(out.Tee) {
		return fmt.Errorf("%w %q in request (known: %s)", ErrUnknownTee, truncateForError(out.Tee), strings.Join(Tees(), ", "))
	}
	if out.ExtraParams, err = m.raw("extra-params", MaxExtraParamsSize); err != nil {
		return err
	}
	*r = out
	return nil
}

// Challenge is the response to POST /kbs/v0/auth.
type Challenge struct {
	Nonce string `json:"nonce"`
	// ExtraParams is always emitted; empty means the JSON string "" (what
	// Trustee sends for every TEE except se).
	ExtraParams json.RawMessage `json:"extra-params"`
}

// NewNonce returns a fresh Trustee-style nonce: 32 random bytes in
// standard, padded base64 (44 characters).
func NewNonce() (string, error) {
	b := make([]byte, NonceSize)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate nonce: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// MarshalJSON always emits extra-params ("" when unset): the guest's
// deserializer requires the member.
func (c Challenge) MarshalJSON() ([]byte, error) {
	type plain Challenge
	p := plain(c)
	if len(p.ExtraParams) == 0 {
		p.ExtraParams = json.RawMessage(`""`)
	}
	return json.Marshal(p)
}

// UnmarshalJSON decodes a Challenge; nonce and extra-params are required,
// as in the guest's deserializer.
func (c *Challenge) UnmarshalJSON(data []byte) error {
	m, err := objectMembers(data, "challenge")
	if err != nil {
		return err
	}
	var out Challenge
	if out.Nonce, err = m.str("nonce", MaxNonceSize); err != nil {
		return err
	}
	if out.ExtraParams, err = m.raw("extra-params", MaxExtraParamsSize); err != nil {
		return err
	}
	*c = out
	return nil
}

// HashAlgorithm returns the runtime-data hash algorithm the challenge
// selects: extra-params["selected-hash-algorithm"] lowercased when
// extra-params is an object carrying it, else DefaultHashAlgorithm (this
// mirrors guest-components get_hash_algorithm). Unsupported names return an
// error wrapping ErrUnsupportedAlgorithm.
func (c Challenge) HashAlgorithm() (string, error) {
	v, err := parseJSONText(c.ExtraParams)
	if err != nil || v.kind != jsonObject {
		return DefaultHashAlgorithm, nil
	}
	sel := v.member("selected-hash-algorithm")
	if sel == nil {
		return DefaultHashAlgorithm, nil
	}
	if sel.kind != jsonString {
		return "", fmt.Errorf("%w: challenge extra-params selected-hash-algorithm is not a string", ErrMalformed)
	}
	name := strings.ToLower(sel.str)
	if _, err := hashFor(name); err != nil {
		return "", err
	}
	return name, nil
}

// InitData is the init-data member of Attestation.
type InitData struct {
	// Format is "toml" (the only format Trustee's builtin AS accepts).
	Format string `json:"format"`
	// Body is the init data document as sent (plaintext TOML).
	Body string `json:"body"`
}

// UnmarshalJSON requires format and body strings.
func (d *InitData) UnmarshalJSON(data []byte) error {
	m, err := objectMembers(data, "init-data")
	if err != nil {
		return err
	}
	var out InitData
	if out.Format, err = m.str("format", 64); err != nil {
		return err
	}
	if out.Body, err = m.str("body", MaxInitDataSize); err != nil {
		return err
	}
	*d = out
	return nil
}

// RuntimeData is the runtime-data member of Attestation.
type RuntimeData struct {
	Nonce     string    `json:"nonce"`
	TeePubKey TeePubKey `json:"tee-pubkey"`
}

// UnmarshalJSON requires nonce and a valid tee-pubkey.
func (d *RuntimeData) UnmarshalJSON(data []byte) error {
	m, err := objectMembers(data, "runtime-data")
	if err != nil {
		return err
	}
	var out RuntimeData
	if out.Nonce, err = m.str("nonce", MaxNonceSize); err != nil {
		return err
	}
	raw, err := m.raw("tee-pubkey", MaxJWKSize)
	if err != nil {
		return err
	}
	if err := out.TeePubKey.UnmarshalJSON(raw); err != nil {
		return err
	}
	*d = out
	return nil
}

// TeeEvidence is the tee-evidence member of Attestation (kbs-types
// CompositeEvidence).
type TeeEvidence struct {
	// PrimaryEvidence is the primary TEE's evidence JSON, kept verbatim.
	PrimaryEvidence json.RawMessage `json:"primary_evidence"`
	// AdditionalEvidence is a JSON *string* holding a JSON map
	// {"<tee>": <evidence>, …} for additional devices, or "" when none.
	AdditionalEvidence string `json:"additional_evidence"`
}

// UnmarshalJSON requires both members (primary_evidence may be any JSON
// value, additional_evidence must be a string), each within MaxEvidenceSize.
func (e *TeeEvidence) UnmarshalJSON(data []byte) error {
	m, err := objectMembers(data, "tee-evidence")
	if err != nil {
		return err
	}
	var out TeeEvidence
	if out.PrimaryEvidence, err = m.raw("primary_evidence", MaxEvidenceSize); err != nil {
		return err
	}
	if out.AdditionalEvidence, err = m.str("additional_evidence", MaxEvidenceSize); err != nil {
		return err
	}
	*e = out
	return nil
}

// ParseAdditionalEvidence decodes TeeEvidence.AdditionalEvidence: "" gives
// an empty map, anything else must be a JSON object whose member names are
// known TEE names.
func ParseAdditionalEvidence(s string) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	if s == "" {
		return out, nil
	}
	m, err := objectMembers([]byte(s), "additional_evidence")
	if err != nil {
		return nil, err
	}
	for _, k := range m.order {
		if !ValidTee(k) {
			return nil, fmt.Errorf("%w %q in additional_evidence", ErrUnknownTee, truncateForError(k))
		}
		out[k] = m.members[k]
	}
	return out, nil
}

// Attestation is the body of POST /kbs/v0/attest.
type Attestation struct {
	// InitData is null on the wire when the guest has none.
	InitData    *InitData   `json:"init-data"`
	RuntimeData RuntimeData `json:"runtime-data"`
	TeeEvidence TeeEvidence `json:"tee-evidence"`
}

// UnmarshalJSON decodes strictly (see the member types); init-data may be
// absent or null; unknown members are ignored for forward compatibility.
func (a *Attestation) UnmarshalJSON(data []byte) error {
	m, err := objectMembers(data, "attestation")
	if err != nil {
		return err
	}
	var out Attestation
	if raw, ok := m.members["init-data"]; ok && !bytes.Equal(raw, []byte("null")) {
		out.InitData = new(InitData)
		if err := out.InitData.UnmarshalJSON(raw); err != nil {
			return err
		}
	}
	raw, err := m.raw("runtime-data", MaxRequestBody)
	if err != nil {
		return err
	}
	if err := out.RuntimeData.UnmarshalJSON(raw); err != nil {
		return err
	}
	if raw, err = m.raw("tee-evidence", MaxRequestBody); err != nil {
		return err
	}
	if err := out.TeeEvidence.UnmarshalJSON(raw); err != nil {
		return err
	}
	*a = out
	return nil
}

// AttestResponse is the body of a successful POST /kbs/v0/attest.
type AttestResponse struct {
	Token string `json:"token"`
}

// UnmarshalJSON requires a token string.
func (r *AttestResponse) UnmarshalJSON(data []byte) error {
	m, err := objectMembers(data, "attest response")
	if err != nil {
		return err
	}
	tok, err := m.str("token", MaxTokenSize)
	if err != nil {
		return err
	}
	r.Token = tok
	return nil
}

// members is a decoded JSON object: exact member names, first-seen order.
type members struct {
	what    string
	members map[string]json.RawMessage
	order   []string
}

// objectMembers splits a JSON object into its members, rejecting invalid
// UTF-8 and duplicate names (serde rejects duplicate struct fields; Go
// would silently keep the last). Names are matched exactly, unlike
// encoding/json's case-insensitive struct matching.
func objectMembers(data []byte, what string) (*members, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: %s is not valid UTF-8", ErrMalformed, what)
	}
	// One pass: member values are validated and sliced out, not decoded.
	p := &jsonParser{data: data}
	p.skipSpace()
	if p.pos >= len(data) || data[p.pos] != '{' {
		if p.pos < len(data) && p.skipValue() != nil {
			return nil, fmt.Errorf("%w: %s is not valid JSON", ErrMalformed, what)
		}
		return nil, fmt.Errorf("%w: %s must be a JSON object", ErrMalformed, what)
	}
	p.pos++
	m := &members{what: what, members: map[string]json.RawMessage{}}
	p.skipSpace()
	if p.pos < len(data) && data[p.pos] == '}' {
		p.pos++
	} else {
		for {
			p.skipSpace()
			if p.pos >= len(data) || data[p.pos] != '"' {
				return nil, fmt.Errorf("%w: %s: expected a member name", ErrMalformed, what)
			}
			key, err := p.string()
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
			}
			if _, dup := m.members[key]; dup {
				return nil, fmt.Errorf("%w: %s: duplicate member %q", ErrMalformed, what, truncateForError(key))
			}
			p.skipSpace()
			if p.pos >= len(data) || data[p.pos] != ':' {
				return nil, fmt.Errorf("%w: %s: expected ':' after member %q", ErrMalformed, what, truncateForError(key))
			}
			p.pos++
			p.skipSpace()
			start := p.pos
			if err := p.skipValue(); err != nil {
				return nil, fmt.Errorf("%w: %s member %q: %v", ErrMalformed, what, truncateForError(key), err)
			}
			m.members[key] = json.RawMessage(data[start:p.pos])
			m.order = append(m.order, key)
			p.skipSpace()
			if p.pos >= len(data) {
				return nil, fmt.Errorf("%w: %s: unterminated object", ErrMalformed, what)
			}
			if data[p.pos] == '}' {
				p.pos++
				break
			}
			if data[p.pos] != ',' {
				return nil, fmt.Errorf("%w: %s: expected ',' or '}' after member %q", ErrMalformed, what, truncateForError(key))
			}
			p.pos++
		}
	}
	p.skipSpace()
	if p.pos != len(data) {
		return nil, fmt.Errorf("%w: %s: unexpected data after the JSON object", ErrMalformed, what)
	}
	return m, nil
}

// raw returns a required member's JSON text (null allowed), bounded by max bytes.
func (m *members) raw(name string, max int) (json.RawMessage, error) {
	raw, ok := m.members[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s: missing required member %q", ErrMalformed, m.what, name)
	}
	if len(raw) > max {
		return nil, fmt.Errorf("%w: %s member %q is %d bytes, limit %d", ErrTooLarge, m.what, name, len(raw), max)
	}
	return slices.Clone(raw), nil
}

// str returns a required string member, its decoded length bounded by max.
func (m *members) str(name string, max int) (string, error) {
	raw, ok := m.members[name]
	if !ok {
		return "", fmt.Errorf("%w: %s: missing required member %q", ErrMalformed, m.what, name)
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("%w: %s member %q must be a string", ErrMalformed, m.what, name)
	}
	// The strict parser, unlike encoding/json, rejects lone surrogate
	// escapes instead of turning them into U+FFFD (serde_json rejects them).
	v, err := parseJSONText(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %s member %q: %v", ErrMalformed, m.what, name, err)
	}
	s := v.str
	if len(s) > max {
		return "", fmt.Errorf("%w: %s member %q is %d bytes, limit %d", ErrTooLarge, m.what, name, len(s), max)
	}
	return s, nil
}

// TokenExpiry reads the "exp" claim (seconds since the epoch) of a JWT
// without verifying the token: a guest trusts the channel it got the token
// on, as guest-components does. It reports false for a token it cannot
// read or one without a positive exp (a NumericDate: fractions are cut).
// One pass over the claims; nothing else in them is decoded.
func TokenExpiry(token string) (time.Time, bool) {
	_, rest, ok := strings.Cut(token, ".")
	if !ok {
		return time.Time{}, false
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") || len(payload) > MaxTokenSize {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return time.Time{}, false
	}
	m, err := objectMembers(b, "token claims")
	if err != nil {
		return time.Time{}, false
	}
	raw := string(m.members["exp"])
	if exp, err := strconv.ParseInt(raw, 10, 64); err == nil {
		if exp <= 0 || exp >= 1e15 {
			return time.Time{}, false
		}
		return time.Unix(exp, 0), true
	}
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil || !(f >= 1 && f < 1e15) {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

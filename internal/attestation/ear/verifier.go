package ear

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// DefaultLeeway is the clock skew allowed on exp, iat and nbf (the
// jsonwebtoken crate's default, which Trustee's KBS uses).
const DefaultLeeway = 60 * time.Second

// MaxTokenSize bounds the tokens Verify accepts.
const MaxTokenSize = 1 << 20

// Verification errors; Verify's errors wrap exactly one of them.
var (
	// ErrMalformedToken: not a compact ES256 JWS with EAR claims.
	ErrMalformedToken = errors.New("malformed attestation token")
	// ErrUntrustedToken: the signature does not verify with any trusted key
	// (tampered payload, or signed by a key we do not trust).
	ErrUntrustedToken = errors.New("attestation token signature not trusted")
	// ErrTokenExpired: exp is in the past (beyond the leeway).
	ErrTokenExpired = errors.New("attestation token expired")
	// ErrTokenNotYetValid: iat or nbf is in the future (beyond the leeway).
	ErrTokenNotYetValid = errors.New("attestation token not yet valid")
)

// VerifierOptions configures a Verifier.
type VerifierOptions struct {
	// TrustedKeys are the ES256 (P-256) public keys whose signatures are
	// accepted — normally the server's own Signer.PublicKey().
	TrustedKeys []*ecdsa.PublicKey
	// InsecureHeaderJWK additionally accepts a signature by the key in the
	// token's own header "jwk" (which must carry "alg":"ES256"), like
	// Trustee's insecure_header_jwk. Anyone can mint such a token: for
	// development only.
	InsecureHeaderJWK bool
	// Leeway is the allowed clock skew; 0 means DefaultLeeway.
	Leeway time.Duration
}

// Verifier checks EAR tokens. It is safe for concurrent use.
type Verifier struct {
	trusted      []*ecdsa.PublicKey
	insecureHdr  bool
	leewaySecond int64
}

// NewVerifier returns a Verifier; it needs at least one trusted key unless
// InsecureHeaderJWK is set.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	for i, k := range opts.TrustedKeys {
		if k == nil || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("trusted token key %d is not an ECDSA P-256 public key", i)
		}
	}
	if len(opts.TrustedKeys) == 0 && !opts.InsecureHeaderJWK {
		return nil, errors.New("token verifier: no trusted keys configured (pass the signer's public key, or enable InsecureHeaderJWK for development)")
	}
	leeway := opts.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	if leeway < 0 {
		return nil, errors.New("token verifier: negative leeway")
	}
	return &Verifier{
		trusted:      append([]*ecdsa.PublicKey(nil), opts.TrustedKeys...),
		insecureHdr:  opts.InsecureHeaderJWK,
		leewaySecond: int64(leeway / time.Second),
	}, nil
}

// Verify checks the token's ES256 signature (alg none, HS*, RS* and every
// other algorithm are refused) against the trusted keys — and, with
// InsecureHeaderJWK, the header jwk — then its times: exp is required and
// must not be more than the leeway in the past; iat is required and, like
// nbf if present, must not be more than the leeway in the future. It
// returns the decoded claims and the raw verified claims JSON (the input
// for resource policies).
func (v *Verifier) Verify(token string, now time.Time) (*Claims, json.RawMessage, error) {
	payload, err := v.VerifyPayload(token, now)
	if err != nil {
		return nil, nil, err
	}
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		return nil, nil, fmt.Errorf("%w: claims: %v", ErrMalformedToken, err)
	}
	return &c, payload, nil
}

// tokenTimes are the members VerifyPayload checks; pointers tell a
// missing member from a zero one.
type tokenTimes struct {
	Expiry    *int64                     `json:"exp"`
	IssuedAt  *int64                     `json:"iat"`
	NotBefore *int64                     `json:"nbf"`
	Submods   map[string]json.RawMessage `json:"submods"`
}

// VerifyPayload makes the checks of Verify and returns only the raw
// verified claims JSON, decoding no more of it than the checks need.
func (v *Verifier) VerifyPayload(token string, now time.Time) (json.RawMessage, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: token is %d bytes, limit %d", ErrMalformedToken, len(token), MaxTokenSize)
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("%w: %v (only compact ES256 JWTs are accepted)", ErrMalformedToken, err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%w: %d signatures, want 1", ErrMalformedToken, len(jws.Signatures))
	}
	hdr := jws.Signatures[0].Protected
	for _, name := range []jose.HeaderKey{"crit", "b64"} {
		if _, ok := hdr.ExtraHeaders[name]; ok {
			return nil, fmt.Errorf("%w: header %q is not supported", ErrMalformedToken, name)
		}
	}

	payload, err := v.verifySignature(jws, hdr)
	if err != nil {
		return nil, err
	}

	var c tokenTimes
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformedToken, err)
	}
	switch {
	case c.Expiry == nil:
		return nil, fmt.Errorf("%w: claim %q is missing", ErrMalformedToken, "exp")
	case c.IssuedAt == nil:
		return nil, fmt.Errorf("%w: claim %q is missing", ErrMalformedToken, "iat")
	case c.Submods == nil:
		return nil, fmt.Errorf("%w: claim %q is missing", ErrMalformedToken, "submods")
	}
	if len(c.Submods) == 0 {
		return nil, fmt.Errorf("%w: no submods", ErrMalformedToken)
	}
	exp, iat := *c.Expiry, *c.IssuedAt
	if exp < iat {
		return nil, fmt.Errorf("%w: exp is before iat", ErrMalformedToken)
	}
	if err := v.CheckExpiry(exp, now); err != nil {
		return nil, err
	}
	t := now.Unix()
	if iat > t+v.leewaySecond {
		return nil, fmt.Errorf("%w: iat %s is after now %s (leeway %ds): check the clocks",
			ErrTokenNotYetValid, time.Unix(iat, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leewaySecond)
	}
	if c.NotBefore != nil && *c.NotBefore > t+v.leewaySecond {
		return nil, fmt.Errorf("%w: nbf %s is after now %s (leeway %ds)",
			ErrTokenNotYetValid, time.Unix(*c.NotBefore, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leewaySecond)
	}
	return json.RawMessage(payload), nil
}

// CheckExpiry applies Verify's expiry rule to an exp claim (Unix seconds):
// for a token the server keeps itself, whose signature needs no check.
func (v *Verifier) CheckExpiry(exp int64, now time.Time) error {
	if exp < now.Unix()-v.leewaySecond {
		return fmt.Errorf("%w: exp %s is before now %s (leeway %ds): fetch a new token by attesting again",
			ErrTokenExpired, time.Unix(exp, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leewaySecond)
	}
	return nil
}

func (v *Verifier) verifySignature(jws *jose.JSONWebSignature, hdr jose.Header) ([]byte, error) {
	for _, k := range v.trusted {
		if payload, err := jws.Verify(k); err == nil {
			return payload, nil
		}
	}
	if !v.insecureHdr {
		return nil, fmt.Errorf("%w: not signed by any of the %d trusted key(s)", ErrUntrustedToken, len(v.trusted))
	}
	jwk := hdr.JSONWebKey
	if jwk == nil {
		return nil, fmt.Errorf("%w: not signed by a trusted key and the header has no jwk", ErrUntrustedToken)
	}
	if jwk.Algorithm != string(jose.ES256) {
		return nil, fmt.Errorf("%w: header jwk alg is %q, want %q", ErrUntrustedToken, jwk.Algorithm, jose.ES256)
	}
	var pub crypto.PublicKey = jwk.Key
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: header jwk is not an EC P-256 public key", ErrUntrustedToken)
	}
	payload, err := jws.Verify(ec)
	if err != nil {
		return nil, fmt.Errorf("%w: signature does not verify with the header jwk", ErrUntrustedToken)
	}
	return payload, nil
}

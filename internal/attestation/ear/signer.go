package ear

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// JWK is the public signing key as it appears in the token header and in
// a JWKS: {"kty":"EC","crv":"P-256","x","y","alg":"ES256"}. The alg member
// matters: Trustee's KBS derives the verification algorithm from it.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Alg string `json:"alg"`
}

// Signer signs EAR tokens with ES256 (P-256), as Trustee's AS does. It is
// safe for concurrent use.
type Signer struct {
	key *ecdsa.PrivateKey
	jwk JWK
	// header is the token's protected header, base64url-encoded, as
	// go-jose writes it for this key: it is the same for every token, so
	// it is made once and each token only costs its payload and signature.
	header string
}

// NewSigner returns a signer with a fresh ephemeral P-256 key (Trustee's
// default when no signer key is configured). Tokens it signs cannot be
// verified after a restart.
func NewSigner() (*Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate EAR signing key: %w", err)
	}
	return NewSignerFromKey(key)
}

// NewSignerFromKey returns a signer for an existing P-256 key.
func NewSignerFromKey(key *ecdsa.PrivateKey) (*Signer, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("EAR signing key must be an ECDSA P-256 private key (ES256)")
	}
	pub, err := key.PublicKey.Bytes() // 0x04 || X || Y, fixed-size coordinates
	if err != nil {
		return nil, fmt.Errorf("EAR signing key: %w", err)
	}
	jwk := JWK{
		Kty: "EC", Crv: "P-256", Alg: string(jose.ES256),
		X: base64.RawURLEncoding.EncodeToString(pub[1:33]),
		Y: base64.RawURLEncoding.EncodeToString(pub[33:]),
	}
	// Passing a JSONWebKey with Algorithm set makes go-jose embed the public
	// JWK with "alg":"ES256" in the protected header.
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, Algorithm: string(jose.ES256)}},
		(&jose.SignerOptions{EmbedJWK: true}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("create ES256 signer: %w", err)
	}
	obj, err := signer.Sign([]byte("{}"))
	if err != nil {
		return nil, fmt.Errorf("ES256 signer: %w", err)
	}
	compact, err := obj.CompactSerialize()
	if err != nil {
		return nil, fmt.Errorf("ES256 signer: %w", err)
	}
	header, _, _ := strings.Cut(compact, ".")
	return &Signer{key: key, jwk: jwk, header: header}, nil
}

// LoadSigner reads a PEM P-256 private key (PKCS#8 "PRIVATE KEY" or SEC 1
// "EC PRIVATE KEY"), e.g. one made by
// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
func LoadSigner(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read EAR signing key: %w", err)
	}
	key, err := parsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("EAR signing key %s: %w", path, err)
	}
	s, err := NewSignerFromKey(key)
	if err != nil {
		return nil, fmt.Errorf("EAR signing key %s: %w", path, err)
	}
	return s, nil
}

// LoadOrCreateSigner loads the key at path, or, if the file does not exist,
// generates a P-256 key and writes it there (PKCS#8 PEM, mode 0600,
// written atomically) so tokens stay verifiable across restarts.
func LoadOrCreateSigner(path string) (*Signer, error) {
	s, err := LoadSigner(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate EAR signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode EAR signing key: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process won the race: use its key
			return LoadSigner(path)
		}
		return nil, fmt.Errorf("save EAR signing key: %w", err)
	}
	return NewSignerFromKey(key)
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Do not clobber a key another process created meanwhile.
	if err := os.Link(tmp.Name(), path); err != nil {
		return err
	}
	return nil
}

func parsePrivateKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 key: %w", err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key is %T, want an ECDSA P-256 key", k)
		}
		return ec, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse SEC 1 EC key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a private key (want PRIVATE KEY or EC PRIVATE KEY)", block.Type)
}

// Sign returns the compact JWS (JWT) of the claims with header
// {"alg":"ES256","jwk":{…,"alg":"ES256"},"typ":"JWT"}.
func (s *Signer) Sign(c *Claims) (string, error) {
	tok, _, err := s.SignPayload(c)
	return tok, err
}

// SignPayload is Sign that also returns the signed claims JSON (the
// token's payload), so that the issuer can keep it without decoding the
// token again.
func (s *Signer) SignPayload(c *Claims) (token string, payload []byte, err error) {
	if c == nil {
		return "", nil, errors.New("sign EAR: nil claims")
	}
	payload, err = json.Marshal(c)
	if err != nil {
		return "", nil, fmt.Errorf("sign EAR: marshal claims: %w", err)
	}
	// Compact JWS (RFC 7515 §7.1) with an ES256 signature (RFC 7518 §3.4:
	// R and S as 32-byte big-endian integers, concatenated).
	enc := base64.RawURLEncoding
	n := len(s.header) + 1 + enc.EncodedLen(len(payload))
	buf := make([]byte, 0, n+1+enc.EncodedLen(64))
	buf = append(buf, s.header...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	digest := sha256.Sum256(buf)
	r, sig, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return "", nil, fmt.Errorf("sign EAR: %w", err)
	}
	var rs [64]byte
	r.FillBytes(rs[:32])
	sig.FillBytes(rs[32:])
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, rs[:])
	return string(buf), payload, nil
}

// PublicKey returns the verification key.
func (s *Signer) PublicKey() *ecdsa.PublicKey { return &s.key.PublicKey }

// PublicJWK returns the verification key as a JWK (with alg ES256).
func (s *Signer) PublicJWK() JWK { return s.jwk }

// Package admintoken owns coffer-kbs admin credentials on the client side:
// parsing the admin's private key and minting the signed bearer tokens the
// server's admin API checks. It is small on purpose: the coffer CLI links
// it without the server.
package admintoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ParsePrivateKeyPEM parses a PKCS#8, SEC1 (EC) or PKCS#1 (RSA) private key.
func ParsePrivateKeyPEM(b []byte) (crypto.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported private key (want PKCS#8, SEC1 EC or PKCS#1 RSA)")
}

// SignatureAlgorithm picks the JWS algorithm for a key.
func SignatureAlgorithm(k crypto.PrivateKey) (jose.SignatureAlgorithm, error) {
	switch key := k.(type) {
	case ed25519.PrivateKey:
		return jose.EdDSA, nil
	case *ecdsa.PrivateKey:
		switch key.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
	case *rsa.PrivateKey:
		return jose.RS256, nil
	}
	return "", fmt.Errorf("unsupported key type %T for admin tokens", k)
}

// Mint signs an admin bearer token with the given role.
func Mint(key crypto.PrivateKey, role, issuer, audience string, ttl time.Duration, now time.Time) (string, error) {
	alg, err := SignatureAlgorithm(key)
	if err != nil {
		return "", err
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	claims := map[string]any{"role": role, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	if issuer != "" {
		claims["iss"] = issuer
	}
	if audience != "" {
		claims["aud"] = audience
	}
	return jwt.Signed(sig).Claims(claims).Serialize()
}

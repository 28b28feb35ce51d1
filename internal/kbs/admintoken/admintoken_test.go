package admintoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Keys read from PEM (PKCS#8 and, for EC, SEC 1 as `openssl ecparam
// -genkey` writes) mint tokens with the key's algorithm that verify with
// the public key and carry role, iat and exp (and iss/aud when given).
func TestMintFromPEM(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	type keyCase struct {
		name string
		pem  []byte
		pub  crypto.PublicKey
		alg  jose.SignatureAlgorithm
	}
	var cases []keyCase
	for _, c := range []struct {
		curve elliptic.Curve
		alg   jose.SignatureAlgorithm
	}{{elliptic.P256(), jose.ES256}, {elliptic.P384(), jose.ES384}, {elliptic.P521(), jose.ES512}} {
		k, err := ecdsa.GenerateKey(c.curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		sec1, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		p8, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases,
			keyCase{string(c.alg) + "/SEC1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), &k.PublicKey, c.alg},
			keyCase{string(c.alg) + "/PKCS8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), &k.PublicKey, c.alg})
	}
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p8, _ := x509.MarshalPKCS8PrivateKey(edKey)
	cases = append(cases, keyCase{"EdDSA/PKCS8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), edPub, jose.EdDSA})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, err := ParsePrivateKeyPEM(c.pem)
			if err != nil {
				t.Fatal(err)
			}
			if alg, err := SignatureAlgorithm(key); err != nil || alg != c.alg {
				t.Fatalf("algorithm %q (%v), want %q", alg, err, c.alg)
			}
			raw, err := Mint(key, "ops", "iss-1", "kbs-1", time.Hour, now)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{c.alg})
			if err != nil {
				t.Fatal(err)
			}
			if h := tok.Headers[0]; h.Algorithm != string(c.alg) || h.ExtraHeaders["typ"] != "JWT" {
				t.Errorf("header alg %q typ %v", h.Algorithm, h.ExtraHeaders["typ"])
			}
			var claims jwt.Claims
			var extra struct {
				Role string `json:"role"`
			}
			if err := tok.Claims(c.pub, &claims, &extra); err != nil {
				t.Fatalf("does not verify with the public key: %v", err)
			}
			if extra.Role != "ops" || claims.Issuer != "iss-1" || !claims.Audience.Contains("kbs-1") ||
				claims.IssuedAt.Time() != now || claims.Expiry.Time() != now.Add(time.Hour) {
				t.Errorf("claims %+v role %q", claims, extra.Role)
			}
		})
	}
}

// Input that is not a supported private key is refused.
func TestParsePrivateKeyPEMRefuses(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	for name, b := range map[string][]byte{
		"not PEM":    []byte("garbage"),
		"public key": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
	} {
		if _, err := ParsePrivateKeyPEM(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

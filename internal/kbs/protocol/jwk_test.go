package protocol

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
)

// testRSAKey is generated once per test binary: 2048-bit generation is slow under -race.
var testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func TestTeePubKeyRoundTrip(t *testing.T) {
	for _, c := range []struct{ alg, crv string }{
		{AlgECDHESA256KW, CurveP256},
		{AlgECDHESA256KW, CurveP521},
		{AlgECDHESA256KW, ""},
	} {
		priv, pub, err := NewTeeKey(c.alg, c.crv)
		if err != nil {
			t.Fatal(err)
		}
		wantCrv := c.crv
		if wantCrv == "" {
			wantCrv = CurveP256
		}
		if pub.Crv != wantCrv || pub.Kty != KtyEC || pub.Alg != c.alg {
			t.Fatalf("%+v", pub)
		}
		b, err := json.Marshal(pub)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`{"kty":"EC","crv":"%s","alg":"ECDH-ES+A256KW","x":"%s","y":"%s"}`, wantCrv, pub.X, pub.Y)
		if string(b) != want {
			t.Fatalf("got %s want %s", b, want)
		}
		var back TeePubKey
		if err := json.Unmarshal(b, &back); err != nil || back != pub {
			t.Fatalf("unmarshal: %+v %v", back, err)
		}
		k, err := back.PublicKey()
		if err != nil || !k.(*ecdsa.PublicKey).Equal(priv.(*ecdsa.PrivateKey).Public()) {
			t.Fatalf("public key mismatch: %v", err)
		}
	}
	for _, alg := range []string{AlgRSAOAEP256, AlgRSA15} {
		pub, err := NewTeePubKey(&testRSAKey().PublicKey, alg)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(pub)
		if want := fmt.Sprintf(`{"kty":"RSA","alg":"%s","n":"%s","e":"AQAB"}`, alg, pub.N); string(b) != want {
			t.Fatalf("got %s", b)
		}
		var back TeePubKey
		if err := json.Unmarshal(b, &back); err != nil || back != pub {
			t.Fatalf("unmarshal: %v", err)
		}
		k, _ := back.PublicKey()
		if !k.(*rsa.PublicKey).Equal(&testRSAKey().PublicKey) {
			t.Fatal("RSA key mismatch")
		}
	}
}

func TestTeePubKeyDropsUnknownMembers(t *testing.T) {
	_, pub, _ := NewTeeKey(AlgECDHESA256KW, CurveP256)
	in := fmt.Sprintf(`{"use":"enc","y":"%s","x":"%s","alg":"ECDH-ES+A256KW","kid":"k1","crv":"P-256","kty":"EC","ext":true}`, pub.Y, pub.X)
	var k TeePubKey
	if err := json.Unmarshal([]byte(in), &k); err != nil {
		t.Fatal(err)
	}
	if k != pub {
		t.Fatalf("%+v != %+v", k, pub)
	}
	b, _ := json.Marshal(k)
	for _, gone := range []string{"use", "kid", "ext"} {
		if strings.Contains(string(b), gone) {
			t.Fatalf("%s kept: %s", gone, b)
		}
	}
}

func TestTeePubKeyRejects(t *testing.T) {
	_, ec, _ := NewTeeKey(AlgECDHESA256KW, CurveP256)
	_, ec521, _ := NewTeeKey(AlgECDHESA256KW, CurveP521)
	rsaPub, _ := NewTeePubKey(&testRSAKey().PublicKey, AlgRSAOAEP256)

	// An off-curve point: valid sizes, y changed.
	yb, _ := b64.DecodeString(ec.Y)
	yb[31] ^= 1
	offCurveY := b64.EncodeToString(yb)
	// A 1024-bit RSA key (built from numbers, not generated).
	small := new(big.Int).Lsh(big.NewInt(1), 1023)
	small.Add(small, big.NewInt(1))
	even := new(big.Int).Lsh(big.NewInt(1), 2047)

	ecJSON := func(kty, crv, alg, x, y string) string {
		return fmt.Sprintf(`{"kty":%q,"crv":%q,"alg":%q,"x":%q,"y":%q}`, kty, crv, alg, x, y)
	}
	rsaJSON := func(alg, n, e string) string {
		return fmt.Sprintf(`{"kty":"RSA","alg":%q,"n":%q,"e":%q}`, alg, n, e)
	}
	cases := []struct {
		name, in string
		want     error
	}{
		{"unknown kty", `{"kty":"OKP","crv":"X25519","x":"AA"}`, ErrInvalidKey},
		{"lower kty", ecJSON("ec", "P-256", AlgECDHESA256KW, ec.X, ec.Y), ErrInvalidKey},
		{"no kty", `{"crv":"P-256"}`, ErrInvalidKey},
		{"kty number", `{"kty":1}`, ErrInvalidKey},
		{"P-384", ecJSON("EC", "P-384", AlgECDHESA256KW, ec.X, ec.Y), ErrInvalidKey},
		{"EC alg", ecJSON("EC", "P-256", "ECDH-ES", ec.X, ec.Y), ErrInvalidKey},
		{"EC RSA alg", ecJSON("EC", "P-256", AlgRSAOAEP256, ec.X, ec.Y), ErrInvalidKey},
		{"P-521 sizes on P-256", ecJSON("EC", "P-256", AlgECDHESA256KW, ec521.X, ec521.Y), ErrInvalidKey},
		{"P-256 sizes on P-521", ecJSON("EC", "P-521", AlgECDHESA256KW, ec.X, ec.Y), ErrInvalidKey},
		{"short x", ecJSON("EC", "P-256", AlgECDHESA256KW, ec.X[:42], ec.Y), ErrInvalidKey},
		{"padded x", ecJSON("EC", "P-256", AlgECDHESA256KW, ec.X+"=", ec.Y), ErrInvalidKey},
		{"std base64 x", ecJSON("EC", "P-256", AlgECDHESA256KW, strings.NewReplacer("-", "+", "_", "/").Replace(ec.X)+"+", ec.Y), ErrInvalidKey},
		{"non-canonical trailing bits", ecJSON("EC", "P-256", AlgECDHESA256KW, strings.Repeat("x", 43), ec.Y), ErrInvalidKey},
		{"off curve", ecJSON("EC", "P-256", AlgECDHESA256KW, ec.X, offCurveY), ErrInvalidKey},
		{"missing y", fmt.Sprintf(`{"kty":"EC","crv":"P-256","alg":%q,"x":%q}`, AlgECDHESA256KW, ec.X), ErrInvalidKey},
		{"y number", fmt.Sprintf(`{"kty":"EC","crv":"P-256","alg":%q,"x":%q,"y":1}`, AlgECDHESA256KW, ec.X), ErrInvalidKey},
		{"duplicate x", fmt.Sprintf(`{"kty":"EC","crv":"P-256","alg":%q,"x":%q,"x":%q,"y":%q}`, AlgECDHESA256KW, ec.X, ec.X, ec.Y), ErrMalformed},
		{"upper-case member", fmt.Sprintf(`{"kty":"EC","CRV":"P-256","crv":"P-256","alg":%q,"X":%q,"y":%q}`, AlgECDHESA256KW, ec.X, ec.Y), ErrInvalidKey},
		{"not object", `"EC"`, ErrMalformed},
		{"null", `null`, ErrMalformed},
		{"RSA alg", rsaJSON("RSA-OAEP", rsaPub.N, rsaPub.E), ErrInvalidKey},
		{"RSA ECDH alg", rsaJSON(AlgECDHESA256KW, rsaPub.N, rsaPub.E), ErrInvalidKey},
		{"RSA 1024", rsaJSON(AlgRSAOAEP256, b64.EncodeToString(small.Bytes()), "AQAB"), ErrInvalidKey},
		{"RSA even modulus", rsaJSON(AlgRSAOAEP256, b64.EncodeToString(even.Bytes()), "AQAB"), ErrInvalidKey},
		{"RSA leading zero", rsaJSON(AlgRSAOAEP256, "AA"+rsaPub.N[2:], "AQAB"), ErrInvalidKey},
		{"RSA e=1", rsaJSON(AlgRSAOAEP256, rsaPub.N, "AQ"), ErrInvalidKey},
		{"RSA e even", rsaJSON(AlgRSAOAEP256, rsaPub.N, "AQAA"), ErrInvalidKey},
		{"RSA e huge", rsaJSON(AlgRSAOAEP256, rsaPub.N, "AQAAAAAB"), ErrInvalidKey},
		{"RSA e empty", rsaJSON(AlgRSAOAEP256, rsaPub.N, ""), ErrInvalidKey},
		{"RSA huge n", rsaJSON(AlgRSAOAEP256, strings.Repeat("_", 1500), "AQAB"), ErrInvalidKey},
		{"too large", `{"kty":"EC","pad":"` + strings.Repeat("a", MaxJWKSize) + `"}`, ErrTooLarge},
	}
	for _, c := range cases {
		var k TeePubKey
		err := json.Unmarshal([]byte(c.in), &k)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestNewTeeKeyErrors(t *testing.T) {
	for _, c := range []struct{ alg, crv string }{
		{AlgECDHESA256KW, "P-384"},
		{AlgRSAOAEP256, CurveP256},
		{"A256KW", ""},
	} {
		if _, _, err := NewTeeKey(c.alg, c.crv); !errors.Is(err, ErrUnsupportedAlgorithm) && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s/%s: %v", c.alg, c.crv, err)
		}
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := NewTeePubKey(&p384.PublicKey, AlgECDHESA256KW); err == nil {
		t.Error("P-384 accepted")
	}
	x, _ := ecdh.X25519().GenerateKey(rand.Reader)
	if _, err := NewTeePubKey(x.PublicKey(), AlgECDHESA256KW); err == nil {
		t.Error("X25519 accepted")
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := NewTeePubKey(&ec.PublicKey, AlgRSAOAEP256); err == nil {
		t.Error("EC key with RSA alg accepted")
	}
	if _, err := NewTeePubKey(&testRSAKey().PublicKey, AlgECDHESA256KW); err == nil {
		t.Error("RSA key with EC alg accepted")
	}
	if _, err := NewTeePubKey("key", AlgRSA15); err == nil {
		t.Error("string accepted as key")
	}
	if _, err := (TeePubKey{Kty: "oct"}).MarshalJSON(); err == nil {
		t.Error("oct marshalled")
	}
}

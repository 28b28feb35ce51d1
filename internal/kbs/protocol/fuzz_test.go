package protocol

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

func FuzzDecodeAttestation(f *testing.F) {
	jwk, _ := validECJWK(f)
	rsaPub, _ := NewTeePubKey(&testRSAKey().PublicKey, AlgRSAOAEP256)
	rsaJWK, _ := json.Marshal(rsaPub)
	f.Add([]byte(`{"init-data":{"format":"toml","body":"a=1"},"runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":{"svn":"1"},"additional_evidence":""}}`))
	f.Add([]byte(`{"init-data":null,"runtime-data":{"nonce":"n","tee-pubkey":` + string(rsaJWK) + `},"tee-evidence":{"primary_evidence":[1,2],"additional_evidence":"{\"sampledevice\":{}}"}}`))
	f.Add([]byte(`{"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC"}},"tee-evidence":{}}`))
	f.Add([]byte(`{"runtime-data":{"nonce":"\ud800","tee-pubkey":null},"tee-evidence":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := DecodeAttestation(bytes.NewReader(data))
		if err != nil {
			return
		}
		if err := a.RuntimeData.TeePubKey.Validate(); err != nil {
			t.Fatalf("accepted an invalid key: %v", err)
		}
		ae := a.TeeEvidence.AdditionalEvidence
		if _, err := RuntimeDataDigest(HashSHA384, a.RuntimeData.Nonce, a.RuntimeData.TeePubKey, &ae); err != nil {
			t.Fatalf("digest of an accepted attestation: %v", err)
		}
		_, _ = ParseAdditionalEvidence(ae)
		out, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("marshal accepted attestation: %v", err)
		}
		b, err := DecodeAttestation(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		if b.RuntimeData != a.RuntimeData || b.TeeEvidence.AdditionalEvidence != ae || (a.InitData == nil) != (b.InitData == nil) {
			t.Fatalf("round trip changed the attestation")
		}
	})
}

func FuzzTeePubKey(f *testing.F) {
	for _, crv := range []string{CurveP256, CurveP521} {
		_, pub, _ := NewTeeKey(AlgECDHESA256KW, crv)
		b, _ := json.Marshal(pub)
		f.Add(b)
	}
	for _, alg := range []string{AlgRSAOAEP256, AlgRSA15} {
		pub, _ := NewTeePubKey(&testRSAKey().PublicKey, alg)
		b, _ := json.Marshal(pub)
		f.Add(b)
	}
	f.Add([]byte(`{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"","y":""}`))
	f.Add([]byte(`{"kty":"RSA","alg":"RSA1_5","n":"AQAB","e":"AQAB","extra":[{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var k TeePubKey
		if err := json.Unmarshal(data, &k); err != nil {
			return
		}
		pub, err := k.PublicKey()
		if err != nil {
			t.Fatalf("accepted key fails PublicKey: %v", err)
		}
		// Strict decoding means the canonical re-encoding of the parsed key
		// is exactly the received member strings.
		again, err := NewTeePubKey(pub, k.Alg)
		if err != nil {
			t.Fatalf("NewTeePubKey of accepted key: %v", err)
		}
		if again != k {
			t.Fatalf("re-encoding differs: %+v vs %+v", again, k)
		}
		b, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		var k2 TeePubKey
		if err := json.Unmarshal(b, &k2); err != nil || k2 != k {
			t.Fatalf("marshal round trip: %v", err)
		}
	})
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{
		`{"b":1,"a":"test","c":{"d":"e"}}`,
		`[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001, -0, 1e-400]`,
		`{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5,"\u0080":6,"\u00f6":7}`,
		`"\u0000\u001f\"\\/"`,
		`[null,true,false,{},[],""]`,
		`{"a":{"a":{"a":[1,{"b":null}]}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := CanonicalizeJSON(data)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("output is not JSON: %q", out)
		}
		again, err := CanonicalizeJSON(out)
		if err != nil {
			t.Fatalf("output does not re-parse: %v (%q)", err, out)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q", out, again)
		}
		// Same data model as encoding/json (numbers as float64).
		var in, canon any
		if err := json.Unmarshal(data, &in); err != nil {
			t.Fatalf("encoding/json rejects accepted input %q: %v", data, err)
		}
		if err := json.Unmarshal(out, &canon); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(in, canon) {
			t.Fatalf("value changed: %q -> %q", data, out)
		}
	})
}

var fuzzKeys = sync.OnceValue(func() []crypto.PrivateKey {
	p256, _, _ := NewTeeKey(AlgECDHESA256KW, CurveP256)
	p521, _, _ := NewTeeKey(AlgECDHESA256KW, CurveP521)
	return []crypto.PrivateKey{p256, p521, testRSAKey()}
})

func FuzzDecryptResponse(f *testing.F) {
	keys := fuzzKeys()
	for _, k := range keys {
		var pub TeePubKey
		var err error
		switch k := k.(type) {
		case *rsa.PrivateKey:
			pub, err = NewTeePubKey(&k.PublicKey, AlgRSA15)
		case *ecdsa.PrivateKey:
			pub, err = NewTeePubKey(&k.PublicKey, AlgECDHESA256KW)
		}
		if err != nil {
			f.Fatal(err)
		}
		r, err := EncryptResponse(pub, []byte("seed"))
		if err != nil {
			f.Fatal(err)
		}
		b, _ := json.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte(`{"protected":"eyJhbGciOiJSU0ExXzUiLCJlbmMiOiJBMjU2R0NNIn0","encrypted_key":"","iv":"","ciphertext":"","tag":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResponse(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, k := range keys {
			_, _ = DecryptResponse(k, r)
		}
	})
}

// FuzzSkipValue checks that the one-pass validator used to split objects
// into members accepts exactly what encoding/json accepts (for valid UTF-8
// within the nesting limit).
func FuzzSkipValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-3,-0,true,false,null,"x\u00e9\n"]}`, `[1,]`, `{"a" 1}`, `"\ud800"`, `01`, `{"a":1,"a":2}`, `[[[]]]`, `"a\x01"`, `1.`, `-`, `{"x":{}} x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return
		}
		p := &jsonParser{data: data}
		p.skipSpace()
		err := p.skipValue()
		if err == nil {
			p.skipSpace()
			if p.pos != len(data) {
				err = p.errorf("trailing data")
			}
		}
		if err != nil && strings.Contains(err.Error(), "nesting deeper") {
			return
		}
		if valid := json.Valid(data); valid != (err == nil) {
			t.Fatalf("json.Valid %v, skipValue error %v, for %q", valid, err, data)
		}
	})
}

// FuzzTokenExpiry: any token text (it comes from the network) gives an
// answer without panicking, and an exp it reports agrees with
// encoding/json's reading of the claims.
func FuzzTokenExpiry(f *testing.F) {
	enc := func(claims string) string {
		return "eyJhbGciOiJFUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".c2ln"
	}
	for _, c := range []string{`{"exp":1700000000}`, `{"exp":1.7e9,"iat":1}`, `{"exp":"1"}`, `{"exp":-5}`, `{}`, `[1]`, `{"exp":1,"exp":2}`} {
		f.Add(enc(c))
	}
	f.Add("a.b")
	f.Add("a.b.c.d")
	f.Fuzz(func(t *testing.T, token string) {
		exp, ok := TokenExpiry(token)
		if !ok {
			return
		}
		parts := strings.Split(token, ".")
		b, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatalf("exp %v read from an undecodable payload", exp)
		}
		var claims struct{ Exp float64 }
		if err := json.Unmarshal(b, &claims); err != nil {
			t.Fatalf("exp %v read from claims encoding/json refuses: %v", exp, err)
		}
		if int64(claims.Exp) != exp.Unix() {
			t.Fatalf("exp = %d, encoding/json reads %v", exp.Unix(), claims.Exp)
		}
	})
}

func TestTokenExpiry(t *testing.T) {
	enc := func(claims string) string {
		return "h." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".s"
	}
	for _, c := range []struct {
		token string
		want  int64
		ok    bool
	}{
		{enc(`{"exp":1700000000,"submods":{"cpu0":{}}}`), 1700000000, true},
		{enc(` {"iat":1, "exp": 1.7e9 } `), 1700000000, true},
		{enc(`{"exp":"1700000000"}`), 0, false},
		{enc(`{"exp":0}`), 0, false},
		{enc(`{"iat":1}`), 0, false},
		{enc(`{"exp":1,"exp":2}`), 0, false}, // duplicate claim
		{enc(`{"exp":1`), 0, false},
		{"h." + enc(`{"exp":1}`)[2:] + ".extra", 0, false},
		{"no-dots", 0, false},
	} {
		got, ok := TokenExpiry(c.token)
		if ok != c.ok || (ok && got.Unix() != c.want) {
			t.Errorf("TokenExpiry(%q) = %v, %v; want %d, %v", c.token, got.Unix(), ok, c.want, c.ok)
		}
	}
}

package protocol

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
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

// maxErrorText bounds the text of a decode error: the server sends it back
// in ErrorInformation and writes it to the audit log, the client logs it,
// so a hostile body must not be echoed whole.
const maxErrorText = 1024

func checkErrorText(t *testing.T, err error) {
	t.Helper()
	if err != nil && len(err.Error()) > maxErrorText {
		t.Fatalf("decode error is %d bytes: %.200s…", len(err.Error()), err)
	}
}

// compactJSON returns the compact form of a JSON text (the form
// encoding/json writes a json.RawMessage in).
// compactJSON is raw as json.Marshal writes a json.RawMessage: compacted,
// with &, <, >, U+2028 and U+2029 in strings escaped (the same JSON).
func compactJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var b, h bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("accepted a member that is not JSON: %q: %v", raw, err)
	}
	json.HTMLEscape(&h, b.Bytes())
	return h.String()
}

// FuzzDecodeRequest: the /auth body decoder (the server calls
// Request.UnmarshalJSON; DecodeRequest adds the size limit) never panics,
// both agree, and what it accepts is within the limits, names a known TEE
// and survives a marshal round trip.
func FuzzDecodeRequest(f *testing.F) {
	for _, tee := range Tees() {
		b, _ := json.Marshal(NewRequest(tee))
		f.Add(b)
	}
	for _, s := range []string{
		`{"version":"0.4.0","tee":"sample","extra-params":""}`,
		`{"version":"0.3.0","tee":"snp","extra-params":{"supported-hash-algorithms":["sha384"]},"x":[1]}`,
		`{"version":"0.4.0","tee":"quantum","extra-params":null}`,
		`{"version":"0.4.0","tee":"sample"}`,
		`{"version":"0.4.0","tee":"sample","extra-params":"","tee":"snp"}`,
		`{"Version":"0.4.0","TEE":"sample","extra-params":""}`,
		`{"version":"\ud800","tee":"sample","extra-params":""}`,
		`{"version":1,"tee":"sample","extra-params":""}`,
		` {"version" : "0.4.0" , "tee" : "tdx" , "extra-params" : { "a" : [ 1 , 2 ] } } `,
		`[]`, `null`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req Request
		err := req.UnmarshalJSON(data)
		checkErrorText(t, err)
		dec, derr := DecodeRequest(bytes.NewReader(data))
		checkErrorText(t, derr)
		if (err == nil) != (derr == nil) {
			t.Fatalf("UnmarshalJSON error %v, DecodeRequest error %v", err, derr)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnknownTee) {
				t.Fatalf("error wraps none of the sentinels: %v", err)
			}
			return
		}
		if dec.Version != req.Version || dec.Tee != req.Tee || !bytes.Equal(dec.ExtraParams, req.ExtraParams) {
			t.Fatalf("DecodeRequest %+v, UnmarshalJSON %+v", dec, req)
		}
		if !ValidTee(req.Tee) || len(req.Version) > MaxVersionSize || len(req.ExtraParams) > MaxExtraParamsSize || !utf8.ValidString(req.Version) {
			t.Fatalf("accepted a request outside the limits: %+v", req)
		}
		checkErrorText(t, CheckVersion(req.Version))
		out, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("marshal accepted request: %v", err)
		}
		var back Request
		if err := back.UnmarshalJSON(out); err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		if back.Version != req.Version || back.Tee != req.Tee || string(back.ExtraParams) != compactJSON(t, req.ExtraParams) {
			t.Fatalf("round trip changed the request: %+v -> %+v", req, back)
		}
	})
}

// FuzzDecodeChallenge: the client's /auth answer decoder never panics;
// an accepted challenge round-trips, selects a hash algorithm or refuses
// with a sentinel error, and with that algorithm the runtime-data digest
// the client computes next always succeeds.
func FuzzDecodeChallenge(f *testing.F) {
	n, _ := NewNonce()
	for _, extra := range []string{`""`, `{}`, `{"selected-hash-algorithm":"SHA512"}`, `{"selected-hash-algorithm":"md5"}`, `{"selected-hash-algorithm":1}`, `[1]`, `null`} {
		f.Add([]byte(`{"nonce":"` + n + `","extra-params":` + extra + `}`))
	}
	for _, s := range []string{`{"nonce":"n"}`, `{"nonce":1,"extra-params":""}`, `{"nonce":"\u00e9\ud83d\ude00","extra-params":"","x":{}}`, `{"nonce":"a","extra-params":"","nonce":"b"}`, `{"nonce":"\ud800","extra-params":""}`} {
		f.Add([]byte(s))
	}
	_, pub, err := NewTeeKey(AlgECDHESA256KW, CurveP256)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var ch Challenge
		err := ch.UnmarshalJSON(data)
		checkErrorText(t, err)
		dec, derr := DecodeChallenge(bytes.NewReader(data))
		if (err == nil) != (derr == nil) {
			t.Fatalf("UnmarshalJSON error %v, DecodeChallenge error %v", err, derr)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrTooLarge: %v", err)
			}
			return
		}
		if dec.Nonce != ch.Nonce || !bytes.Equal(dec.ExtraParams, ch.ExtraParams) {
			t.Fatalf("DecodeChallenge %+v, UnmarshalJSON %+v", dec, ch)
		}
		if len(ch.Nonce) > MaxNonceSize || len(ch.ExtraParams) > MaxExtraParamsSize || len(ch.ExtraParams) == 0 {
			t.Fatalf("accepted a challenge outside the limits: %d-byte nonce, %d-byte extra-params", len(ch.Nonce), len(ch.ExtraParams))
		}
		out, err := json.Marshal(ch)
		if err != nil {
			t.Fatalf("marshal accepted challenge: %v", err)
		}
		var back Challenge
		if err := back.UnmarshalJSON(out); err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		if back.Nonce != ch.Nonce || string(back.ExtraParams) != compactJSON(t, ch.ExtraParams) {
			t.Fatalf("round trip changed the challenge: %+v -> %+v", ch, back)
		}
		alg, err := ch.HashAlgorithm()
		checkErrorText(t, err)
		if err != nil {
			if !errors.Is(err, ErrUnsupportedAlgorithm) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("HashAlgorithm error wraps no sentinel: %v", err)
			}
			return
		}
		if again, err := back.HashAlgorithm(); err != nil || again != alg {
			t.Fatalf("round trip changed the hash algorithm: %q -> %q %v", alg, again, err)
		}
		additional := ""
		if _, err := RuntimeDataDigest(alg, ch.Nonce, pub, &additional); err != nil {
			t.Fatalf("runtime-data digest (%s) for an accepted challenge: %v", alg, err)
		}
	})
}

// FuzzParseErrorInformation: the client's error-answer decoder never
// panics; an accepted body has both members within their limits, its Kind
// agrees with its Type, and it round-trips.
func FuzzParseErrorInformation(f *testing.F) {
	for _, k := range []ErrorKind{KindAttestationError, KindTokenNotFound, KindPolicyDeny, KindInvalidRequestPath} {
		f.Add(MarshalErrorInformation(k, "detail of "+string(k)))
	}
	for _, s := range []string{`{"type":"about:blank","detail":""}`, `{"type":"` + ErrorTypePrefix + `","detail":"x"}`, `{"type":"t"}`, `{"type":"t","detail":"d","type":"u"}`, `{"type":null,"detail":"d"}`, `{"type":"\ud800","detail":""}`, `"error"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := ParseErrorInformation(data)
		checkErrorText(t, err)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrTooLarge: %v", err)
			}
			return
		}
		if len(info.Type) > 4096 || len(info.Detail) > MaxRequestBody {
			t.Fatalf("accepted members over their limits: %d-byte type, %d-byte detail", len(info.Type), len(info.Detail))
		}
		k := info.Kind()
		if k != "" && ErrorTypePrefix+string(k) != info.Type {
			t.Fatalf("Kind %q does not agree with Type %q", k, info.Type)
		}
		if k == "" && strings.HasPrefix(info.Type, ErrorTypePrefix) && info.Type != ErrorTypePrefix {
			t.Fatalf("Type %q carries the prefix but Kind is empty", info.Type)
		}
		_ = info.Error()
		out, err := json.Marshal(info)
		if err != nil {
			t.Fatalf("marshal accepted error information: %v", err)
		}
		back, err := ParseErrorInformation(out)
		if err != nil || *back != *info {
			t.Fatalf("round trip: %+v -> %+v %v", info, back, err)
		}
	})
}

// FuzzCanonicalRuntimeData: the direct writer of the runtime data gives the
// generic RFC 8785 path's bytes for any strings (the peer chooses the
// nonce echo, the key members and the additional evidence), and declines
// only what the generic path treats differently.
func FuzzCanonicalRuntimeData(f *testing.F) {
	f.Add("K0vYm8nJBHKJSzT0GBSmg5D9S4ZHQvw9M2jHcQtEVM8=", KtyEC, "ES256", "P-256", "x-coord", "y-coord", "", "", "{}", true)
	f.Add("n", KtyRSA, "RSA-OAEP-256", "", "", "", "modulus", "AQAB", "", false)
	f.Add("<&>\u2028\"\\\x01\x7f", KtyEC, "a\tb", "c\nd", "\xff", "é", "", "", "\x00", true)
	f.Add("n", "OKP", "EdDSA", "Ed25519", "x", "", "", "", "", false)
	f.Fuzz(func(t *testing.T, nonce, kty, alg, crv, x, y, n, e, extra string, withExtra bool) {
		pub := TeePubKey{Kty: kty, Alg: alg, Crv: crv, X: x, Y: y, N: n, E: e}
		var ae *string
		if withExtra {
			ae = &extra
		}
		want, werr := canonicalRuntimeDataGeneric(nonce, pub, ae)
		got, ok := canonicalRuntimeDataDirect(nonce, pub, ae)
		if !ok {
			valid := func(ss ...string) bool {
				return !slices.ContainsFunc(ss, func(s string) bool { return !utf8.ValidString(s) })
			}
			relevant := valid(nonce, alg, crv, x, y) && kty == KtyEC || valid(nonce, alg, n, e) && kty == KtyRSA
			if relevant && (!withExtra || valid(extra)) {
				t.Fatalf("direct writer declined valid input %+v", pub)
			}
			return
		}
		if werr != nil {
			t.Fatalf("direct writer accepted what the generic path refuses (%v): %q", werr, got)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("direct %q, generic %q", got, want)
		}
	})
}

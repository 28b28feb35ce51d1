package ear

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
)

var t0 = time.Unix(1760426134, 0)

func sampleClaims(t *testing.T, now time.Time) *Claims {
	t.Helper()
	_, pub, err := protocol.NewTeeKey(protocol.AlgECDHESA256KW, protocol.CurveP256)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClaims(now, DefaultTTL, DefaultIssuer, VerifierID{Developer: DefaultDeveloper, Build: "coffer-kbs test"})
	tv := TrustVector{Configuration: 2, Executables: 3, Hardware: 2}
	c.Submods["cpu0"] = Appraisal{
		Status:      Status(tv),
		TrustVector: tv,
		PolicyID:    "default",
		AnnotatedEvidence: map[string]any{
			"sample":      map[string]any{"svn": "1", "launch_digest": "abcde", "debug": false, "big": json.Number("18446744073709551615")},
			"report_data": "AAAA",
			"runtime_data_claims": map[string]any{
				"nonce":               "n",
				"tee-pubkey":          pub,
				"additional-evidence": "",
			},
		},
		Identifiers: map[string]any{"validated": map[string]any{}},
		Simulated:   true,
		Extensions:  map[string]json.RawMessage{"ear.veraison.policy-claims": json.RawMessage(`{"x": 1}`)},
	}
	return c
}

func TestSignVerifyRoundTrip(t *testing.T) {
	s, err := NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	c := sampleClaims(t, t0)
	tok, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	// Header shape.
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	hdrJSON, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var hdr map[string]any
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		t.Fatal(err)
	}
	if hdr["alg"] != "ES256" || hdr["typ"] != "JWT" || len(hdr) != 3 {
		t.Fatalf("header %s", hdrJSON)
	}
	jwk, _ := hdr["jwk"].(map[string]any)
	pj := s.PublicJWK()
	if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk["alg"] != "ES256" || jwk["x"] != pj.X || jwk["y"] != pj.Y || len(jwk) != 5 {
		t.Fatalf("header jwk %v, signer jwk %+v", jwk, pj)
	}
	x, _ := base64.RawURLEncoding.DecodeString(pj.X)
	y, _ := base64.RawURLEncoding.DecodeString(pj.Y)
	if len(x) != 32 || len(y) != 32 {
		t.Fatalf("jwk coordinates %d/%d bytes", len(x), len(y))
	}

	// Payload member names as Trustee emits them.
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	for _, want := range []string{`"eat_profile":"tag:github.com,2024:confidential-containers/Trustee"`, `"iat":1760426134`,
		`"exp":1760426434`, `"iss":"CoCo-Attestation-Service"`, `"ear.verifier-id":{"developer":"https://confidentialcontainers.org"`,
		`"ear.status":"affirming"`, `"ear.trustworthiness-vector":{"instance-identity":0,"configuration":2,"executables":3,"file-system":0,"hardware":2,"runtime-opaque":0,"storage-opaque":0,"sourced-data":0}`,
		`"ear.appraisal-policy-id":"default"`, `"coffer.simulated":true`, `"ear.trustee.identifiers":{"validated":{}}`,
		`"ear.veraison.policy-claims":{"x":1}`, `"big":18446744073709551615`} {
		if !strings.Contains(string(payload), want) {
			t.Errorf("payload lacks %s:\n%s", want, payload)
		}
	}

	v, err := NewVerifier(VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{s.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	got, raw, err := v.Verify(tok, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != string(payload) {
		t.Fatal("raw claims differ from the signed payload")
	}
	cpu0 := got.Submods["cpu0"]
	if got.Issuer != DefaultIssuer || got.Profile != Profile || cpu0.Status != TierAffirming || !cpu0.Simulated ||
		cpu0.TrustVector != c.Submods["cpu0"].TrustVector || cpu0.PolicyID != "default" {
		t.Fatalf("claims %+v", got)
	}
	if string(cpu0.Extensions["ear.veraison.policy-claims"]) != `{"x":1}` || len(cpu0.Extensions) != 1 {
		t.Fatalf("extensions %v", cpu0.Extensions)
	}
	sample := cpu0.AnnotatedEvidence["sample"].(map[string]any)
	if sample["big"] != json.Number("18446744073709551615") {
		t.Fatalf("large integer lost: %v", sample["big"])
	}

	// The TEE key is where Trustee's KBS looks for it, and parses.
	pk, err := FindTeePubKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	var tpk protocol.TeePubKey
	if err := json.Unmarshal(pk, &tpk); err != nil {
		t.Fatal(err)
	}
	want := c.Submods["cpu0"].AnnotatedEvidence["runtime_data_claims"].(map[string]any)["tee-pubkey"].(protocol.TeePubKey)
	if tpk != want {
		t.Fatalf("tee-pubkey %+v, want %+v", tpk, want)
	}
	if !got.ExpiresAt().Equal(t0.Add(DefaultTTL)) {
		t.Fatalf("ExpiresAt %v", got.ExpiresAt())
	}

	// Not simulated: the member is absent, not false.
	c2 := sampleClaims(t, t0)
	a := c2.Submods["cpu0"]
	a.Simulated = false
	c2.Submods["cpu0"] = a
	tok2, _ := s.Sign(c2)
	p2, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok2, ".")[1])
	if strings.Contains(string(p2), "coffer.simulated") {
		t.Fatal("coffer.simulated emitted for a non-simulated appraisal")
	}
}

func TestVerifyTimes(t *testing.T) {
	s, _ := NewSigner()
	v, _ := NewVerifier(VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{s.PublicKey()}})
	tok, _ := s.Sign(sampleClaims(t, t0))
	exp := t0.Add(DefaultTTL)
	cases := []struct {
		now  time.Time
		want error
	}{
		{t0, nil},
		{exp, nil},
		{exp.Add(59 * time.Second), nil}, // within leeway
		{exp.Add(61 * time.Second), ErrTokenExpired},     // beyond leeway
		{t0.Add(-59 * time.Second), nil},                 // iat slightly in the future
		{t0.Add(-61 * time.Second), ErrTokenNotYetValid}, // iat too far in the future
	}
	for _, c := range cases {
		_, _, err := v.Verify(tok, c.now)
		if !errors.Is(err, c.want) {
			t.Errorf("now=%v: got %v, want %v", c.now.Sub(t0), err, c.want)
		}
	}
	// nbf.
	c := sampleClaims(t, t0)
	c.NotBefore = t0.Add(10 * time.Minute).Unix()
	tok, _ = s.Sign(c)
	if _, _, err := v.Verify(tok, t0); !errors.Is(err, ErrTokenNotYetValid) {
		t.Errorf("nbf in the future: %v", err)
	}
	if _, _, err := v.Verify(tok, t0.Add(4*time.Minute+30*time.Second)); err != nil && !errors.Is(err, ErrTokenNotYetValid) {
		t.Errorf("nbf: %v", err)
	}
	// Custom leeway.
	v5, _ := NewVerifier(VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{s.PublicKey()}, Leeway: 5 * time.Second})
	tok, _ = s.Sign(sampleClaims(t, t0))
	if _, _, err := v5.Verify(tok, exp.Add(10*time.Second)); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("5 s leeway: %v", err)
	}
}

// signRaw signs an arbitrary payload with key, embedding jwk (with alg if
// withAlg) in the header.
func signRaw(t *testing.T, key *ecdsa.PrivateKey, payload []byte, withAlg bool) string {
	t.Helper()
	jk := jose.JSONWebKey{Key: key}
	if withAlg {
		jk.Algorithm = "ES256"
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jk}, (&jose.SignerOptions{EmbedJWK: true}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := sig.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestVerifyRejects(t *testing.T) {
	s, _ := NewSigner()
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	strict, _ := NewVerifier(VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{s.PublicKey()}})
	insecure, _ := NewVerifier(VerifierOptions{InsecureHeaderJWK: true})
	now := t0.Add(time.Minute)

	good, _ := s.Sign(sampleClaims(t, t0))
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])

	// Tampered payload, original signature.
	tampered := strings.Replace(string(payload), `"ear.status":"affirming"`, `"ear.status":"warning!!"`, 1)
	if tampered == string(payload) {
		t.Fatal("tamper had no effect")
	}
	tamperedTok := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(tampered)) + "." + parts[2]
	// Re-signed (same claims) by another key, header jwk of that key.
	resigned := signRaw(t, other, payload, true)
	resignedNoAlg := signRaw(t, other, payload, false)
	// alg none / HS256 / RS256.
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	hsHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	mac := hmac.New(sha256.New, []byte("secret"))
	mac.Write([]byte(hsHeader + "." + parts[1]))
	hs256 := hsHeader + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsSigner, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: rsaKey}, nil)
	rsObj, _ := rsSigner.Sign(payload)
	rs256, _ := rsObj.CompactSerialize()
	// Bad signature bytes.
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[5] ^= 1
	badSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	// Missing claims.
	noExp := signRaw(t, s.key, []byte(`{"iat":1760426134,"submods":{"cpu0":{"ear.status":"none"}}}`), true)
	noSubmods := signRaw(t, s.key, []byte(`{"iat":1760426134,"exp":1760426434,"submods":{}}`), true)
	badClaims := signRaw(t, s.key, []byte(`{"iat":"yesterday","exp":1760426434,"submods":{"cpu0":{}}}`), true)
	notJSON := signRaw(t, s.key, []byte(`not json`), true)
	outOfRange := signRaw(t, s.key, []byte(`{"iat":1760426134,"exp":1760426434,"submods":{"cpu0":{"ear.trustworthiness-vector":{"hardware":300}}}}`), true)
	expBeforeIat := signRaw(t, s.key, []byte(`{"iat":1760426134,"exp":1760426100,"submods":{"cpu0":{}}}`), true)
	// JSON serialization instead of compact.
	jsonSer := `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`

	cases := []struct {
		name string
		v    *Verifier
		tok  string
		want error
	}{
		{"tampered", strict, tamperedTok, ErrUntrustedToken},
		{"tampered insecure", insecure, tamperedTok, ErrUntrustedToken},
		{"re-signed", strict, resigned, ErrUntrustedToken},
		{"bad signature", strict, badSig, ErrUntrustedToken},
		{"alg none", strict, none, ErrMalformedToken},
		{"alg none insecure", insecure, none, ErrMalformedToken},
		{"HS256", strict, hs256, ErrMalformedToken},
		{"RS256", strict, rs256, ErrMalformedToken},
		{"header jwk without alg", insecure, resignedNoAlg, ErrUntrustedToken},
		{"no exp", strict, noExp, ErrMalformedToken},
		{"no submods", strict, noSubmods, ErrMalformedToken},
		{"bad claim type", strict, badClaims, ErrMalformedToken},
		{"payload not JSON", strict, notJSON, ErrMalformedToken},
		{"trust claim out of range", strict, outOfRange, ErrMalformedToken},
		{"exp before iat", strict, expBeforeIat, ErrMalformedToken},
		{"JSON serialization", strict, jsonSer, ErrMalformedToken},
		{"garbage", strict, "a.b", ErrMalformedToken},
		{"empty", strict, "", ErrMalformedToken},
		{"huge", strict, strings.Repeat("a", MaxTokenSize+1), ErrMalformedToken},
	}
	for _, c := range cases {
		got, raw, err := c.v.Verify(c.tok, now)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if err == nil || got != nil || raw != nil {
			t.Errorf("%s: returned claims on failure", c.name)
		}
	}

	// The good token passes both; a re-signed token passes only the
	// insecure verifier (that is what insecure means).
	if _, _, err := strict.Verify(good, now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := insecure.Verify(good, now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := insecure.Verify(resigned, now); err != nil {
		t.Fatalf("insecure header jwk: %v", err)
	}
	// Trusting several keys: the other key's token verifies once trusted.
	both, _ := NewVerifier(VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{s.PublicKey(), &other.PublicKey}})
	if _, _, err := both.Verify(resigned, now); err != nil {
		t.Fatal(err)
	}
}

func TestNewVerifierOptions(t *testing.T) {
	if _, err := NewVerifier(VerifierOptions{}); err == nil {
		t.Error("verifier without keys accepted")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := NewVerifier(VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{&p384.PublicKey}}); err == nil {
		t.Error("P-384 trusted key accepted")
	}
	if _, err := NewVerifier(VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{nil}}); err == nil {
		t.Error("nil trusted key accepted")
	}
	if _, err := NewVerifier(VerifierOptions{InsecureHeaderJWK: true, Leeway: -time.Second}); err == nil {
		t.Error("negative leeway accepted")
	}
}

func TestSignerKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token-key.pem")
	s1, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v %v", st.Mode(), err)
	}
	s2, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if !s1.PublicKey().Equal(s2.PublicKey()) || s1.PublicJWK() != s2.PublicJWK() {
		t.Fatal("reloaded key differs")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("stray files: %v", entries)
	}

	// SEC 1 "EC PRIVATE KEY" form.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(key)
	sec1 := filepath.Join(dir, "sec1.pem")
	os.WriteFile(sec1, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	s3, err := LoadSigner(sec1)
	if err != nil || !s3.PublicKey().Equal(&key.PublicKey) {
		t.Fatalf("SEC 1 key: %v", err)
	}

	// Refusals: wrong curve, RSA, garbage, missing file.
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKCS8PrivateKey(p384)
	bad384 := filepath.Join(dir, "p384.pem")
	os.WriteFile(bad384, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der384}), 0o600)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	derRSA, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	badRSA := filepath.Join(dir, "rsa.pem")
	os.WriteFile(badRSA, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: derRSA}), 0o600)
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	cert := filepath.Join(dir, "cert.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), 0o600)
	for _, p := range []string{bad384, badRSA, garbage, cert, filepath.Join(dir, "missing.pem")} {
		if _, err := LoadSigner(p); err == nil {
			t.Errorf("%s accepted", filepath.Base(p))
		}
	}
	if _, err := LoadOrCreateSigner(bad384); err == nil {
		t.Error("LoadOrCreateSigner replaced or accepted a bad existing key")
	}
	if _, err := NewSignerFromKey(p384); err == nil {
		t.Error("P-384 signer accepted")
	}
	if _, err := s1.Sign(nil); err == nil {
		t.Error("nil claims signed")
	}
}

func TestTierAndStatus(t *testing.T) {
	tiers := map[int8]string{
		0: TierNone, 1: TierNone, -1: TierNone,
		2: TierAffirming, 3: TierAffirming, 31: TierAffirming, -2: TierAffirming, -32: TierAffirming,
		32: TierWarning, 33: TierWarning, 36: TierWarning, 95: TierWarning, -33: TierWarning, -96: TierWarning,
		96: TierContraindicated, 97: TierContraindicated, 99: TierContraindicated, 127: TierContraindicated,
		-97: TierContraindicated, -128: TierContraindicated,
	}
	for v, want := range tiers {
		if got := Tier(v); got != want {
			t.Errorf("Tier(%d) = %s, want %s", v, got, want)
		}
	}
	vectors := []struct {
		tv   TrustVector
		want string
	}{
		{TrustVector{}, TierNone},
		{TrustVector{Configuration: 2, Executables: 3, Hardware: 2}, TierAffirming},
		// Trustee's default CPU policy without reference values.
		{TrustVector{Configuration: 2, Executables: 33, Hardware: 97}, TierContraindicated},
		{TrustVector{Configuration: 36, Executables: 33, Hardware: 2}, TierWarning},
		{TrustVector{SourcedData: 96}, TierContraindicated},
		{TrustVector{InstanceIdentity: 1, RuntimeOpaque: -1}, TierNone},
		{TrustVector{StorageOpaque: 2, FileSystem: 32}, TierWarning},
	}
	for _, c := range vectors {
		if got := Status(c.tv); got != c.want {
			t.Errorf("Status(%+v) = %s, want %s", c.tv, got, c.want)
		}
	}

	var tv TrustVector
	for i, name := range TrustClaimNames() {
		if err := tv.Set(name, int64(i+10)); err != nil {
			t.Fatal(err)
		}
		if got, ok := tv.Get(name); !ok || got != int8(i+10) {
			t.Fatalf("Get(%s) = %d %v", name, got, ok)
		}
	}
	if tv.Values() != [8]int8{10, 11, 12, 13, 14, 15, 16, 17} {
		t.Fatalf("values %v", tv.Values())
	}
	if err := tv.Set("bogus", 2); err == nil {
		t.Error("unknown claim accepted")
	}
	if err := tv.Set("hardware", 128); err == nil {
		t.Error("128 accepted")
	}
	if err := tv.Set("hardware", -129); err == nil {
		t.Error("-129 accepted")
	}
	if _, ok := tv.Get("bogus"); ok {
		t.Error("Get of unknown claim")
	}
	b, _ := json.Marshal(TrustVector{Hardware: 97})
	if want := `{"instance-identity":0,"configuration":0,"executables":0,"file-system":0,"hardware":97,"runtime-opaque":0,"storage-opaque":0,"sourced-data":0}`; string(b) != want {
		t.Fatalf("vector JSON %s", b)
	}
}

func TestAppraisalExtensions(t *testing.T) {
	a := Appraisal{Status: TierNone, Extensions: map[string]json.RawMessage{"ear.status": json.RawMessage(`"x"`)}}
	if _, err := json.Marshal(a); err == nil {
		t.Error("extension shadowing ear.status accepted")
	}
	a.Extensions = map[string]json.RawMessage{"x": json.RawMessage(`{bad`)}
	if _, err := json.Marshal(a); err == nil {
		t.Error("invalid extension JSON accepted")
	}
	var back Appraisal
	if err := json.Unmarshal([]byte(`{"ear.status":"warning","custom":[1,2]}`), &back); err != nil {
		t.Fatal(err)
	}
	if back.Status != TierWarning || string(back.Extensions["custom"]) != "[1,2]" {
		t.Fatalf("%+v", back)
	}
}

func TestPointers(t *testing.T) {
	doc := json.RawMessage(`{"a":{"b/c":[10,{"~k":"v"}]},"tee-pubkey":{"kty":"EC"},"n":null}`)
	for ptr, want := range map[string]string{
		"":              string(doc),
		"/a/b~1c/0":     "10",
		"/a/b~1c/1/~0k": `"v"`,
		"/tee-pubkey":   `{"kty":"EC"}`,
	} {
		got, err := LookupPointer(doc, ptr)
		if err != nil || string(got) != want {
			t.Errorf("%q: %s %v", ptr, got, err)
		}
	}
	for _, bad := range []string{"a", "/missing", "/a/b~1c/2", "/a/b~1c/01", "/a/b~1c/-1", "/a/b~1c/0/x"} {
		if _, err := LookupPointer(doc, bad); err == nil {
			t.Errorf("%q resolved", bad)
		}
	}
	got, err := FindTeePubKey(doc)
	if err != nil || string(got) != `{"kty":"EC"}` {
		t.Fatalf("fallback /tee-pubkey: %s %v", got, err)
	}
	got, err = FindTeePubKey(doc, "/a/b~1c/1")
	if err != nil || string(got) != `{"~k":"v"}` {
		t.Fatalf("extra pointer first: %s %v", got, err)
	}
	if _, err := FindTeePubKey(json.RawMessage(`{"x":1}`), "/n"); !errors.Is(err, ErrNoTeePubKey) {
		t.Fatalf("no key: %v", err)
	}
}

func BenchmarkSign(b *testing.B) {
	s, _ := NewSigner()
	c := NewClaims(t0, DefaultTTL, DefaultIssuer, VerifierID{})
	c.Submods["cpu0"] = Appraisal{Status: TierNone, AnnotatedEvidence: map[string]any{"sample": map[string]any{"svn": "1"}}}
	for b.Loop() {
		if _, err := s.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	s, _ := NewSigner()
	v, _ := NewVerifier(VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{s.PublicKey()}})
	c := NewClaims(t0, DefaultTTL, DefaultIssuer, VerifierID{})
	c.Submods["cpu0"] = Appraisal{Status: TierNone, AnnotatedEvidence: map[string]any{"sample": map[string]any{"svn": "1"}}}
	tok, _ := s.Sign(c)
	for b.Loop() {
		if _, _, err := v.Verify(tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}

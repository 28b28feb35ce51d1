package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestCheckVersion(t *testing.T) {
	if err := CheckVersion("0.4.0"); err != nil {
		t.Fatalf("0.4.0 refused: %v", err)
	}
	for _, v := range []string{"0.3.0", "0.4.1", "v0.4.0", " 0.4.0", "0.4.0-rc1", "", "0.4"} {
		err := CheckVersion(v)
		if !errors.Is(err, ErrVersionMismatch) {
			t.Fatalf("%q: got %v, want ErrVersionMismatch", v, err)
		}
		if !strings.Contains(err.Error(), "KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is "+v) {
			t.Fatalf("%q: error text %q is not Trustee's", v, err)
		}
	}
}

func TestTees(t *testing.T) {
	for _, tee := range Tees() {
		if !ValidTee(tee) {
			t.Errorf("%s listed but not valid", tee)
		}
	}
	for _, bad := range []string{"", "sev", "SNP", "snp ", "az_snp_vtpm"} {
		if ValidTee(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	if len(Tees()) != 13 {
		t.Errorf("got %d TEE names, want 13", len(Tees()))
	}
}

func TestDecodeRequest(t *testing.T) {
	body := `{"version":"0.4.0","tee":"snp","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512","sm3"]},"future":1}`
	req, err := DecodeRequest(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if req.Version != "0.4.0" || req.Tee != "snp" || !strings.Contains(string(req.ExtraParams), "sm3") {
		t.Fatalf("decoded %+v", req)
	}
	// null extra-params is present (serde Value::Null) and accepted.
	req, err = DecodeRequest(strings.NewReader(`{"version":"0.4.0","tee":"sample","extra-params":null}`))
	if err != nil || string(req.ExtraParams) != "null" {
		t.Fatalf("null extra-params: %v %s", err, req.ExtraParams)
	}

	bad := []struct {
		body string
		want error
	}{
		{`{"version":"0.4.0","tee":"snp"}`, ErrMalformed},                                 // extra-params required
		{`{"tee":"snp","extra-params":{}}`, ErrMalformed},                                 // version required
		{`{"version":"0.4.0","extra-params":{}}`, ErrMalformed},                           // tee required
		{`{"version":"0.4.0","tee":"sev","extra-params":{}}`, ErrUnknownTee},              // unknown TEE
		{`{"Version":"0.4.0","tee":"snp","extra-params":{}}`, ErrMalformed},               // case-sensitive names
		{`{"version":"0.4.0","tee":"snp","tee":"tdx","extra-params":{}}`, ErrMalformed},   // duplicate member
		{`{"version":4,"tee":"snp","extra-params":{}}`, ErrMalformed},                     // wrong type
		{`{"version":null,"tee":"snp","extra-params":{}}`, ErrMalformed},                  // null is not a string
		{`["version"]`, ErrMalformed},                                                     // not an object
		{`{"version":"0.4.0","tee":"snp","extra-params":{}} x`, ErrMalformed},             // trailing garbage
		{"{\"version\":\"0.4.0\xff\",\"tee\":\"snp\",\"extra-params\":{}}", ErrMalformed}, // invalid UTF-8
		{`{"version":"0.4.0","tee":"snp","extra-params":"` + strings.Repeat("a", MaxExtraParamsSize) + `"}`, ErrTooLarge},
		{`{"version":"0.4.0","tee":"snp","extra-params":{}, "pad":"` + strings.Repeat("a", MaxRequestBody) + `"}`, ErrTooLarge},
	}
	for _, c := range bad {
		_, err := DecodeRequest(strings.NewReader(c.body))
		if !errors.Is(err, c.want) {
			short := c.body
			if len(short) > 80 {
				short = short[:80]
			}
			t.Errorf("%s: got %v, want %v", short, err, c.want)
		}
	}
}

func TestRequestMarshal(t *testing.T) {
	b, err := json.Marshal(NewRequest(TeeSample))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":"0.4.0","tee":"sample","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512"]}}`
	if string(b) != want {
		t.Fatalf("got %s", b)
	}
	b, _ = json.Marshal(Request{Version: Version, Tee: TeeSnp})
	if !bytes.Contains(b, []byte(`"extra-params":{}`)) {
		t.Fatalf("extra-params not emitted: %s", b)
	}
}

func TestChallenge(t *testing.T) {
	nonce, err := NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(nonce)
	if err != nil || len(raw) != NonceSize || len(nonce) != 44 {
		t.Fatalf("nonce %q: %d bytes, err %v", nonce, len(raw), err)
	}
	b, err := json.Marshal(Challenge{Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"nonce":"` + nonce + `","extra-params":""}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
	c, err := DecodeChallenge(bytes.NewReader(b))
	if err != nil || c.Nonce != nonce || string(c.ExtraParams) != `""` {
		t.Fatalf("round trip: %+v %v", c, err)
	}
	if _, err := DecodeChallenge(strings.NewReader(`{"nonce":"x"}`)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("challenge without extra-params: %v", err)
	}

	for ep, want := range map[string]string{
		`""`:                                   "sha384",
		`{}`:                                   "sha384",
		`{"selected-hash-algorithm":"sha512"}`: "sha512",
		`{"selected-hash-algorithm":"SHA256"}`: "sha256",
		`null`:                                 "sha384",
	} {
		got, err := Challenge{ExtraParams: json.RawMessage(ep)}.HashAlgorithm()
		if err != nil || got != want {
			t.Errorf("%s: got %q %v, want %q", ep, got, err, want)
		}
	}
	if _, err := (Challenge{ExtraParams: json.RawMessage(`{"selected-hash-algorithm":"sm3"}`)}).HashAlgorithm(); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Errorf("sm3: %v", err)
	}
	if _, err := (Challenge{ExtraParams: json.RawMessage(`{"selected-hash-algorithm":5}`)}).HashAlgorithm(); !errors.Is(err, ErrMalformed) {
		t.Errorf("non-string: %v", err)
	}
}

func validECJWK(t testing.TB) (string, TeePubKey) {
	t.Helper()
	_, pub, err := NewTeeKey(AlgECDHESA256KW, CurveP256)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), pub
}

func TestDecodeAttestation(t *testing.T) {
	jwk, pub := validECJWK(t)
	body := `{
	  "init-data": {"format": "toml", "body": "version = \"0.1.0\"\n"},
	  "runtime-data": {"nonce": "abc=", "tee-pubkey": ` + jwk + `},
	  "tee-evidence": {"primary_evidence": {"svn":"1","report_data":"AA=="}, "additional_evidence": "{\"sampledevice\":{\"svn\":\"2\"}}"},
	  "extension": {"ignored": true}
	}`
	a, err := DecodeAttestation(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if a.InitData == nil || a.InitData.Format != "toml" || a.InitData.Body != "version = \"0.1.0\"\n" {
		t.Fatalf("init-data %+v", a.InitData)
	}
	if a.RuntimeData.Nonce != "abc=" || a.RuntimeData.TeePubKey != pub {
		t.Fatalf("runtime-data %+v", a.RuntimeData)
	}
	if string(a.TeeEvidence.PrimaryEvidence) != `{"svn":"1","report_data":"AA=="}` {
		t.Fatalf("primary evidence %s", a.TeeEvidence.PrimaryEvidence)
	}
	add, err := ParseAdditionalEvidence(a.TeeEvidence.AdditionalEvidence)
	if err != nil || string(add["sampledevice"]) != `{"svn":"2"}` || len(add) != 1 {
		t.Fatalf("additional evidence %v %v", add, err)
	}

	// Round trip through Marshal (client side) and decode again.
	out, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := DecodeAttestation(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("re-decode %s: %v", out, err)
	}
	if a2.RuntimeData != a.RuntimeData || *a2.InitData != *a.InitData {
		t.Fatal("round trip changed the attestation")
	}

	// init-data null or absent.
	for _, initData := range []string{`"init-data": null,`, ``} {
		body := `{` + initData + `"runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":null,"additional_evidence":""}}`
		a, err := DecodeAttestation(strings.NewReader(body))
		if err != nil || a.InitData != nil || string(a.TeeEvidence.PrimaryEvidence) != "null" {
			t.Fatalf("%q: %+v %v", initData, a, err)
		}
	}
	// The client marshals a nil InitData as null.
	b, _ := json.Marshal(Attestation{RuntimeData: RuntimeData{Nonce: "n", TeePubKey: pub}, TeeEvidence: TeeEvidence{PrimaryEvidence: json.RawMessage(`{}`)}})
	if !bytes.HasPrefix(b, []byte(`{"init-data":null,"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":`)) ||
		!bytes.HasSuffix(b, []byte(`"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`)) {
		t.Fatalf("client marshal: %s", b)
	}

	bad := []struct {
		name, body string
		want       error
	}{
		{"no runtime-data", `{"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`, ErrMalformed},
		{"no tee-evidence", `{"runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `}}`, ErrMalformed},
		{"no nonce", `{"runtime-data":{"tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`, ErrMalformed},
		{"no pubkey", `{"runtime-data":{"nonce":"n"},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`, ErrMalformed},
		{"bad pubkey", `{"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"AA","y":"AA"}},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`, ErrInvalidKey},
		{"no primary", `{"runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `},"tee-evidence":{"additional_evidence":""}}`, ErrMalformed},
		{"no additional", `{"runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":{}}}`, ErrMalformed},
		{"additional not string", `{"runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":{},"additional_evidence":{}}}`, ErrMalformed},
		{"init-data body missing", `{"init-data":{"format":"toml"},"runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`, ErrMalformed},
		{"init-data string", `{"init-data":"x","runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`, ErrMalformed},
		{"evidence too big", `{"runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":"` + strings.Repeat("A", MaxEvidenceSize) + `","additional_evidence":""}}`, ErrTooLarge},
		{"body too big", `{"runtime-data":{"nonce":"n","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":"` + strings.Repeat("A", MaxRequestBody) + `","additional_evidence":""}}`, ErrTooLarge},
		{"lone surrogate nonce", `{"runtime-data":{"nonce":"\ud800","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`, ErrMalformed},
		{"not json", `{"runtime-data":`, ErrMalformed},
		{"empty", ``, ErrMalformed},
	}
	for _, c := range bad {
		if _, err := DecodeAttestation(strings.NewReader(c.body)); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestParseAdditionalEvidence(t *testing.T) {
	m, err := ParseAdditionalEvidence("")
	if err != nil || len(m) != 0 {
		t.Fatalf("empty: %v %v", m, err)
	}
	for _, bad := range []string{`{"gpu":{}}`, `[]`, `{`, `{"nvidia":1,"nvidia":2}`} {
		if _, err := ParseAdditionalEvidence(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestRuntimeDataDigestVectors(t *testing.T) {
	pub := TeePubKey{Kty: KtyEC, Crv: CurveP256, Alg: AlgECDHESA256KW, X: strings.Repeat("x", 43), Y: strings.Repeat("y", 43)}
	nonce := base64.StdEncoding.EncodeToString(make([]byte, 32))
	empty := ""
	canon, err := CanonicalRuntimeData(nonce, pub, &empty)
	if err != nil {
		t.Fatal(err)
	}
	wantCanon := `{"additional-evidence":"","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"` + pub.X + `","y":"` + pub.Y + `"}}`
	if string(canon) != wantCanon {
		t.Fatalf("canonical runtime data\n got %s\nwant %s", canon, wantCanon)
	}
	d, err := RuntimeDataDigest(HashSHA384, nonce, pub, &empty)
	if err != nil {
		t.Fatal(err)
	}
	const want = "2eedde6de4f8b1688c68562b53dfe22e4e0204fa7cc9cc9b9bf7856631d876d6aaeb8ae0d2226c877eb0af63fe21b277"
	if hex.EncodeToString(d) != want {
		t.Fatalf("digest %x, want %s", d, want)
	}

	// Device form: no additional-evidence member.
	canon, _ = CanonicalRuntimeData(nonce, pub, nil)
	if strings.Contains(string(canon), "additional-evidence") || !strings.HasPrefix(string(canon), `{"nonce":`) {
		t.Fatalf("device form: %s", canon)
	}
	for alg, size := range map[string]int{HashSHA256: 32, HashSHA384: 48, HashSHA512: 64} {
		d, err := RuntimeDataDigest(alg, nonce, pub, nil)
		if err != nil || len(d) != size {
			t.Errorf("%s: %d bytes, %v", alg, len(d), err)
		}
	}
	if _, err := RuntimeDataDigest("sm3", nonce, pub, nil); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Errorf("sm3: %v", err)
	}
	if _, err := RuntimeDataDigest(HashSHA384, nonce, TeePubKey{Kty: "oct"}, nil); err == nil {
		t.Error("unknown kty accepted")
	}

	// An RSA key and an extra (dropped) member: the digest covers only
	// kty, alg, n, e, with sorted keys.
	rsaPub := TeePubKey{Kty: KtyRSA, Alg: AlgRSAOAEP256, N: "nnn", E: "AQAB"}
	canon, _ = CanonicalRuntimeData("n", rsaPub, &empty)
	if want := `{"additional-evidence":"","nonce":"n","tee-pubkey":{"alg":"RSA-OAEP-256","e":"AQAB","kty":"RSA","n":"nnn"}}`; string(canon) != want {
		t.Fatalf("rsa canonical %s", canon)
	}
}

func TestErrorInformation(t *testing.T) {
	b := MarshalErrorInformation(KindPolicyDeny, "resource policy denied <path>")
	e, err := ParseErrorInformation(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != "https://github.com/confidential-containers/kbs/errors/PolicyDeny" || e.Detail != "resource policy denied <path>" {
		t.Fatalf("%+v", e)
	}
	if e.Kind() != KindPolicyDeny || !strings.Contains(e.Error(), "PolicyDeny") {
		t.Fatalf("kind %q error %q", e.Kind(), e.Error())
	}
	if (ErrorInformation{Type: "other"}).Kind() != "" {
		t.Fatal("kind of foreign type")
	}
	for kind, status := range map[ErrorKind]int{
		KindInvalidRequestPath: http.StatusNotFound,
		KindPluginNotFound:     http.StatusNotFound,
		KindPolicyDeny:         http.StatusUnauthorized,
		KindTokenNotFound:      http.StatusUnauthorized,
		KindAttestationError:   http.StatusUnauthorized,
	} {
		if kind.TrusteeStatus() != status {
			t.Errorf("%s: %d, want %d", kind, kind.TrusteeStatus(), status)
		}
	}
	if _, err := ParseErrorInformation([]byte(`{"type":"x"}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("missing detail: %v", err)
	}
}

func TestDecodeAttestResponse(t *testing.T) {
	r, err := DecodeAttestResponse(strings.NewReader(`{"token":"a.b.c"}`))
	if err != nil || r.Token != "a.b.c" {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := DecodeAttestResponse(strings.NewReader(`{}`)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("missing token: %v", err)
	}
}

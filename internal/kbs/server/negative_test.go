package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/attestation/ear"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
)

// The negative matrix: every case asserts the status, the ErrorInformation
// kind and that no secret left the KBS. All run against a dev KBS, the
// most permissive configuration: the refusals come from the protocol and
// verification checks, not from the resource policy.

const negPath = "neg/secret/key"

func negEnv(t *testing.T, c envConfig) *env {
	c.dev = true
	e := newEnv(t, c)
	e.setResource(negPath, secret("negative"))
	return e
}

// Runtime-data nonce other than the session's challenge: refused, and the
// session is gone (a second /attest on it, even correct, is refused).
func TestWrongNonce(t *testing.T) {
	e := negEnv(t, envConfig{})
	for _, a := range attesters(t) {
		t.Run(a.name, func(t *testing.T) {
			g := newGuest(t, e.url, a.new(), "", "")
			nonce := g.auth()
			other, _ := protocol.NewNonce()
			r := g.attestRaw(attestBody(t, other, g.pub, g.evidence(other, g.pub)))
			wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "nonce does not match")
			wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
			// Replay on the failed session with the right nonce.
			r = g.attestRaw(attestBody(t, nonce, g.pub, g.evidence(nonce, g.pub)))
			wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "no such session")
			wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
		})
	}
}

// Replays across sessions: a new session refuses an old session's nonce,
// an old session's evidence under the new nonce, and an old session's
// whole (successful) attestation body.
func TestReplayedNonce(t *testing.T) {
	e := negEnv(t, envConfig{})
	for _, a := range attesters(t) {
		t.Run(a.name, func(t *testing.T) {
			old := newGuest(t, e.url, a.new(), "", "")
			oldNonce := old.auth()
			oldBody := attestBody(t, oldNonce, old.pub, old.evidence(oldNonce, old.pub))
			if r := old.attestRaw(oldBody); r.status != http.StatusOK {
				t.Fatalf("first attest: %d %s", r.status, r.body)
			}

			// Same key, new session, the old body verbatim.
			g := newGuest(t, e.url, old.att, "", "")
			g.priv, g.pub = old.priv, old.pub
			g.auth()
			wantError(t, g.attestRaw(oldBody), http.StatusUnauthorized, protocol.KindAttestationError, "nonce does not match")
			wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)

			// New session, runtime-data carries the new nonce but the
			// evidence was made for the old one.
			newNonce := g.auth()
			r := g.attestRaw(attestBody(t, newNonce, g.pub, old.evidence(oldNonce, old.pub)))
			wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "report-data-binding")
			wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)

			// Two sessions open at once: session B with A's nonce.
			ga := newGuest(t, e.url, a.new(), "", "")
			gb := newGuest(t, e.url, a.new(), "", "")
			na := ga.auth()
			gb.auth()
			r = gb.attestRaw(attestBody(t, na, gb.pub, gb.evidence(na, gb.pub)))
			wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "nonce does not match")
			wantError(t, gb.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
			// A's session is untouched.
			if got := ga.open(ga.getNoCookie(negPath, ga.attest(na))); !bytes.Equal(got, secret("negative")) {
				t.Fatalf("session A after B's replay: got %q", got)
			}
		})
	}
}

// Evidence whose report data binds key A, sent with tee-pubkey B: refused
// (B's holder would get the secret without being the attested TEE).
func TestEvidenceBoundToAnotherKey(t *testing.T) {
	e := negEnv(t, envConfig{})
	for _, a := range attesters(t) {
		t.Run(a.name, func(t *testing.T) {
			g := newGuest(t, e.url, a.new(), "", "")
			_, other, err := protocol.NewTeeKey(protocol.AlgECDHESA256KW, protocol.CurveP256)
			if err != nil {
				t.Fatal(err)
			}
			nonce := g.auth()
			r := g.attestRaw(attestBody(t, nonce, other, g.evidence(nonce, g.pub)))
			wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "report-data-binding")
			wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
		})
	}
}

// tamperSNP decodes SNP evidence, applies f and re-encodes it.
func tamperSNP(t *testing.T, ev json.RawMessage, f func(*tee.SNPEvidence)) json.RawMessage {
	t.Helper()
	parsed, err := tee.ParseSNPEvidence(ev)
	if err != nil {
		t.Fatal(err)
	}
	f(parsed)
	out, err := json.Marshal(parsed)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A simulated report with a flipped byte (in the signature, in a signed
// field, or a certificate from another chip) is refused.
func TestTamperedSNPReport(t *testing.T) {
	e := negEnv(t, envConfig{})
	cases := []struct {
		name  string
		f     func(*tee.SNPEvidence)
		check string
	}{
		{"signature r", func(ev *tee.SNPEvidence) { ev.AttestationReport.Signature.R[3] ^= 0x01 }, "report-signature"},
		{"signature s", func(ev *tee.SNPEvidence) { ev.AttestationReport.Signature.S[0] ^= 0x80 }, "report-signature"},
		{"measurement", func(ev *tee.SNPEvidence) { ev.AttestationReport.Measurement[0] ^= 0x01 }, "report-signature"},
		{"policy debug bit", func(ev *tee.SNPEvidence) { ev.AttestationReport.Policy |= sim.PolicyDebug }, ""},
		{"report data", func(ev *tee.SNPEvidence) { ev.AttestationReport.ReportData[63] ^= 0x01 }, "report-signature"},
		{"vmpl", func(ev *tee.SNPEvidence) { ev.AttestationReport.VMPL = 1 }, ""},
		{"no certificates", func(ev *tee.SNPEvidence) { ev.CertChain = nil }, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: measurement(0x66)}), "", "")
			nonce := g.auth()
			ev := tamperSNP(t, g.evidence(nonce, g.pub), c.f)
			r := g.attestRaw(attestBody(t, nonce, g.pub, ev))
			var details []string
			if c.check != "" {
				details = append(details, c.check)
			}
			wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, details...)
			wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
		})
	}
	t.Run("untampered control", func(t *testing.T) {
		g := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: measurement(0x66)}), "", "")
		nonce := g.auth()
		ev := tamperSNP(t, g.evidence(nonce, g.pub), func(*tee.SNPEvidence) {})
		g.attestRaw(attestBody(t, nonce, g.pub, ev))
		if got := g.open(g.get(negPath, "")); !bytes.Equal(got, secret("negative")) {
			t.Fatalf("got %q", got)
		}
	})
}

// Simulated evidence is refused when the simulated root is not trusted
// (a production KBS).
func TestSimulatedRootNotTrusted(t *testing.T) {
	e := negEnv(t, envConfig{noSimulatedTTR: true})
	g := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{}), "", "")
	nonce := g.auth()
	wantError(t, g.attestRaw(attestBody(t, nonce, g.pub, g.evidence(nonce, g.pub))), http.StatusUnauthorized, protocol.KindAttestationError, "vcek-chain")
	wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
}

// Sessions expire: /attest after the session timeout is refused, and an
// attested session's cookie stops authorizing releases.
func TestExpiredSession(t *testing.T) {
	e := negEnv(t, envConfig{sessionTimeout: time.Minute})
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	nonce := g.auth()
	e.clock.Advance(time.Minute + time.Second)
	r := g.attestRaw(attestBody(t, nonce, g.pub, g.evidence(nonce, g.pub)))
	wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "expired")
	wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)

	g = newGuest(t, e.url, tee.NewSample(), "", "")
	g.handshake()
	if got := g.open(g.get(negPath, "")); !bytes.Equal(got, secret("negative")) {
		t.Fatalf("got %q", got)
	}
	e.clock.Advance(time.Minute + time.Second)
	wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
	// /attest on the expired attested session does not hand back the token.
	wantError(t, g.attestRaw([]byte(`{}`)), http.StatusUnauthorized, protocol.KindAttestationError, "expired")
}

// Tokens expire (exp plus the 60 s leeway), on the Bearer and the cookie
// path.
func TestExpiredToken(t *testing.T) {
	e := negEnv(t, envConfig{tokenTTL: 2 * time.Minute, sessionTimeout: time.Hour})
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	tok := g.handshake()
	c := tokenClaims(t, tok)
	if exp, iat := c["exp"].(float64), c["iat"].(float64); exp-iat != 120 {
		t.Errorf("token lifetime %v s, want the configured 120 s", exp-iat)
	}
	// Within the lifetime plus leeway: accepted.
	e.clock.Advance(2*time.Minute + 30*time.Second)
	g.open(g.getNoCookie(negPath, tok))
	e.clock.Advance(31 * time.Second)
	wantError(t, g.getNoCookie(negPath, tok), http.StatusUnauthorized, protocol.KindTokenVerifierError, "expired")
	// The session (still open) holds the same expired token.
	wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenVerifierError, "expired")
}

// Tokens not signed by this KBS's key are refused: re-signed by another
// ES256 key (with an attacker's tee-pubkey, or unchanged claims), payload
// swapped under the original signature, alg none, garbage.
func TestForgedTokens(t *testing.T) {
	e := negEnv(t, envConfig{})
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	tok := g.handshake()
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims ear.Claims
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	other, err := ear.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	resigned, err := other.Sign(&claims)
	if err != nil {
		t.Fatal(err)
	}

	// An attacker's key in the claims, re-signed.
	attacker := newGuest(t, e.url, tee.NewSample(), "", "")
	var m map[string]any
	_ = json.Unmarshal(payload, &m)
	m["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)["runtime_data_claims"].(map[string]any)["tee-pubkey"] = attacker.pub
	mb, _ := json.Marshal(m)
	var attackerClaims ear.Claims
	if err := json.Unmarshal(mb, &attackerClaims); err != nil {
		t.Fatal(err)
	}
	resignedAttacker, err := other.Sign(&attackerClaims)
	if err != nil {
		t.Fatal(err)
	}
	swapped := parts[0] + "." + base64.RawURLEncoding.EncodeToString(mb) + "." + parts[2]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."

	for name, bad := range map[string]string{
		"re-signed":               resigned,
		"re-signed attacker key":  resignedAttacker,
		"payload swapped":         swapped,
		"alg none":                none,
		"garbage":                 "not-a-token",
		"truncated signature":     tok[:len(tok)-4],
		"signature of other part": parts[0] + "." + parts[1] + "." + strings.Split(resigned, ".")[2],
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, g.getNoCookie(negPath, bad), http.StatusUnauthorized, protocol.KindTokenVerifierError)
		})
	}
	// The genuine token works (control).
	if got := g.open(g.getNoCookie(negPath, tok)); !bytes.Equal(got, secret("negative")) {
		t.Fatalf("got %q", got)
	}
	// No token at all; an empty Bearer; another auth scheme.
	wantError(t, g.getNoCookie(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
	for _, h := range []string{"Bearer ", "Basic " + tok, "bearer"} {
		r := send(t, &http.Client{}, http.MethodGet, e.url, "/kbs/v0/resource/"+negPath, nil, http.Header{"Authorization": {h}})
		wantError(t, r, http.StatusUnauthorized, protocol.KindTokenNotFound)
	}
}

// /auth refuses TEEs this KBS cannot verify and unknown names.
func TestUnknownTee(t *testing.T) {
	e := negEnv(t, envConfig{})
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	for _, body := range []string{
		`{"version":"0.4.0","tee":"tdx","extra-params":""}`,
		`{"version":"0.4.0","tee":"sampledevice","extra-params":""}`,
		`{"version":"0.4.0","tee":"bogus","extra-params":""}`,
		`{"version":"0.4.0","tee":"","extra-params":""}`,
		`{"version":"0.4.0","tee":"SAMPLE","extra-params":""}`,
		`{"version":"0.4.0","extra-params":""}`,
	} {
		t.Run(body, func(t *testing.T) {
			wantError(t, g.authRaw([]byte(body)), http.StatusUnauthorized, protocol.KindAttestationError)
			wantError(t, g.attestRaw([]byte(`{}`)), http.StatusUnauthorized, protocol.KindAttestationError)
		})
	}
}

// Only protocol version 0.4.0 is spoken.
func TestBadVersion(t *testing.T) {
	e := negEnv(t, envConfig{})
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	for _, v := range []string{"0.3.0", "0.4.1", "1.0.0", "", "=0.4.0", " 0.4.0"} {
		t.Run(v, func(t *testing.T) {
			body, _ := json.Marshal(map[string]any{"version": v, "tee": "sample", "extra-params": ""})
			wantError(t, g.authRaw(body), http.StatusUnauthorized, protocol.KindAttestationError, "Version Mismatch")
		})
	}
}

// Malformed /auth and /attest bodies are refused with ErrorInformation;
// a malformed /attest burns the session.
func TestMalformedJSON(t *testing.T) {
	e := negEnv(t, envConfig{})
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	for _, body := range []string{``, `{`, `[]`, `null`, `"x"`, `{"version":0.4,"tee":"sample","extra-params":""}`,
		`{"version":"0.4.0","tee":"sample","extra-params":""}garbage`,
		`{"version":"0.4.0","version":"0.4.0","tee":"sample","extra-params":""}`} {
		t.Run("auth "+body, func(t *testing.T) {
			wantError(t, g.authRaw([]byte(body)), http.StatusUnauthorized, protocol.KindAttestationError)
		})
	}
	for _, body := range []string{``, `{`, `[]`, `{}`, `{"runtime-data":{}}`,
		`{"runtime-data":{"nonce":1,"tee-pubkey":{}},"tee-evidence":{}}`} {
		t.Run("attest "+body, func(t *testing.T) {
			nonce := g.auth()
			wantError(t, g.attestRaw([]byte(body)), http.StatusUnauthorized, protocol.KindAttestationError)
			// The session is gone even for the right evidence.
			r := g.attestRaw(attestBody(t, nonce, g.pub, g.evidence(nonce, g.pub)))
			wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "no such session")
			wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
		})
	}
	// A tee-pubkey that is not a usable key, with evidence correctly bound
	// to it: refused before anything is encrypted to it.
	weakRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	zero32 := b64(make([]byte, 32))
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPub, _ := ec.PublicKey.Bytes()
	offCurveY := bytes.Clone(ecPub[33:])
	offCurveY[31] ^= 1
	for name, bad := range map[string]protocol.TeePubKey{
		"short coordinates":  {Kty: "EC", Alg: protocol.AlgECDHESA256KW, Crv: "P-256", X: "AAAA", Y: "AAAA"},
		"point not on curve": {Kty: "EC", Alg: protocol.AlgECDHESA256KW, Crv: "P-256", X: b64(ecPub[1:33]), Y: b64(offCurveY)},
		"zero point":         {Kty: "EC", Alg: protocol.AlgECDHESA256KW, Crv: "P-256", X: zero32, Y: zero32},
		"P-384":              {Kty: "EC", Alg: protocol.AlgECDHESA256KW, Crv: "P-384", X: b64(make([]byte, 48)), Y: b64(make([]byte, 48))},
		"EC with direct alg": {Kty: "EC", Alg: "ECDH-ES", Crv: "P-256", X: b64(ecPub[1:33]), Y: b64(ecPub[33:])},
		"RSA 1024":           {Kty: "RSA", Alg: protocol.AlgRSAOAEP256, N: b64(weakRSA.N.Bytes()), E: "AQAB"},
		"RSA exponent 1":     {Kty: "RSA", Alg: protocol.AlgRSAOAEP256, N: b64(bigRSA(t).N.Bytes()), E: "AQ"},
		"RSA-OAEP (SHA-1)":   {Kty: "RSA", Alg: "RSA-OAEP", N: b64(bigRSA(t).N.Bytes()), E: "AQAB"},
	} {
		t.Run("attest bad jwk "+name, func(t *testing.T) {
			nonce := g.auth()
			r := g.attestRaw(attestBody(t, nonce, bad, g.evidence(nonce, bad)))
			wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "invalid TEE public key")
			wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
		})
	}
	t.Run("attest bad jwk oct", func(t *testing.T) {
		nonce := g.auth()
		body := `{"runtime-data":{"nonce":"` + nonce + `","tee-pubkey":{"kty":"oct","alg":"A256KW","k":"` + zero32 + `"}},` +
			`"tee-evidence":{"primary_evidence":{"svn":"1","report_data":""},"additional_evidence":""},"init-data":null}`
		wantError(t, g.attestRaw([]byte(body)), http.StatusUnauthorized, protocol.KindAttestationError, "invalid TEE public key")
	})
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func bigRSA(t *testing.T) *rsa.PrivateKey {
	rsaOnce.Do(func() { rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048) })
	return rsaKey
}

// Concurrent /attest on one session with the same valid evidence: the
// evidence is verified once; every 200 carries the same token and the
// others are refused as a reused nonce.
func TestConcurrentAttestSameSession(t *testing.T) {
	e := negEnv(t, envConfig{})
	g := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{}), "", "")
	nonce := g.auth()
	body := attestBody(t, nonce, g.pub, g.evidence(nonce, g.pub))
	const n = 16
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = send(t, g.hc, http.MethodPost, e.url, "/kbs/v0/attest", body, nil)
		}()
	}
	wg.Wait()
	token := ""
	for _, r := range replies {
		if r.status != http.StatusOK {
			wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "already used")
			continue
		}
		var ar protocol.AttestResponse
		if err := json.Unmarshal(r.body, &ar); err != nil {
			t.Fatal(err)
		}
		if token != "" && ar.Token != token {
			t.Fatal("two different tokens for one session")
		}
		token = ar.Token
	}
	if token == "" {
		t.Fatal("no /attest succeeded")
	}
	if v := metricValue(t, e.url, "kbs_attestations_total", `outcome="success",tee="snp"`); v != 1 {
		t.Errorf("evidence verified %v times for one session, want 1", v)
	}
}

// Bodies over 2 MiB are refused with 413 on every endpoint that reads
// one, and an oversized resource is not stored.
func TestOversizedBody(t *testing.T) {
	e := negEnv(t, envConfig{})
	big := bytes.Repeat([]byte("a"), 2<<20+1)
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	wantError(t, g.authRaw(big), http.StatusRequestEntityTooLarge, protocol.KindSerdeError)
	g.auth()
	wantError(t, g.attestRaw(big), http.StatusRequestEntityTooLarge, protocol.KindSerdeError)
	wantError(t, g.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
	r := send(t, &http.Client{}, http.MethodPost, e.url, "/kbs/v0/resource/big/res/x", big, http.Header{"Content-Type": {"application/octet-stream"}})
	wantError(t, r, http.StatusRequestEntityTooLarge, protocol.KindSerdeError)
	list, err := e.admin().ListResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list {
		if p == "big/res/x" {
			t.Fatal("an oversized resource was stored")
		}
	}
	// Exactly at the limit is fine (a 2 MiB resource).
	if err := e.admin().SetResource(context.Background(), "big/res/y", big[:2<<20]); err != nil {
		t.Fatalf("2 MiB resource: %v", err)
	}
	for _, p := range []string{"/kbs/v0/resource-policy", "/kbs/v0/reference-value", "/kbs/v0/attestation-policy"} {
		r := send(t, &http.Client{}, http.MethodPost, e.url, p, big, nil)
		wantError(t, r, http.StatusRequestEntityTooLarge, protocol.KindSerdeError)
	}
}

// Resource paths must be exactly repo/type/tag of safe segments; traversal
// in any spelling is refused (raw request paths: nothing cleans them on
// the way) for GET with a valid token and for the admin POST and DELETE.
func TestResourcePathTraversal(t *testing.T) {
	e := negEnv(t, envConfig{})
	e.setResource("a/b/c", secret("abc"))
	e.setResource("b/c/d", secret("bcd"))
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	tok := g.handshake()
	paths := []string{
		"a/../b/c", "a/b/../c", "../a/b/c", "a/b/c/..", "./a/b/c", "a/./b/c",
		"%2e%2e/b/c", "a/%2e%2e/c", "a/b/%2e%2e", "a/b/%2E%2E", "a%2f..%2fb/c/d", "..%2fb/c/d",
		"a/b/c/d", "x/a/b/c", "a/b", "a", "",
		"a//c", "a/b/", "/a/b/c", "a/b/c/", "//a/b",
		".a/b/c", "a/.b/c", "a/b/.c", "a/b/..", "a/b/.", "a/b/c%00", "a/b/c%2f", "a%5cb/c/d",
		"a/b/c?x=../../d", // query strings are not part of the path: this one is legal
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			r := g.getNoCookie(p, tok)
			if p == "a/b/c?x=../../d" {
				if got := g.open(r); !bytes.Equal(got, secret("abc")) {
					t.Fatalf("got %q", got)
				}
				return
			}
			if p == "" {
				// GET /kbs/v0/resource/ is the admin list, not a release.
				if r.status == http.StatusOK {
					noSecret(t, r.body)
				}
				return
			}
			wantError(t, r, http.StatusNotFound, protocol.KindInvalidRequestPath)
			wantError(t, g.get(p, ""), http.StatusNotFound, protocol.KindInvalidRequestPath)
			// The admin side refuses the same paths.
			pr := send(t, &http.Client{}, http.MethodPost, e.url, "/kbs/v0/resource/"+p, []byte("overwrite"), http.Header{"Content-Type": {"application/octet-stream"}})
			if pr.status != http.StatusNotFound {
				t.Errorf("POST %s: %d %s, want 404", p, pr.status, pr.body)
			}
			dr := send(t, &http.Client{}, http.MethodDelete, e.url, "/kbs/v0/resource/"+p, nil, nil)
			if dr.status != http.StatusNotFound {
				t.Errorf("DELETE %s: %d %s, want 404", p, dr.status, dr.body)
			}
		})
	}
	// Nothing was overwritten or deleted.
	list, err := e.admin().ListResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(list, ","); got != "a/b/c,b/c/d,"+negPath {
		t.Errorf("resources after traversal attempts: %s", got)
	}
	if got := g.open(g.getNoCookie("b/c/d", tok)); !bytes.Equal(got, secret("bcd")) {
		t.Errorf("b/c/d changed: %q", got)
	}
}

// Unknown plugins and endpoints: 404 with ErrorInformation.
func TestUnknownEndpoints(t *testing.T) {
	e := negEnv(t, envConfig{})
	cases := []struct {
		method, path string
		status       int
		kind         protocol.ErrorKind
	}{
		{"GET", "/kbs/v0/nebula-ca/credential", 404, protocol.KindPluginNotFound},
		{"GET", "/kbs/v0/sample/x", 404, protocol.KindPluginNotFound},
		{"GET", "/kbs/v0/auth", 404, protocol.KindInvalidRequestPath},
		{"GET", "/kbs/v0/attest", 404, protocol.KindInvalidRequestPath},
		{"POST", "/kbs/v0/auth/x", 404, protocol.KindInvalidRequestPath},
		{"PATCH", "/kbs/v0/resource/a/b/c", 404, protocol.KindInvalidRequestPath},
		{"GET", "/kbs/v1/resource/" + negPath, 404, protocol.KindInvalidRequestPath},
		{"GET", "/resource/" + negPath, 404, protocol.KindInvalidRequestPath},
		{"GET", "/kbs/v0/", 404, protocol.KindPluginNotFound},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			wantError(t, send(t, &http.Client{}, c.method, e.url, c.path, nil, nil), c.status, c.kind)
		})
	}
}

// The session table is bounded: /auth beyond the maximum gets 503 until
// sessions expire.
func TestSessionTableBounded(t *testing.T) {
	e := negEnv(t, envConfig{sessionMax: 5, sessionTimeout: time.Minute})
	first := newGuest(t, e.url, tee.NewSample(), "", "")
	nonce := first.auth()
	for i := 0; i < 5; i++ {
		newGuest(t, e.url, tee.NewSample(), "", "").auth()
	}
	// A full table evicts the session closest to expiry (the first one)
	// instead of refusing new guests.
	wantError(t, first.attestRaw(attestBody(t, nonce, first.pub, first.evidence(nonce, first.pub))), http.StatusUnauthorized, protocol.KindAttestationError, "no such session")
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	g.handshake()
	if got := g.open(g.get(negPath, "")); !bytes.Equal(got, secret("negative")) {
		t.Fatalf("got %q", got)
	}
}

// The TEE is the one named at /auth: evidence of another TEE is refused.
func TestTeeMismatch(t *testing.T) {
	e := negEnv(t, envConfig{})
	snp := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{}), "", "")
	sample := newGuest(t, e.url, tee.NewSample(), "", "")
	// Session opened as snp, sample evidence.
	nonce := snp.auth()
	wantError(t, snp.attestRaw(attestBody(t, nonce, snp.pub, sample.evidence(nonce, snp.pub))), http.StatusUnauthorized, protocol.KindAttestationError, "evidence-format")
	// Session opened as sample, SNP evidence.
	nonce = sample.auth()
	wantError(t, sample.attestRaw(attestBody(t, nonce, sample.pub, snp.evidence(nonce, sample.pub))), http.StatusUnauthorized, protocol.KindAttestationError)
	wantError(t, sample.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
}

// A stolen genuine token releases nothing usable: the JWE is encrypted to
// the attested guest's key, not to the thief's.
func TestStolenTokenUseless(t *testing.T) {
	e := negEnv(t, envConfig{})
	victim := newGuest(t, e.url, tee.NewSample(), "", "")
	tok := victim.handshake()
	thief := newGuest(t, e.url, tee.NewSample(), "", "")
	r := thief.getNoCookie(negPath, tok)
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	noSecret(t, []byte(strings.ReplaceAll(strings.ReplaceAll(string(r.body), `"ciphertext"`, ""), `"encrypted_key"`, "")))
	var jwe protocol.Response
	if err := json.Unmarshal(r.body, &jwe); err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.DecryptResponse(thief.priv, &jwe); err == nil {
		t.Fatal("the thief decrypted a resource released to another guest's key")
	}
	if got, err := protocol.DecryptResponse(victim.priv, &jwe); err != nil || !bytes.Equal(got, secret("negative")) {
		t.Fatalf("victim: %q %v", got, err)
	}
}

// [sessions] verify_tokens checks a cookie session's token in full on each
// resource request (as Trustee does); by default only its expiry is
// checked, the server having issued and kept it. A clock set back an hour
// makes the token look issued in the future, which only the full check
// sees.
func TestSessionVerifyTokens(t *testing.T) {
	for _, verify := range []bool{false, true} {
		e := negEnv(t, envConfig{verifyTokens: verify})
		g := newGuest(t, e.url, tee.NewSample(), "", "")
		g.handshake()
		e.clock.Advance(-time.Hour)
		r := g.get(negPath, "")
		if !verify {
			if r.status != http.StatusOK {
				t.Fatalf("verify_tokens off: %d %s, want the release", r.status, r.body)
			}
			continue
		}
		wantError(t, r, http.StatusUnauthorized, protocol.KindTokenVerifierError, "attestation token rejected")
	}
}

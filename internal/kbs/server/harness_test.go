package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/admintoken"
	"github.com/coffer-project/coffer/internal/testclock"

	"github.com/coffer-project/coffer/internal/attestation"
	"github.com/coffer-project/coffer/internal/attestation/ear"
	"github.com/coffer-project/coffer/internal/kbs/client"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/kbs/server"
	"github.com/coffer-project/coffer/internal/policy"
	"github.com/coffer-project/coffer/internal/rvps"
	"github.com/coffer-project/coffer/internal/store"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
)

// The simulated SNP chip is generated once per package run: its two
// RSA-4096 keys take seconds.
var (
	chipOnce sync.Once
	chip     *sim.Processor
	chipErr  error
)

func simChip(t testing.TB) *sim.Processor {
	t.Helper()
	chipOnce.Do(func() { chip, chipErr = sim.New(sim.Options{}) })
	if chipErr != nil {
		t.Fatalf("generate the simulated SNP chip: %v", chipErr)
	}
	return chip
}

// simGuest launches a guest on the shared chip.
func simGuest(t testing.TB, cfg sim.LaunchConfig) tee.Attester {
	t.Helper()
	g, err := simChip(t).Launch(cfg)
	if err != nil {
		t.Fatalf("launch simulated guest: %v", err)
	}
	return tee.NewSimSNP(g)
}

// measurement returns a launch measurement filled with b.
func measurement(b byte) [48]byte {
	var m [48]byte
	for i := range m {
		m[i] = b
	}
	return m
}

var quietLog = slog.New(slog.DiscardHandler)

// envConfig configures an in-process KBS.
type envConfig struct {
	dev            bool
	allowDebug     bool
	sessionMax     int
	sessionTimeout time.Duration
	tokenTTL       time.Duration
	// acls for the jwt admin mode (non-dev); nil means the default
	// (role admin may call everything).
	acls           []server.AdminACL
	issuer, aud    string
	noSimulatedTTR bool // do not trust the simulated chip
	// adminKey is the trusted admin key (non-dev); nil: a fresh Ed25519 key.
	adminKey crypto.Signer
	// auditMaxRefused bounds the refused-request audit records (0: default).
	auditMaxRefused int
	// verifyTokens sets [sessions] verify_tokens.
	verifyTokens bool
}

// env is an in-process coffer-kbs on an httptest server, wired as Open
// wires it but with an injected clock and an in-memory store.
type env struct {
	t      testing.TB
	url    string
	srv    *server.Server
	st     store.Store
	clock  *testclock.Clock // shared by the server, the attestation service, the RVPS and the SNP verifier
	signer *ear.Signer
	// adminKey signs admin tokens (non-dev); adminToken is a valid token
	// with role admin ("" in dev mode, where admin is allow-all).
	adminKey   crypto.Signer
	adminToken string
}

type rvLookup struct{ *rvps.Service }

func (r rvLookup) Lookup(ctx context.Context, name string) (any, bool, error) {
	return r.Query(ctx, name)
}

type regoPolicy struct{ p *policy.Policy }

func (r regoPolicy) Allow(ctx context.Context, claims json.RawMessage, data map[string]any) (bool, string, error) {
	d, err := r.p.EvaluateAllow(ctx, claims, data)
	if err != nil {
		return false, "", err
	}
	return d.Allow, d.Explain(), nil
}

func compileResourcePolicy(rego string) (server.ResourcePolicy, error) {
	p, err := policy.Compile("resource-policy", rego)
	if err != nil {
		return nil, err
	}
	return regoPolicy{p}, nil
}

func newEnv(t testing.TB, c envConfig) *env {
	t.Helper()
	ctx := context.Background()
	st := store.NewMemory()
	t.Cleanup(func() { st.Close() })
	if err := policy.WriteDefaults(ctx, st, c.dev, nil); err != nil {
		t.Fatal(err)
	}
	clk := testclock.New(time.Now())
	rv := rvps.New(st, rvps.WithClock(clk.Now))
	signer, err := ear.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	snpOpts := attestation.SNPOptions{AllowDebug: c.allowDebug, Now: clk.Now}
	if !c.noSimulatedTTR {
		snpOpts.TrustedSimulatedRoots = [][]byte{simChip(t).RootCertsPEM()}
	}
	snp, err := attestation.NewSNPVerifier(snpOpts)
	if err != nil {
		t.Fatal(err)
	}
	as, err := attestation.NewService(attestation.ServiceConfig{
		Verifiers:       []attestation.Verifier{attestation.NewSampleVerifier(), snp},
		Store:           st,
		ReferenceValues: rv.Query,
		Signer:          signer,
		TokenTTL:        c.tokenTTL,
		Log:             quietLog,
		Now:             clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Dev = c.dev
	cfg.InsecureHTTP = true
	cfg.DataDir = t.TempDir()
	cfg.Sessions.Max = c.sessionMax
	cfg.Sessions.Timeout.Duration = c.sessionTimeout
	cfg.Sessions.VerifyTokens = c.verifyTokens
	if c.auditMaxRefused > 0 {
		cfg.AuditMaxRefused = c.auditMaxRefused
	}
	cfg.Attestation.TokenTTL.Duration = c.tokenTTL
	e := &env{t: t, st: st, clock: clk, signer: signer}
	if !c.dev {
		priv := c.adminKey
		if priv == nil {
			_, edKey, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			priv = edKey
		}
		pb, err := x509.MarshalPKIXPublicKey(priv.Public())
		if err != nil {
			t.Fatal(err)
		}
		pubPath := filepath.Join(cfg.DataDir, "admin-pub.pem")
		if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pb}), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg.Admin = server.AdminConfig{Mode: server.AdminJWT, PublicKeys: []string{pubPath}, ACLs: c.acls, Issuer: c.issuer, Audience: c.aud}
		e.adminKey = priv
		e.adminToken = e.mintAdmin("admin", time.Hour)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(ctx, cfg, server.Deps{
		Store:                 st,
		Attestation:           as,
		RVPS:                  rvLookup{rv},
		CompileResourcePolicy: compileResourcePolicy,
		Log:                   quietLog,
		Now:                   clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	e.srv, e.url = srv, ts.URL
	return e
}

// mintAdmin signs an admin token with the env's trusted admin key.
func (e *env) mintAdmin(role string, ttl time.Duration) string {
	e.t.Helper()
	tok, err := admintoken.Mint(e.adminKey, role, "", "", ttl, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) admin() *client.Admin {
	return client.NewAdmin(e.url, &http.Client{Timeout: 30 * time.Second}, e.adminToken)
}

// setResource stores a resource through the admin API.
func (e *env) setResource(path string, data []byte) {
	e.t.Helper()
	if err := e.admin().SetResource(context.Background(), path, data); err != nil {
		e.t.Fatalf("set resource %s: %v", path, err)
	}
}

// setPolicy installs a built-in resource policy through the admin API.
func (e *env) setPolicy(name string) {
	e.t.Helper()
	rego, err := policy.Default(name)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.admin().SetResourcePolicy(context.Background(), []byte(rego)); err != nil {
		e.t.Fatalf("set resource policy %s: %v", name, err)
	}
}

// setRV registers a sample-format reference value (the value itself,
// not wrapped in a list).
func (e *env) setRV(name string, value any) {
	e.t.Helper()
	if err := e.admin().SetSampleReferenceValue(context.Background(), name, value, true); err != nil {
		e.t.Fatalf("set reference value %s: %v", name, err)
	}
}

// registerSampleRVs registers the reference values that make the sample
// TEE's appraisal affirming (as Trustee's integration tests).
func (e *env) registerSampleRVs() {
	for name, v := range sampleRVs() {
		e.setRV(name, v)
	}
}

// sampleRVs are registerSampleRVs' values, as registered.
func sampleRVs() map[string]any {
	return map[string]any{"svn": []any{"1"}, "launch_digest": []any{"abcde"}, "major_version": 1, "minimum_minor_version": 1}
}

// snpRVs are registerSNPRVs' values, as registered.
func snpRVs(m [48]byte, tcb sim.TCB) map[string]any {
	return map[string]any{
		"snp_launch_measurement": []any{hex.EncodeToString(m[:])},
		"snp_bootloader":         int(tcb.Bootloader),
		"snp_tee_svn":            int(tcb.TEE),
		"snp_snp_svn":            int(tcb.SNP),
		"snp_microcode":          int(tcb.Microcode),
	}
}

// setRVsExpiring registers entries (name -> value, as stored) in one
// sample-format message with the Coffer "expiration" extension.
func (e *env) setRVsExpiring(entries map[string]any, exp time.Time) {
	e.t.Helper()
	payload, err := json.Marshal(entries)
	if err != nil {
		e.t.Fatal(err)
	}
	msg, _ := json.Marshal(map[string]string{"version": "0.1.0", "type": "sample",
		"payload": base64.StdEncoding.EncodeToString(payload), "expiration": exp.UTC().Format(time.RFC3339)})
	r := send(e.t, &http.Client{Timeout: 30 * time.Second}, http.MethodPost, e.url, "/kbs/v0/reference-value", msg, e.adminHeader())
	if r.status != http.StatusOK {
		e.t.Fatalf("register expiring reference values: %d %s", r.status, r.body)
	}
}

// getRV calls GET /kbs/v0/reference-value/<id> with the admin token.
func (e *env) getRV(id string) reply {
	e.t.Helper()
	return send(e.t, &http.Client{Timeout: 30 * time.Second}, http.MethodGet, e.url, "/kbs/v0/reference-value/"+id, nil, e.adminHeader())
}

// adminHeader carries the admin token (none in dev mode).
func (e *env) adminHeader() http.Header {
	if e.adminToken == "" {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + e.adminToken}}
}

// registerSNPRVs registers an accepted measurement and TCB minimums.
func (e *env) registerSNPRVs(m [48]byte, tcb sim.TCB) {
	for name, v := range snpRVs(m, tcb) {
		e.setRV(name, v)
	}
}

// reply is one HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// send issues a request whose request-URI is rawPath exactly as given (no
// cleaning, no escaping).
func send(t testing.TB, hc *http.Client, method, base, rawPath string, body []byte, hdr http.Header) reply {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Opaque = rawPath
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, base, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.URL = u
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawPath, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, rawPath, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantError asserts an ErrorInformation answer with this status and kind,
// whose detail contains every detail substring, and that carries no
// resource (no JWE member, none of the secret bytes).
func wantError(t testing.TB, r reply, status int, kind protocol.ErrorKind, details ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type %q, want application/json", ct)
	}
	info, err := protocol.ParseErrorInformation(r.body)
	if err != nil {
		t.Fatalf("error body is not ErrorInformation: %v: %s", err, r.body)
	}
	t.Logf("%d %s: %s", r.status, info.Kind(), info.Detail)
	if info.Kind() != kind {
		t.Fatalf("error kind %q (type %q), want %q; detail %q", info.Kind(), info.Type, kind, info.Detail)
	}
	for _, d := range details {
		if !strings.Contains(info.Detail, d) {
			t.Errorf("error detail %q does not contain %q", info.Detail, d)
		}
	}
	noSecret(t, r.body)
}

// secretPrefix marks every resource the tests store: an answer containing
// it (or any JWE member) released a secret.
const secretPrefix = "TOP-SECRET-"

func secret(name string) []byte { return []byte(secretPrefix + name) }

func noSecret(t testing.TB, body []byte) {
	t.Helper()
	for _, s := range []string{secretPrefix, base64.StdEncoding.EncodeToString([]byte(secretPrefix))[:12], `"ciphertext"`, `"encrypted_key"`} {
		if bytes.Contains(body, []byte(s)) {
			t.Fatalf("answer carries %q (a released secret): %s", s, body)
		}
	}
}

// guest is a hand-driven RCAR client: every step is explicit so tests can
// tamper with any of them.
type guest struct {
	t    testing.TB
	base string
	hc   *http.Client // with a cookie jar
	att  tee.Attester
	priv crypto.PrivateKey
	pub  protocol.TeePubKey
}

func newJarClient(t testing.TB) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 60 * time.Second}
}

func newGuest(t testing.TB, base string, att tee.Attester, alg, crv string) *guest {
	t.Helper()
	if alg == "" {
		alg, crv = protocol.AlgECDHESA256KW, protocol.CurveP256
	}
	priv, pub, err := protocol.NewTeeKey(alg, crv)
	if err != nil {
		t.Fatal(err)
	}
	return &guest{t: t, base: base, hc: newJarClient(t), att: att, priv: priv, pub: pub}
}

// authRaw posts a raw /auth body.
func (g *guest) authRaw(body []byte) reply {
	return send(g.t, g.hc, http.MethodPost, g.base, "/kbs/v0/auth", body, nil)
}

// auth opens a session and returns its nonce.
func (g *guest) auth() string {
	g.t.Helper()
	body, _ := json.Marshal(protocol.NewRequest(g.att.Tee()))
	r := g.authRaw(body)
	if r.status != http.StatusOK {
		g.t.Fatalf("auth: %d %s", r.status, r.body)
	}
	var ch protocol.Challenge
	if err := json.Unmarshal(r.body, &ch); err != nil {
		g.t.Fatalf("auth: bad challenge %s: %v", r.body, err)
	}
	if string(ch.ExtraParams) != `""` {
		g.t.Errorf("challenge extra-params %s, want \"\"", ch.ExtraParams)
	}
	if n, err := base64.StdEncoding.DecodeString(ch.Nonce); err != nil || len(n) != protocol.NonceSize {
		g.t.Errorf("nonce %q is not 32 bytes of std base64", ch.Nonce)
	}
	return ch.Nonce
}

// evidence produces evidence bound to (nonce, pub).
func (g *guest) evidence(nonce string, pub protocol.TeePubKey) json.RawMessage {
	g.t.Helper()
	additional := ""
	digest, err := protocol.RuntimeDataDigest(protocol.HashSHA384, nonce, pub, &additional)
	if err != nil {
		g.t.Fatal(err)
	}
	ev, err := g.att.Evidence(context.Background(), digest)
	if err != nil {
		g.t.Fatal(err)
	}
	return ev
}

// attestBody builds an /attest body.
func attestBody(t testing.TB, nonce string, pub protocol.TeePubKey, ev json.RawMessage) []byte {
	t.Helper()
	b, err := json.Marshal(protocol.Attestation{
		RuntimeData: protocol.RuntimeData{Nonce: nonce, TeePubKey: pub},
		TeeEvidence: protocol.TeeEvidence{PrimaryEvidence: ev, AdditionalEvidence: ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (g *guest) attestRaw(body []byte) reply {
	return send(g.t, g.hc, http.MethodPost, g.base, "/kbs/v0/attest", body, nil)
}

// attest completes the handshake of the open session and returns the token.
func (g *guest) attest(nonce string) string {
	g.t.Helper()
	r := g.attestRaw(attestBody(g.t, nonce, g.pub, g.evidence(nonce, g.pub)))
	if r.status != http.StatusOK {
		g.t.Fatalf("attest: %d %s", r.status, r.body)
	}
	var ar protocol.AttestResponse
	if err := json.Unmarshal(r.body, &ar); err != nil {
		g.t.Fatalf("attest: bad answer %s: %v", r.body, err)
	}
	return ar.Token
}

// handshake runs auth + attest and returns the token.
func (g *guest) handshake() string {
	g.t.Helper()
	return g.attest(g.auth())
}

// get fetches a resource; bearer "" means cookie only. The request is sent
// with the guest's cookie jar either way.
func (g *guest) get(rawPath, bearer string) reply {
	var hdr http.Header
	if bearer != "" {
		hdr = http.Header{"Authorization": {"Bearer " + bearer}}
	}
	return send(g.t, g.hc, http.MethodGet, g.base, "/kbs/v0/resource/"+rawPath, nil, hdr)
}

// getNoCookie fetches a resource with a fresh client (no cookies).
func (g *guest) getNoCookie(rawPath, bearer string) reply {
	var hdr http.Header
	if bearer != "" {
		hdr = http.Header{"Authorization": {"Bearer " + bearer}}
	}
	return send(g.t, &http.Client{Timeout: 60 * time.Second}, http.MethodGet, g.base, "/kbs/v0/resource/"+rawPath, nil, hdr)
}

// open decrypts a 200 resource answer with the guest's key.
func (g *guest) open(r reply) []byte {
	g.t.Helper()
	if r.status != http.StatusOK {
		g.t.Fatalf("get resource: %d %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		g.t.Errorf("resource Content-Type %q, want application/json", ct)
	}
	var jwe protocol.Response
	if err := json.Unmarshal(r.body, &jwe); err != nil {
		g.t.Fatalf("resource answer is not a JWE: %v: %s", err, r.body)
	}
	plain, err := protocol.DecryptResponse(g.priv, &jwe)
	if err != nil {
		g.t.Fatalf("decrypt resource: %v", err)
	}
	return plain
}

// tokenClaims decodes a JWT payload without verifying it.
func tokenClaims(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a compact JWS", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// earStatus returns submods.cpu0["ear.status"] of a token.
func earStatus(t testing.TB, tok string) string {
	t.Helper()
	s, _ := cpu0Claims(t, tok)["ear.status"].(string)
	return s
}

// cpu0Claims is the token's submods.cpu0 (nil if it has none).
func cpu0Claims(t testing.TB, tok string) map[string]any {
	t.Helper()
	sub, _ := tokenClaims(t, tok)["submods"].(map[string]any)
	cpu, _ := sub["cpu0"].(map[string]any)
	return cpu
}

// keyTypes are the TEE key types guests may use.
var keyTypes = []struct{ name, alg, crv string }{
	{"EC-P256", protocol.AlgECDHESA256KW, protocol.CurveP256},
	{"EC-P521", protocol.AlgECDHESA256KW, protocol.CurveP521},
	{"RSA-OAEP-256", protocol.AlgRSAOAEP256, ""},
	{"RSA1_5", protocol.AlgRSA15, ""},
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

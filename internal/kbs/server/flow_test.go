package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/client"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
)

// attesters are the two TEEs of the full flows.
func attesters(t *testing.T) []struct {
	name string
	new  func() tee.Attester
} {
	return []struct {
		name string
		new  func() tee.Attester
	}{
		{"sample", func() tee.Attester { return tee.NewSample() }},
		{"sim-snp", func() tee.Attester { return simGuest(t, sim.LaunchConfig{Measurement: measurement(0x11)}) }},
	}
}

// The guest library fetches and decrypts a resource with every TEE key
// type, for sample and simulated SNP, against a dev KBS. It sends its
// session cookie and the token as Bearer, and the server takes the cookie:
// the Bearer-only path is TestHandshakeBearerAndCookie's (and, against the
// binary, test/ TestKbsBearerOnly's); token caching and re-attestation on
// 401 are tested in internal/kbs/client.
func TestClientEveryKeyType(t *testing.T) {
	e := newEnv(t, envConfig{dev: true})
	want := secret("client-every-key")
	e.setResource("repo/key/one", want)
	for _, a := range attesters(t) {
		for _, kt := range keyTypes {
			t.Run(a.name+"/"+kt.name, func(t *testing.T) {
				c, err := client.New(e.url, a.new(), client.Options{KeyAlgorithm: kt.alg, KeyCurve: kt.crv, Log: quietLog})
				if err != nil {
					t.Fatal(err)
				}
				got, err := c.GetResource(context.Background(), "kbs:///repo/key/one")
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("got %q, want %q", got, want)
				}
			})
		}
	}
}

// Hand-driven handshakes: the Bearer path without cookies and the cookie
// path without a Bearer header, for every key type and both TEEs; the JWE
// is opened with protocol.DecryptResponse.
func TestHandshakeBearerAndCookie(t *testing.T) {
	e := newEnv(t, envConfig{dev: true})
	want := secret("handshake")
	e.setResource("repo/key/two", want)
	for _, a := range attesters(t) {
		for _, kt := range keyTypes {
			t.Run(a.name+"/"+kt.name, func(t *testing.T) {
				g := newGuest(t, e.url, a.new(), kt.alg, kt.crv)
				tok := g.handshake()
				if got := g.open(g.getNoCookie("repo/key/two", tok)); !bytes.Equal(got, want) {
					t.Fatalf("bearer: got %q, want %q", got, want)
				}
				if got := g.open(g.get("repo/key/two", "")); !bytes.Equal(got, want) {
					t.Fatalf("cookie: got %q, want %q", got, want)
				}
			})
		}
	}
}

// The cookie path, step by step: the session cookie is set by /auth, is
// not enough before /attest, and after /attest alone authorizes the
// release; a second /attest on an attested session returns the same token
// (Trustee behaviour) without re-verifying.
func TestCookiePath(t *testing.T) {
	e := newEnv(t, envConfig{dev: true})
	want := secret("cookie")
	e.setResource("r/t/cookie", want)
	for _, a := range attesters(t) {
		t.Run(a.name, func(t *testing.T) {
			g := newGuest(t, e.url, a.new(), "", "")
			nonce := g.auth()
			u := mustURL(t, e.url+"/kbs/v0/")
			var cookie *http.Cookie
			for _, c := range g.hc.Jar.Cookies(u) {
				if c.Name == "kbs-session-id" {
					cookie = c
				}
			}
			if cookie == nil || len(cookie.Value) != 32 {
				t.Fatalf("no kbs-session-id cookie of 32 hex digits after /auth: %v", g.hc.Jar.Cookies(u))
			}
			// Authed but not attested: the cookie carries no token.
			wantError(t, g.get("r/t/cookie", ""), http.StatusUnauthorized, protocol.KindTokenNotFound)

			tok := g.attest(nonce)
			if got := g.open(g.get("r/t/cookie", "")); !bytes.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
			// Attest again on the attested session: same token, even with
			// an empty evidence body.
			r := g.attestRaw([]byte(`{}`))
			if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(tok)) {
				t.Fatalf("second /attest on an attested session: %d %s", r.status, r.body)
			}
			// Only the cookie, sent by hand, with a client without a jar.
			r = send(t, &http.Client{}, http.MethodGet, e.url, "/kbs/v0/resource/r/t/cookie", nil,
				http.Header{"Cookie": {"kbs-session-id=" + cookie.Value}})
			if got := g.open(r); !bytes.Equal(got, want) {
				t.Fatalf("hand-sent cookie: got %q, want %q", got, want)
			}
			// An unknown cookie with no Bearer: no token.
			r = send(t, &http.Client{}, http.MethodGet, e.url, "/kbs/v0/resource/r/t/cookie", nil,
				http.Header{"Cookie": {"kbs-session-id=0123456789abcdef0123456789abcdef"}})
			wantError(t, r, http.StatusUnauthorized, protocol.KindTokenNotFound)
		})
	}
}

// A missing resource is 404 (guests report "not found" and do not retry),
// with no secret.
func TestResourceNotFound(t *testing.T) {
	e := newEnv(t, envConfig{dev: true})
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	tok := g.handshake()
	wantError(t, g.getNoCookie("no/such/thing", tok), http.StatusNotFound, protocol.KindPluginInternalError, "not found")
	if _, err := e.admin().ListResources(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Dev mode releases to the sample TEE and to the simulated chip whatever
// the appraisal; the production default policy refuses both, even with an
// affirming appraisal; the affirming policy releases once the reference
// values make the appraisal affirming.
func TestDevVersusDefaultPolicy(t *testing.T) {
	want := secret("policy")
	t.Run("dev", func(t *testing.T) {
		e := newEnv(t, envConfig{dev: true})
		e.setResource("a/b/c", want)
		for _, a := range attesters(t) {
			g := newGuest(t, e.url, a.new(), "", "")
			tok := g.handshake()
			if s := earStatus(t, tok); s != "contraindicated" {
				t.Errorf("%s without reference values: ear.status %q, want contraindicated", a.name, s)
			}
			if got := g.open(g.getNoCookie("a/b/c", tok)); !bytes.Equal(got, want) {
				t.Fatalf("%s: got %q", a.name, got)
			}
		}
	})
	t.Run("default", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		e.setResource("a/b/c", want)
		sample := newGuest(t, e.url, tee.NewSample(), "", "")
		tok := sample.handshake()
		wantError(t, sample.getNoCookie("a/b/c", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "sample TEE")
		wantError(t, sample.get("a/b/c", ""), http.StatusUnauthorized, protocol.KindPolicyDeny, "sample TEE")

		snp := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: measurement(0x22)}), "", "")
		tok = snp.handshake()
		wantError(t, snp.getNoCookie("a/b/c", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "simulated")

		// Reference values registered: the sample appraisal is affirming,
		// the default policy still refuses the sample TEE.
		e.registerSampleRVs()
		sample = newGuest(t, e.url, tee.NewSample(), "", "")
		tok = sample.handshake()
		if s := earStatus(t, tok); s != "affirming" {
			t.Fatalf("sample with reference values: ear.status %q, want affirming", s)
		}
		wantError(t, sample.getNoCookie("a/b/c", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "sample TEE")

		// Same for the simulated chip with its reference values.
		e.registerSNPRVs(measurement(0x22), simChip(t).TCB())
		snp = newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: measurement(0x22)}), "", "")
		snpTok := snp.handshake()
		if s := earStatus(t, snpTok); s != "affirming" {
			t.Fatalf("sim-snp with reference values: ear.status %q, want affirming", s)
		}
		wantError(t, snp.getNoCookie("a/b/c", snpTok), http.StatusUnauthorized, protocol.KindPolicyDeny, "simulated")

		// The affirming policy releases to affirming appraisals; the
		// tokens issued before the policy change are evaluated anew.
		e.setPolicy("affirming")
		if got := sample.open(sample.getNoCookie("a/b/c", tok)); !bytes.Equal(got, want) {
			t.Fatalf("affirming policy, sample: got %q", got)
		}
		if got := snp.open(snp.getNoCookie("a/b/c", snpTok)); !bytes.Equal(got, want) {
			t.Fatalf("affirming policy, sim-snp: got %q", got)
		}
		// ... and refuses a token whose appraisal was not affirming.
		noRV := newEnv(t, envConfig{})
		noRV.setResource("a/b/c", want)
		noRV.setPolicy("affirming")
		g := newGuest(t, noRV.url, tee.NewSample(), "", "")
		wantError(t, g.getNoCookie("a/b/c", g.handshake()), http.StatusUnauthorized, protocol.KindPolicyDeny, "contraindicated")

		// deny_all refuses everything.
		e.setPolicy("deny_all")
		wantError(t, sample.getNoCookie("a/b/c", tok), http.StatusUnauthorized, protocol.KindPolicyDeny)
	})
}

// SNP appraisal against reference values with the affirming policy: the
// registered measurement and TCB release; another measurement appraises
// "warning" and a TCB minimum above the chip's "contraindicated", both
// denied.
func TestSNPReferenceValues(t *testing.T) {
	e := newEnv(t, envConfig{})
	want := secret("snp-rv")
	e.setResource("snp/rv/key", want)
	e.setPolicy("affirming")
	good := measurement(0x33)
	tcb := simChip(t).TCB()
	e.registerSNPRVs(good, tcb)

	g := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: good}), "", "")
	tok := g.handshake()
	if s := earStatus(t, tok); s != "affirming" {
		t.Fatalf("registered measurement: ear.status %q, want affirming", s)
	}
	if got := g.open(g.getNoCookie("snp/rv/key", tok)); !bytes.Equal(got, want) {
		t.Fatalf("got %q", got)
	}

	bad := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: measurement(0x44)}), "", "")
	tok = bad.handshake()
	if s := earStatus(t, tok); s != "warning" {
		t.Errorf("unregistered measurement: ear.status %q, want warning", s)
	}
	wantError(t, bad.getNoCookie("snp/rv/key", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "cpu0", "warning")
	wantError(t, bad.get("snp/rv/key", ""), http.StatusUnauthorized, protocol.KindPolicyDeny)

	// TCB minimum above what the chip reports: hardware not recognized.
	e.setRV("snp_microcode", int(tcb.Microcode)+1)
	g = newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: good}), "", "")
	tok = g.handshake()
	if s := earStatus(t, tok); s != "contraindicated" {
		t.Errorf("TCB below minimum: ear.status %q, want contraindicated", s)
	}
	wantError(t, g.getNoCookie("snp/rv/key", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "contraindicated")
}

// A guest launched with the DEBUG policy bit is refused at /attest unless
// the KBS allows debug (development); even then the appraisal is not
// affirming and the affirming policy refuses it.
func TestSNPDebugPolicy(t *testing.T) {
	want := secret("debug")
	m := measurement(0x55)
	t.Run("refused", func(t *testing.T) {
		e := newEnv(t, envConfig{dev: true})
		e.setResource("d/e/f", want)
		g := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: m, Debug: true}), "", "")
		nonce := g.auth()
		r := g.attestRaw(attestBody(t, nonce, g.pub, g.evidence(nonce, g.pub)))
		wantError(t, r, http.StatusUnauthorized, protocol.KindAttestationError, "debug")
		wantError(t, g.get("d/e/f", ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
	})
	t.Run("allowed", func(t *testing.T) {
		e := newEnv(t, envConfig{allowDebug: true})
		e.setResource("d/e/f", want)
		e.setPolicy("affirming")
		e.registerSNPRVs(m, simChip(t).TCB())
		g := newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: m, Debug: true}), "", "")
		tok := g.handshake()
		if s := earStatus(t, tok); s != "contraindicated" {
			t.Errorf("debug guest: ear.status %q, want contraindicated", s)
		}
		wantError(t, g.getNoCookie("d/e/f", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "contraindicated")
		// The same guest without debug is released.
		g = newGuest(t, e.url, simGuest(t, sim.LaunchConfig{Measurement: m}), "", "")
		if got := g.open(g.getNoCookie("d/e/f", g.handshake())); !bytes.Equal(got, want) {
			t.Fatalf("got %q", got)
		}
	})
}

// Resource bytes round-trip exactly: empty, every byte value, 1 MiB, for
// an EC and an RSA key; overwriting replaces; deleting makes it 404.
func TestResourceBytesRoundTrip(t *testing.T) {
	e := newEnv(t, envConfig{dev: true})
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	cases := map[string][]byte{"rt/bytes/empty": {}, "rt/bytes/all": all, "rt/bytes/big": big}
	for p, v := range cases {
		e.setResource(p, v)
	}
	for _, kt := range []int{0, 2} {
		g := newGuest(t, e.url, tee.NewSample(), keyTypes[kt].alg, keyTypes[kt].crv)
		tok := g.handshake()
		for p, v := range cases {
			if got := g.open(g.getNoCookie(p, tok)); !bytes.Equal(got, v) {
				t.Errorf("%s %s: got %d bytes, want %d", keyTypes[kt].name, p, len(got), len(v))
			}
		}
	}
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	tok := g.handshake()
	e.setResource("rt/bytes/all", []byte("replaced"))
	if got := g.open(g.getNoCookie("rt/bytes/all", tok)); string(got) != "replaced" {
		t.Errorf("after overwrite: %q", got)
	}
	if err := e.admin().DeleteResource(context.Background(), "rt/bytes/all"); err != nil {
		t.Fatal(err)
	}
	wantError(t, g.getNoCookie("rt/bytes/all", tok), http.StatusNotFound, protocol.KindPluginInternalError)
}

const testInitData = `version = "0.1.0"
algorithm = "sha384"

[data]
"workload" = "db-primary"
`

// Init data is bound to HOST_DATA for SNP: the matching digest attests and
// the token carries the init-data claims; other init data, or init data
// the host did not launch with, is refused; only TOML is accepted.
func TestInitData(t *testing.T) {
	e := newEnv(t, envConfig{dev: true})
	want := secret("init-data")
	e.setResource("i/n/it", want)
	digest, _, err := protocol.InitDataDigest(&protocol.InitData{Format: "toml", Body: testInitData})
	if err != nil {
		t.Fatal(err)
	}
	var lc sim.LaunchConfig
	copy(lc.HostData[:], digest)

	attestWith := func(g *guest, id *protocol.InitData) reply {
		nonce := g.auth()
		body, err := json.Marshal(protocol.Attestation{
			InitData:    id,
			RuntimeData: protocol.RuntimeData{Nonce: nonce, TeePubKey: g.pub},
			TeeEvidence: protocol.TeeEvidence{PrimaryEvidence: g.evidence(nonce, g.pub)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return g.attestRaw(body)
	}

	// The guest library with init data, on a guest launched with it.
	c, err := client.New(e.url, simGuest(t, lc), client.Options{InitData: &protocol.InitData{Format: "toml", Body: testInitData}, Log: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Attest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ae := cpu0Claims(t, tok)["ear.veraison.annotated-evidence"].(map[string]any)
	idc, _ := ae["init_data_claims"].(map[string]any)
	if idc["workload"] != "db-primary" {
		t.Errorf("init_data_claims %v, want workload=db-primary", ae["init_data_claims"])
	}
	if got, err := c.GetResource(context.Background(), "i/n/it"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("get with init data: %q %v", got, err)
	}

	other := &protocol.InitData{Format: "toml", Body: strings.Replace(testInitData, "db-primary", "db-replica", 1)}
	g := newGuest(t, e.url, simGuest(t, lc), "", "")
	wantError(t, attestWith(g, other), http.StatusUnauthorized, protocol.KindAttestationError, "host-data-binding")
	wantError(t, g.get("i/n/it", ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
	// Launched without init data, claiming some.
	g = newGuest(t, e.url, simGuest(t, sim.LaunchConfig{}), "", "")
	wantError(t, attestWith(g, &protocol.InitData{Format: "toml", Body: testInitData}), http.StatusUnauthorized, protocol.KindAttestationError, "host-data-binding")
	// Not TOML, or bad TOML.
	for _, id := range []*protocol.InitData{
		{Format: "json", Body: `{"version":"0.1.0"}`},
		{Format: "toml", Body: "version = "},
		{Format: "toml", Body: "version = \"0.1.0\"\nalgorithm = \"md5\"\n"},
	} {
		g = newGuest(t, e.url, simGuest(t, lc), "", "")
		wantError(t, attestWith(g, id), http.StatusUnauthorized, protocol.KindAttestationError, "init-data")
	}
}

// Wire details Trustee guests and peers depend on: the JWE is flattened
// JSON with a compact protected header {"alg","enc":"A256GCM",…}, no aad
// member, 12-byte IV and 16-byte tag; the token header carries a jwk with
// alg ES256; the session cookie carries Expires.
func TestWireFormat(t *testing.T) {
	e := newEnv(t, envConfig{dev: true})
	e.setResource("w/i/re", secret("wire"))
	for _, kt := range keyTypes {
		t.Run(kt.name, func(t *testing.T) {
			g := newGuest(t, e.url, tee.NewSample(), kt.alg, kt.crv)
			body, _ := json.Marshal(protocol.NewRequest("sample"))
			r := g.authRaw(body)
			sc := r.header.Get("Set-Cookie")
			if !strings.HasPrefix(sc, "kbs-session-id=") || !strings.Contains(sc, "Expires=") {
				t.Errorf("Set-Cookie %q", sc)
			}
			var ch protocol.Challenge
			_ = json.Unmarshal(r.body, &ch)
			tok := g.attest(ch.Nonce)
			hdrB, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
			var hdr struct {
				Alg string         `json:"alg"`
				JWK map[string]any `json:"jwk"`
			}
			if err := json.Unmarshal(hdrB, &hdr); err != nil || hdr.Alg != "ES256" || hdr.JWK["alg"] != "ES256" || hdr.JWK["kty"] != "EC" {
				t.Errorf("token header %s", hdrB)
			}
			res := g.getNoCookie("w/i/re", tok)
			var m map[string]string
			if err := json.Unmarshal(res.body, &m); err != nil {
				t.Fatalf("JWE %s: %v", res.body, err)
			}
			for _, k := range []string{"protected", "encrypted_key", "iv", "ciphertext", "tag"} {
				if _, ok := m[k]; !ok {
					t.Errorf("JWE has no %q member", k)
				}
			}
			if _, ok := m["aad"]; ok || len(m) != 5 {
				t.Errorf("JWE members %v, want exactly protected, encrypted_key, iv, ciphertext, tag", m)
			}
			ph, err := base64.RawURLEncoding.DecodeString(m["protected"])
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(ph), `{"alg":"`+kt.alg+`","enc":"A256GCM"`) {
				t.Errorf("protected header %s", ph)
			}
			if iv, _ := base64.RawURLEncoding.DecodeString(m["iv"]); len(iv) != 12 {
				t.Errorf("iv is %d bytes", len(iv))
			}
			if tag, _ := base64.RawURLEncoding.DecodeString(m["tag"]); len(tag) != 16 {
				t.Errorf("tag is %d bytes", len(tag))
			}
			if got := g.open(res); !bytes.Equal(got, secret("wire")) {
				t.Errorf("got %q", got)
			}
		})
	}
}

// A custom resource policy sees data.plugin, data["resource-path"],
// data.query and the token claims as input.
func TestCustomResourcePolicy(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.setResource("public/keys/a", secret("public"))
	e.setResource("private/keys/a", secret("private"))
	rego := `package policy
import rego.v1
default allow := false
allow if {
	data.plugin == "resource"
	data["resource-path"][0] == "public"
	data.query.purpose == "boot"
	input.submods.cpu0["ear.veraison.annotated-evidence"].sample.svn == "1"
}
`
	if err := e.admin().SetResourcePolicy(context.Background(), []byte(rego)); err != nil {
		t.Fatal(err)
	}
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	tok := g.handshake()
	if got := g.open(g.getNoCookie("public/keys/a?purpose=boot", tok)); !bytes.Equal(got, secret("public")) {
		t.Fatalf("got %q", got)
	}
	wantError(t, g.getNoCookie("public/keys/a", tok), http.StatusUnauthorized, protocol.KindPolicyDeny)
	wantError(t, g.getNoCookie("public/keys/a?purpose=debug", tok), http.StatusUnauthorized, protocol.KindPolicyDeny)
	wantError(t, g.getNoCookie("private/keys/a?purpose=boot", tok), http.StatusUnauthorized, protocol.KindPolicyDeny)
	got, err := e.admin().GetResourcePolicy(context.Background())
	if err != nil || string(got) != rego {
		t.Fatalf("get-resource-policy: %q %v", got, err)
	}
}

// Reference value expiry is enforced end to end, for sample and simulated
// SNP, with the affirming resource policy: values registered with an
// "expiration" make two sessions affirming and released (the second one's
// appraisal can come from the appraisal cache); once the shared clock is
// past the expiration a new session appraises as not affirming and is
// denied, neither the RVPS query cache nor the appraisal cache serving
// the stale values or verdict, and GET reference-value/<id> is 404.
// Registering the values again restores the release.
func TestReferenceValueExpiry(t *testing.T) {
	m := measurement(0x66)
	for _, tc := range []struct {
		name string
		att  func() tee.Attester
		rvs  map[string]any
	}{
		{"sample", func() tee.Attester { return tee.NewSample() }, sampleRVs()},
		{"sim-snp", func() tee.Attester { return simGuest(t, sim.LaunchConfig{Measurement: m}) }, snpRVs(m, simChip(t).TCB())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{})
			want := secret("rv-expiry")
			e.setResource("rv/exp/key", want)
			e.setPolicy("affirming")
			e.setRVsExpiring(tc.rvs, e.clock.Now().Add(10*time.Minute))
			for id, v := range tc.rvs {
				r := e.getRV(id)
				wantJSON, _ := json.Marshal(v)
				if r.status != http.StatusOK || !bytes.Equal(bytes.TrimSpace(r.body), wantJSON) {
					t.Fatalf("get reference value %s before expiry: %d %s, want 200 %s", id, r.status, r.body, wantJSON)
				}
			}

			released := func(step string) {
				t.Helper()
				g := newGuest(t, e.url, tc.att(), "", "")
				tok := g.handshake()
				if s := earStatus(t, tok); s != "affirming" {
					t.Fatalf("%s: ear.status %q, want affirming", step, s)
				}
				if got := g.open(g.getNoCookie("rv/exp/key", tok)); !bytes.Equal(got, want) {
					t.Fatalf("%s: got %q", step, got)
				}
				if got := g.open(g.get("rv/exp/key", "")); !bytes.Equal(got, want) {
					t.Fatalf("%s, cookie: got %q", step, got)
				}
			}
			released("before expiry")
			released("before expiry, again")

			e.clock.Advance(10*time.Minute + time.Second)
			g := newGuest(t, e.url, tc.att(), "", "")
			tok := g.handshake()
			s := earStatus(t, tok)
			if s == "affirming" || s == "" {
				t.Fatalf("after expiry: ear.status %q, want a status other than affirming", s)
			}
			wantError(t, g.getNoCookie("rv/exp/key", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "cpu0", s)
			wantError(t, g.get("rv/exp/key", ""), http.StatusUnauthorized, protocol.KindPolicyDeny, "cpu0", s)
			for id := range tc.rvs {
				wantError(t, e.getRV(id), http.StatusNotFound, protocol.KindRvpsError, id, "expired")
			}

			// Registered again with a later expiration: released again
			// (the cache does not keep the negative verdict either).
			e.setRVsExpiring(tc.rvs, e.clock.Now().Add(10*time.Minute))
			released("registered again")
		})
	}
}

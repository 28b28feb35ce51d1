package server_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"github.com/coffer-project/coffer/internal/kbs/admintoken"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/kbs/server"
	"github.com/coffer-project/coffer/internal/policy"
	"github.com/coffer-project/coffer/internal/tee"
)

// adminCall is one admin endpoint with a body that succeeds for a
// permitted caller.
type adminCall struct {
	name, method, path string
	body               []byte
	contentType        string
}

func adminCalls(t *testing.T) []adminCall {
	allowAll, _ := policy.Default(policy.ResourceAllowAll)
	cpu, _ := policy.Default(policy.DefaultCPU)
	rvPayload := base64.StdEncoding.EncodeToString([]byte(`{"svn":["1"]}`))
	rv, _ := json.Marshal(map[string]string{"version": "0.1.0", "type": "sample", "payload": rvPayload})
	rp, _ := json.Marshal(map[string]string{"policy": base64.RawURLEncoding.EncodeToString([]byte(allowAll))})
	ap, _ := json.Marshal(map[string]string{"type": "rego", "policy_id": "default_cpu", "policy": base64.RawURLEncoding.EncodeToString([]byte(cpu))})
	return []adminCall{
		{"set-resource", http.MethodPost, "/kbs/v0/resource/adm/res/one", []byte("admin-data"), "application/octet-stream"},
		{"put-resource", http.MethodPut, "/kbs/v0/resource/adm/res/two", []byte("admin-data"), "application/octet-stream"},
		{"list-resources", http.MethodGet, "/kbs/v0/resource", nil, ""},
		{"delete-resource", http.MethodDelete, "/kbs/v0/resource/adm/res/one", nil, ""},
		{"set-resource-policy", http.MethodPost, "/kbs/v0/resource-policy", rp, "application/json"},
		{"get-resource-policy", http.MethodGet, "/kbs/v0/resource-policy", nil, ""},
		{"set-attestation-policy", http.MethodPost, "/kbs/v0/attestation-policy", ap, "application/json"},
		{"set-reference-value", http.MethodPost, "/kbs/v0/reference-value", rv, "application/json"},
		{"get-reference-value", http.MethodGet, "/kbs/v0/reference-value/svn", nil, ""},
	}
}

func (c adminCall) send(t *testing.T, e *env, token string) reply {
	t.Helper()
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	if c.contentType != "" {
		hdr.Set("Content-Type", c.contentType)
	}
	return send(t, &http.Client{}, c.method, e.url, c.path, c.body, hdr)
}

// Admin calls on a non-dev KBS (admin mode jwt, Ed25519 key): refused
// without a token, with a token from an untrusted key, expired, without a
// role, with a role whose ACL lacks the endpoint, with an attestation
// token; allowed with a valid admin token. Refusals change nothing.
func TestAdminAuthorization(t *testing.T) {
	e := newEnv(t, envConfig{acls: []server.AdminACL{
		{Role: "admin", AllowedEndpoints: "^/kbs/v0/.+$"},
		{Role: "rv-reader", AllowedEndpoints: "^/kbs/v0/reference-value/.+$"},
	}})
	e.setResource("adm/res/one", secret("admin"))
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	untrusted, err := admintoken.Mint(otherKey, "admin", "", "", time.Hour, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	untrustedEC, err := admintoken.Mint(ecKey, "admin", "", "", time.Hour, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	expired := e.mintAdmin("admin", time.Minute)
	e.clock.Advance(3 * time.Minute) // past exp + the 1 min leeway
	noRole := e.mintAdmin("", time.Hour)
	reader := e.mintAdmin("rv-reader", time.Hour)
	unknownRole := e.mintAdmin("root", time.Hour)
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	attestToken := g.handshake()
	parts := strings.Split(e.adminToken, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"role":"admin","exp":9999999999,"iat":1}`)) + "." + parts[2]

	refusals := map[string]struct {
		token  string
		detail string
	}{
		"no token":           {"", "needs Authorization"},
		"untrusted key":      {untrusted, "not from a trusted key"},
		"untrusted EC key":   {untrustedEC, "not from a trusted key"},
		"expired":            {expired, "expired"},
		"no role":            {noRole, "no role"},
		"unknown role":       {unknownRole, `role "root"`},
		"attestation token":  {attestToken, ""},
		"tampered payload":   {tampered, ""},
		"garbage":            {"garbage", "malformed"},
		"wrong role for ACL": {reader, `role "rv-reader" may not`},
	}
	for _, c := range adminCalls(t) {
		for name, ref := range refusals {
			if name == "wrong role for ACL" && c.name == "get-reference-value" {
				continue // the reader's ACL allows it
			}
			t.Run(c.name+"/"+name, func(t *testing.T) {
				var details []string
				if ref.detail != "" {
					details = append(details, ref.detail)
				}
				wantError(t, c.send(t, e, ref.token), http.StatusUnauthorized, protocol.KindAdminAuthAccess, details...)
			})
		}
	}
	// Nothing changed: the resource is there, no other was written, the
	// default resource policy is still in force (sample refused).
	list := adminCall{"list", http.MethodGet, "/kbs/v0/resource", nil, ""}.send(t, e, e.adminToken)
	if list.status != http.StatusOK || string(bytes.TrimSpace(list.body)) != `["adm/res/one"]` {
		t.Fatalf("resources after refused admin calls: %d %s", list.status, list.body)
	}
	wantError(t, g.getNoCookie("adm/res/one", attestToken), http.StatusUnauthorized, protocol.KindPolicyDeny, "sample TEE")
	wantError(t, adminCall{"", http.MethodGet, "/kbs/v0/reference-value/svn", nil, ""}.send(t, e, e.adminToken),
		http.StatusNotFound, protocol.KindRvpsError)

	// The valid admin token can call every endpoint.
	for _, c := range adminCalls(t) {
		t.Run(c.name+"/valid", func(t *testing.T) {
			r := c.send(t, e, e.adminToken)
			if r.status != http.StatusOK {
				t.Fatalf("%s with a valid admin token: %d %s", c.name, r.status, r.body)
			}
			noSecret(t, r.body)
		})
	}
	// The reader role reads reference values.
	if r := (adminCall{"", http.MethodGet, "/kbs/v0/reference-value/svn", nil, ""}).send(t, e, reader); r.status != http.StatusOK || string(bytes.TrimSpace(r.body)) != `["1"]` {
		t.Fatalf("rv-reader get-reference-value: %d %s", r.status, r.body)
	}
	// An admin token is not an attestation token.
	wantError(t, g.getNoCookie("adm/res/two", e.adminToken), http.StatusUnauthorized, protocol.KindTokenVerifierError)
	// allow_all was installed by the valid call: the sample guest now gets
	// the resource (the policy change took effect).
	if got := g.open(g.getNoCookie("adm/res/two", attestToken)); string(got) != "admin-data" {
		t.Fatalf("got %q", got)
	}
}

// Bad admin input with a valid token: 400 or 404 with ErrorInformation.
func TestAdminBadInput(t *testing.T) {
	e := newEnv(t, envConfig{})
	call := func(method, path string, body string) reply {
		return adminCall{"", method, path, []byte(body), "application/json"}.send(t, e, e.adminToken)
	}
	wantError(t, call(http.MethodPost, "/kbs/v0/resource-policy", `{"policy":"!!!"}`), http.StatusBadRequest, protocol.KindParsePolicyError)
	wantError(t, call(http.MethodPost, "/kbs/v0/resource-policy", `{"policy":"`+base64.RawURLEncoding.EncodeToString([]byte("package policy\nallow if {"))+`"}`), http.StatusBadRequest, protocol.KindParsePolicyError)
	wantError(t, call(http.MethodPost, "/kbs/v0/resource-policy", `{`), http.StatusBadRequest, protocol.KindSerdeError)
	wantError(t, call(http.MethodPost, "/kbs/v0/attestation-policy", `{"type":"opa","policy":""}`), http.StatusBadRequest, protocol.KindParsePolicyError)
	wantError(t, call(http.MethodPost, "/kbs/v0/attestation-policy", `{"policy_id":"../x","policy":""}`), http.StatusBadRequest, protocol.KindParsePolicyError)
	wantError(t, call(http.MethodPost, "/kbs/v0/reference-value", `{"version":"9","type":"sample","payload":""}`), http.StatusBadRequest, protocol.KindRvpsError)
	wantError(t, call(http.MethodGet, "/kbs/v0/reference-value/nope", ``), http.StatusNotFound, protocol.KindRvpsError)
	wantError(t, call(http.MethodDelete, "/kbs/v0/resource/no/such/res", ``), http.StatusNotFound, protocol.KindPluginInternalError)
	// The broken resource policy was not installed: the default still runs.
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	e.setResource("a/b/c", secret("x"))
	wantError(t, g.getNoCookie("a/b/c", g.handshake()), http.StatusUnauthorized, protocol.KindPolicyDeny, "sample TEE")
}

// Issuer and audience, when configured, are enforced on admin tokens.
func TestAdminIssuerAudience(t *testing.T) {
	e := newEnv(t, envConfig{issuer: "ops", aud: "kbs-prod"})
	now := e.clock.Now()
	for _, c := range []struct {
		iss, aud string
		ok       bool
	}{{"", "", false}, {"ops", "", false}, {"", "kbs-prod", false}, {"ops", "kbs-test", false}, {"dev", "kbs-prod", false}, {"ops", "kbs-prod", true}} {
		tok, err := admintoken.Mint(e.adminKey, "admin", c.iss, c.aud, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		r := adminCall{"", http.MethodGet, "/kbs/v0/resource", nil, ""}.send(t, e, tok)
		if c.ok {
			if r.status != http.StatusOK {
				t.Errorf("iss %q aud %q: %d %s", c.iss, c.aud, r.status, r.body)
			}
			continue
		}
		wantError(t, r, http.StatusUnauthorized, protocol.KindAdminAuthAccess)
	}
}

// Admin tokens signed with a trusted EC key (P-256, P-384, P-521: ES256,
// ES384, ES512) are accepted for every admin endpoint their role's ACL
// allows, and refused for the others; a token from another key on the
// same curve is refused.
func TestAdminECKeys(t *testing.T) {
	for _, c := range []struct {
		curve elliptic.Curve
		alg   string
	}{{elliptic.P256(), "ES256"}, {elliptic.P384(), "ES384"}, {elliptic.P521(), "ES512"}} {
		t.Run(c.alg, func(t *testing.T) {
			key, err := ecdsa.GenerateKey(c.curve, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, envConfig{adminKey: key, acls: []server.AdminACL{
				{Role: "admin", AllowedEndpoints: "^/kbs/v0/.+$"},
				{Role: "rv-reader", AllowedEndpoints: "^/kbs/v0/reference-value/.+$"},
			}})
			hdr, err := base64.RawURLEncoding.DecodeString(strings.Split(e.adminToken, ".")[0])
			if err != nil || !bytes.Contains(hdr, []byte(`"alg":"`+c.alg+`"`)) {
				t.Fatalf("admin token header %s (%v), want alg %s", hdr, err, c.alg)
			}
			for _, call := range adminCalls(t) {
				if r := call.send(t, e, e.adminToken); r.status != http.StatusOK {
					t.Fatalf("%s with an %s admin token: %d %s", call.name, c.alg, r.status, r.body)
				}
			}
			// The calls took effect: the resource written is listed.
			list := adminCall{"list", http.MethodGet, "/kbs/v0/resource", nil, ""}.send(t, e, e.adminToken)
			if list.status != http.StatusOK || string(bytes.TrimSpace(list.body)) != `["adm/res/two"]` {
				t.Fatalf("resources: %d %s", list.status, list.body)
			}
			reader := e.mintAdmin("rv-reader", time.Hour)
			if r := (adminCall{"", http.MethodGet, "/kbs/v0/reference-value/svn", nil, ""}).send(t, e, reader); r.status != http.StatusOK {
				t.Fatalf("rv-reader get-reference-value: %d %s", r.status, r.body)
			}
			wantError(t, adminCall{"", http.MethodGet, "/kbs/v0/resource", nil, ""}.send(t, e, reader),
				http.StatusUnauthorized, protocol.KindAdminAuthAccess, `role "rv-reader" may not`)
			other, _ := ecdsa.GenerateKey(c.curve, rand.Reader)
			forged, err := admintoken.Mint(other, "admin", "", "", time.Hour, e.clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			wantError(t, adminCall{"", http.MethodGet, "/kbs/v0/resource", nil, ""}.send(t, e, forged),
				http.StatusUnauthorized, protocol.KindAdminAuthAccess, "not from a trusted key")
		})
	}
}

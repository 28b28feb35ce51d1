package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/kbs/server"
	"github.com/coffer-project/coffer/internal/store"
	"github.com/coffer-project/coffer/internal/tee"
)

// Every denial reaches the audit log in the store, with the failed check
// in its detail, and the log keeps the order in which things happened
// (the writer commits in batches).
func TestAuditLogRecordsDenials(t *testing.T) {
	e := negEnv(t, envConfig{})
	a := attesters(t)[0]
	g := newGuest(t, e.url, a.new(), "", "")
	g.auth()
	other, _ := protocol.NewNonce()
	wantError(t, g.attestRaw(attestBody(t, other, g.pub, g.evidence(other, g.pub))), http.StatusUnauthorized, protocol.KindAttestationError, "nonce does not match")

	ok := newGuest(t, e.url, a.new(), "", "")
	nonce := ok.auth()
	if r := ok.attestRaw(attestBody(t, nonce, ok.pub, ok.evidence(nonce, ok.pub))); r.status != http.StatusOK {
		t.Fatalf("attest: %d %s", r.status, r.body)
	}
	if r := ok.get("neg/secret/missing", ""); r.status != http.StatusNotFound {
		t.Fatalf("get of a missing resource: %d %s", r.status, r.body)
	}
	var seq []string
	for _, ev := range auditRecords(t, e) {
		seq = append(seq, ev.Kind+":"+ev.Outcome)
		if ev.Kind == "attest" && ev.Outcome == "denied" && !strings.Contains(ev.Detail, "nonce does not match") {
			t.Errorf("denied attestation without the failed check in its detail: %q", ev.Detail)
		}
	}
	if got := strings.Join(seq, " "); got != "attest:denied attest:success release:not_found" {
		t.Errorf("audit log = %q, want the denial, the success and the refused release in order", got)
	}
}

// auditRecord is the part of an audit event the tests compare.
type auditRecord struct {
	Time                             time.Time
	Kind, Tee, Path, Outcome, Detail string
}

// auditRecords closes the server (flushing the audit writer) and returns
// the audit log's records other than admin calls, oldest first.
func auditRecords(t *testing.T, e *env) []auditRecord {
	t.Helper()
	e.srv.Close()
	return storedAudit(t, e.st)
}

// storedAudit returns the records other than admin calls in st's audit
// log, oldest first.
func storedAudit(t *testing.T, st store.Store) []auditRecord {
	t.Helper()
	ents, err := store.ListAudit(context.Background(), st, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []auditRecord
	for _, en := range ents {
		var r auditRecord
		if err := json.Unmarshal(en.Event, &r); err != nil {
			t.Fatal(err)
		}
		if r.Kind != "admin" {
			out = append(out, r)
		}
	}
	return out
}

// Every refusal of /auth, /attest and a resource request — including
// those anyone can provoke before a session exists — is in the audit log
// with the check that failed. Those made before any session or token count
// in kbs_refused_requests_total, not as attestation failures or release
// denials. No refusal releases a secret (wantError).
func TestAuditEveryRefusal(t *testing.T) {
	e := negEnv(t, envConfig{sessionTimeout: time.Minute})
	hc := &http.Client{Timeout: 30 * time.Second}
	post := func(path string, body []byte, hdr http.Header) reply {
		return send(t, hc, http.MethodPost, e.url, path, body, hdr)
	}
	authBody := func(version, tee string) []byte {
		return []byte(`{"version":"` + version + `","tee":"` + tee + `","extra-params":""}`)
	}

	// /auth.
	wantError(t, post("/kbs/v0/auth", authBody("0.3.0", "sample"), nil), http.StatusUnauthorized, protocol.KindAttestationError, "Version Mismatch")
	wantError(t, post("/kbs/v0/auth", authBody("0.4.0", "quantum"), nil), http.StatusUnauthorized, protocol.KindAttestationError, "unknown TEE")
	wantError(t, post("/kbs/v0/auth", authBody("0.4.0", "tdx"), nil), http.StatusUnauthorized, protocol.KindAttestationError, "not supported")
	wantError(t, post("/kbs/v0/auth", []byte(`{"version":"0.4.0",`), nil), http.StatusUnauthorized, protocol.KindAttestationError, "bad auth request")
	wantError(t, post("/kbs/v0/auth", bytes.Repeat([]byte(" "), 2<<20+1), nil), http.StatusRequestEntityTooLarge, protocol.KindSerdeError, "request body over")

	// /attest before or outside a session.
	sg := newGuest(t, e.url, tee.NewSample(), "", "")
	valid := func(g *guest, nonce string) []byte { return attestBody(t, nonce, g.pub, g.evidence(nonce, g.pub)) }
	n0, _ := protocol.NewNonce()
	wantError(t, post("/kbs/v0/attest", valid(sg, n0), nil), http.StatusUnauthorized, protocol.KindAttestationError, "no kbs-session-id cookie")
	wantError(t, post("/kbs/v0/attest", valid(sg, n0), http.Header{"Cookie": {server.SessionCookie + "=00112233"}}), http.StatusUnauthorized, protocol.KindAttestationError, "no such session")
	// An expired session.
	nonce := sg.auth()
	e.clock.Advance(2 * time.Minute)
	wantError(t, sg.attestRaw(valid(sg, nonce)), http.StatusUnauthorized, protocol.KindAttestationError, "session expired")
	// A nonce another /attest holds: the first /attest of the session is
	// in progress (the server asked for its body: 100 Continue) when a
	// second one arrives.
	ug := newGuest(t, e.url, tee.NewSample(), "", "")
	nonce = ug.auth()
	cookies := ug.hc.Jar.Cookies(mustURL(t, e.url))
	if len(cookies) != 1 {
		t.Fatalf("cookies after /auth: %v", cookies)
	}
	conn, err := net.Dial("tcp", mustURL(t, e.url).Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	const garbage = `{"x":1}   `
	fmt.Fprintf(conn, "POST /kbs/v0/attest HTTP/1.1\r\nHost: kbs\r\nCookie: %s=%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", server.SessionCookie, cookies[0].Value, len(garbage))
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("first /attest: want 100 Continue, got %q %v", line, err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "\r\n" {
		t.Fatalf("first /attest: 100 Continue followed by %q %v", line, err)
	}
	wantError(t, ug.attestRaw(valid(ug, nonce)), http.StatusUnauthorized, protocol.KindAttestationError, "already used")
	if _, err := io.WriteString(conn, garbage); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, reply{status: resp.StatusCode, header: resp.Header, body: b}, http.StatusUnauthorized, protocol.KindAttestationError, "bad attestation request")

	// Resource requests.
	wantError(t, sg.getNoCookie(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound, "no attestation token")
	pending := newGuest(t, e.url, tee.NewSample(), "", "")
	pending.auth()
	wantError(t, pending.get(negPath, ""), http.StatusUnauthorized, protocol.KindTokenNotFound, "no attestation token", "not attested")
	wantError(t, sg.getNoCookie("neg/../key", ""), http.StatusNotFound, protocol.KindInvalidRequestPath, "resource path segment")
	wantError(t, sg.getNoCookie("neg/key", ""), http.StatusNotFound, protocol.KindInvalidRequestPath, "repository/type/tag")
	long := "neg/key/" + strings.Repeat("a", 10000)
	wantError(t, sg.getNoCookie(long, ""), http.StatusNotFound, protocol.KindInvalidRequestPath, "resource path segment")
	// A release the resource policy refuses: the default policy (set
	// after the attestation) refuses the sample TEE.
	ok := newGuest(t, e.url, tee.NewSample(), "", "")
	ok.handshake()
	e.setPolicy("default")
	wantError(t, ok.get(negPath, ""), http.StatusUnauthorized, protocol.KindPolicyDeny, "sample TEE")

	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"kbs_refused_requests_total", `endpoint="auth"`, 5},
		{"kbs_refused_requests_total", `endpoint="attest"`, 4},
		{"kbs_refused_requests_total", `endpoint="resource"`, 5},
		{"kbs_attestations_total", `outcome="failure",tee="sample"`, 1},
		{"kbs_attestations_total", `outcome="failure",tee="unknown"`, -1},
		{"kbs_attestations_total", `outcome="success",tee="sample"`, 1},
		{"kbs_resource_releases_total", `outcome="denied"`, 1},
		{"kbs_resource_releases_total", `outcome="released"`, -1},
	} {
		if got := metricValue(t, e.url, c.name, c.labels); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	want := []struct{ kind, tee, path, outcome, detail string }{
		{"auth", "sample", "", "denied", "Version Mismatch"},
		{"auth", "", "", "denied", "unknown TEE"},
		{"auth", "tdx", "", "denied", "not supported"},
		{"auth", "", "", "denied", "bad auth request"},
		{"auth", "", "", "denied", "request body over"},
		{"attest", "", "", "denied", "no kbs-session-id cookie"},
		{"attest", "", "", "denied", "no such session"},
		{"attest", "sample", "", "denied", "session expired"},
		{"attest", "sample", "", "denied", "already used"},
		{"attest", "sample", "", "denied", "bad attestation request"},
		{"release", "", negPath, "denied", "no attestation token"},
		{"release", "", negPath, "denied", "not attested"},
		{"release", "", "neg/../key", "denied", "resource path segment"},
		{"release", "", "neg/key", "denied", "repository/type/tag"},
		{"release", "", "neg/key/aaaa", "denied", "resource path segment"},
		{"attest", "sample", "", "success", "appraisal"},
		{"release", "", negPath, "denied", "sample TEE"},
	}
	got := auditRecords(t, e)
	if len(got) != len(want) {
		t.Errorf("%d audit records, want %d:", len(got), len(want))
		for _, r := range got {
			t.Logf("  %+v", r)
		}
		t.FailNow()
	}
	for i, w := range want {
		g := got[i]
		if g.Kind != w.kind || g.Tee != w.tee || !strings.HasPrefix(g.Path, w.path) || g.Outcome != w.outcome || !strings.Contains(g.Detail, w.detail) {
			t.Errorf("audit record %d = %+v, want kind %s tee %q path %q outcome %s detail containing %q", i, g, w.kind, w.tee, w.path, w.outcome, w.detail)
		}
	}
	// The policy denial names the policy's reason (deny_reasons), not
	// only the verdict.
	if d := got[len(got)-1].Detail; !strings.Contains(d, "PolicyDeny") || !strings.Contains(d, "no hardware root of trust") {
		t.Errorf("policy denial's audit detail %q does not carry the policy's reason", d)
	}
	// Request-controlled text is bounded in the log (and in the queue).
	if r := got[14]; len(r.Path) > 600 || len(r.Detail) > 4200 {
		t.Errorf("a 10 KB path gave an audit record of %d+%d bytes", len(r.Path), len(r.Detail))
	}
}

// A flood of requests anyone can send (no session, no token) cannot push
// the records of attestations and releases out of the audit log: refusals
// are kept apart, pruned to their own bound as they arrive.
func TestAuditRefusalFloodKeepsReleases(t *testing.T) {
	e := negEnv(t, envConfig{auditMaxRefused: 20})
	releaseOnce(t, e)
	hc := &http.Client{Timeout: 30 * time.Second}
	for range 300 {
		wantError(t, send(t, hc, http.MethodGet, e.url, "/kbs/v0/resource/"+negPath, nil, nil), http.StatusUnauthorized, protocol.KindTokenNotFound, "no attestation token")
	}
	if got := metricValue(t, e.url, "kbs_refused_requests_total", `endpoint="resource"`); got != 300 {
		t.Errorf("kbs_refused_requests_total{endpoint=\"resource\"} = %v, want 300", got)
	}
	got := auditRecords(t, e)
	var attested, released, refused int
	for _, r := range got {
		switch {
		case r.Kind == "attest" && r.Outcome == "success":
			attested++
		case r.Kind == "release" && r.Outcome == "released":
			released++
		case r.Kind == "release" && r.Outcome == "denied":
			refused++
		}
	}
	if attested != 1 || released != 1 {
		t.Errorf("after the flood: %d attestation and %d release records, want 1 and 1", attested, released)
	}
	// Pruned as they arrive: at most the bound plus one tenth of it.
	if refused == 0 || refused > 22 {
		t.Errorf("%d refusal records kept, want 1..22 (bound 20)", refused)
	}
}

// Failed attestations cost anyone two requests (/auth, then bad evidence):
// past failureRecordsPerMinute a minute from one host they are filed with
// the refusals, so they cannot push release records out of the main log
// either. Every one is still recorded and counted.
func TestAuditAttestFailuresPerHost(t *testing.T) {
	e := negEnv(t, envConfig{auditMaxRefused: 5})
	releaseOnce(t, e)
	const n = 45
	bad := newGuest(t, e.url, tee.NewSample(), "", "")
	for range n {
		bad.auth()
		other, _ := protocol.NewNonce()
		wantError(t, bad.attestRaw(attestBody(t, other, bad.pub, bad.evidence(other, bad.pub))), http.StatusUnauthorized, protocol.KindAttestationError, "attestation failed")
	}
	if got := metricValue(t, e.url, "kbs_attestations_total", `outcome="failure",tee="sample"`); got != n {
		t.Errorf("attestation failures counted: %v, want %d", got, n)
	}
	var failures, released int
	for _, r := range auditRecords(t, e) {
		switch {
		case r.Kind == "attest" && r.Outcome == "denied":
			failures++
		case r.Kind == "release" && r.Outcome == "released":
			released++
		}
	}
	// 30 in the main log, the other 15 filed with the refusals and pruned
	// to their bound of 5 (+ a tenth).
	if released != 1 || failures < 30 || failures > 36 {
		t.Errorf("%d release and %d attestation-failure records; want 1 and 30 + at most 6", released, failures)
	}
}

// releaseOnce has a sample guest attest and fetch negPath, so that the
// audit log holds one attestation and one release record.
func releaseOnce(t *testing.T, e *env) {
	t.Helper()
	g := newGuest(t, e.url, tee.NewSample(), "", "")
	g.handshake()
	if r := g.get(negPath, ""); r.status != http.StatusOK {
		t.Fatalf("release: %d %s", r.status, r.body)
	}
}

package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
)

// BenchmarkHandshakeServer measures the server's side of one full RCAR
// handshake (auth, attest, get-resource with the session cookie) by
// calling ServeHTTP directly: no network, no HTTP parsing. The guest's
// work (evidence, JSON, decryption) runs outside the timed calls; ns/op
// includes it, the <endpoint>-µs metrics do not. allocs/op counts both
// sides (profile with -memprofile to split them).
func BenchmarkHandshakeServer(b *testing.B) {
	for _, tc := range []struct {
		name string
		att  func(b *testing.B, e *env) tee.Attester
	}{
		{"sample", func(b *testing.B, e *env) tee.Attester {
			e.registerSampleRVs()
			return tee.NewSample()
		}},
		{"snp", func(b *testing.B, e *env) tee.Attester {
			m := measurement(7)
			e.registerSNPRVs(m, simChip(b).TCB())
			return simGuest(b, sim.LaunchConfig{Measurement: m})
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b, envConfig{dev: true, sessionMax: 1 << 20})
			att := tc.att(b, e)
			e.setResource("bench/key/secret", bytes.Repeat([]byte{'k'}, 256))
			benchHandshakes(b, e, att)
		})
	}
}

func benchHandshakes(b *testing.B, e *env, att tee.Attester) {
	priv, pub, err := protocol.NewTeeKey(protocol.AlgECDHESA256KW, protocol.CurveP256)
	if err != nil {
		b.Fatal(err)
	}
	authBody, _ := json.Marshal(protocol.NewRequest(att.Tee()))
	serve := func(req *http.Request, took *time.Duration) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		t0 := time.Now()
		e.srv.ServeHTTP(rec, req)
		*took += time.Since(t0)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s %s: %d %s", req.Method, req.URL.Path, rec.Code, rec.Body)
		}
		return rec
	}
	var tAuth, tAttest, tGet time.Duration
	n := 0
	for b.Loop() {
		n++
		rec := serve(httptest.NewRequest(http.MethodPost, "/kbs/v0/auth", bytes.NewReader(authBody)), &tAuth)
		var ch protocol.Challenge
		if err := json.Unmarshal(rec.Body.Bytes(), &ch); err != nil {
			b.Fatal(err)
		}
		cookie := rec.Result().Cookies()[0]
		additional := ""
		digest, err := protocol.RuntimeDataDigest(protocol.HashSHA384, ch.Nonce, pub, &additional)
		if err != nil {
			b.Fatal(err)
		}
		ev, err := att.Evidence(context.Background(), digest)
		if err != nil {
			b.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/kbs/v0/attest", bytes.NewReader(attestBody(b, ch.Nonce, pub, ev)))
		req.AddCookie(cookie)
		rec = serve(req, &tAttest)
		var ar protocol.AttestResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &ar); err != nil {
			b.Fatal(err)
		}
		req = httptest.NewRequest(http.MethodGet, "/kbs/v0/resource/bench/key/secret", nil)
		req.AddCookie(cookie)
		req.Header.Set("Authorization", "Bearer "+ar.Token)
		rec = serve(req, &tGet)
		var jwe protocol.Response
		if err := json.Unmarshal(rec.Body.Bytes(), &jwe); err != nil {
			b.Fatal(err)
		}
		if _, err := protocol.DecryptResponse(priv, &jwe); err != nil {
			b.Fatal(err)
		}
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	b.ReportMetric(us(tAuth), "auth-µs")
	b.ReportMetric(us(tAttest), "attest-µs")
	b.ReportMetric(us(tGet), "resource-µs")
	b.ReportMetric(us(tAuth+tAttest+tGet), "server-µs")
}

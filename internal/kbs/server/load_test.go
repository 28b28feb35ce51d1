package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-project/coffer/internal/kbs/client"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/tee"
)

// metricValue returns the value of the sample `name{labels}` in /metrics
// (labels as Prometheus prints them, sorted: `outcome="x",tee="y"`), or -1.
func metricValue(t *testing.T, url, name, labels string) float64 {
	t.Helper()
	r := send(t, &http.Client{}, http.MethodGet, url, "/metrics", nil, nil)
	if r.status != http.StatusOK {
		t.Fatalf("/metrics: %d %s", r.status, r.body)
	}
	want := name
	if labels != "" {
		want += "{" + labels + "}"
	}
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, want+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// 200 guests at once, each a full sample handshake (auth, attest) and a
// resource fetch with the guest library, against one server: all succeed
// with the right bytes, and the session table holds one session per guest,
// no more. `make race` (part of `make unit` and `make test`) runs it with
// -race.
func TestConcurrentSessions(t *testing.T) {
	const n = 200
	e := newEnv(t, envConfig{dev: true, sessionMax: 1000})
	want := secret("concurrent")
	e.setResource("con/cur/rent", want)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			kt := keyTypes[i%2] // EC keys: RSA keygen would dominate
			c, err := client.New(e.url, tee.NewSample(), client.Options{KeyAlgorithm: kt.alg, KeyCurve: kt.crv, Log: quietLog})
			if err != nil {
				errs <- err
				return
			}
			got, err := c.GetResource(context.Background(), "con/cur/rent")
			if err != nil {
				errs <- fmt.Errorf("guest %d: %w", i, err)
				return
			}
			if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("guest %d: got %q", i, got)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := metricValue(t, e.url, "kbs_sessions", ""); s != n {
		t.Errorf("kbs_sessions = %v after %d handshakes, want %d", s, n, n)
	}
	if v := metricValue(t, e.url, "kbs_attestations_total", `outcome="success",tee="sample"`); v != n {
		t.Errorf("successful attestations %v, want %d", v, n)
	}
	if v := metricValue(t, e.url, "kbs_resource_releases_total", `outcome="released"`); v != n {
		t.Errorf("releases %v, want %d", v, n)
	}
}

// /healthz answers 200; /metrics counts attestations by TEE and outcome
// and releases by outcome, with the labels operators alert on.
func TestMetricsAndHealthz(t *testing.T) {
	e := newEnv(t, envConfig{dev: true})
	r := send(t, &http.Client{}, http.MethodGet, e.url, "/healthz", nil, nil)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != "ok" {
		t.Fatalf("/healthz: %d %q", r.status, r.body)
	}
	e.setResource("m/e/t", secret("metrics"))
	// Two sample successes, one sim-snp success, one sample failure
	// (wrong nonce), one snp failure (key mismatch).
	for i := 0; i < 2; i++ {
		g := newGuest(t, e.url, tee.NewSample(), "", "")
		g.open(g.getNoCookie("m/e/t", g.handshake())) // released
	}
	sg := newGuest(t, e.url, attesters(t)[1].new(), "", "")
	stok := sg.handshake()
	sg.open(sg.get("m/e/t", ""))                                                                       // released
	wantError(t, sg.getNoCookie("m/e/x", stok), http.StatusNotFound, protocol.KindPluginInternalError) // not_found

	bad := newGuest(t, e.url, tee.NewSample(), "", "")
	bad.auth()
	other, _ := protocol.NewNonce()
	wantError(t, bad.attestRaw(attestBody(t, other, bad.pub, bad.evidence(other, bad.pub))), http.StatusUnauthorized, protocol.KindAttestationError)
	wantError(t, bad.getNoCookie("m/e/t", ""), http.StatusUnauthorized, protocol.KindTokenNotFound)           // denied
	wantError(t, bad.getNoCookie("m/e/t", "bogus"), http.StatusUnauthorized, protocol.KindTokenVerifierError) // denied

	badSNP := newGuest(t, e.url, attesters(t)[1].new(), "", "")
	n := badSNP.auth()
	_, otherKey, _ := protocol.NewTeeKey(protocol.AlgECDHESA256KW, protocol.CurveP256)
	wantError(t, badSNP.attestRaw(attestBody(t, n, otherKey, badSNP.evidence(n, badSNP.pub))), http.StatusUnauthorized, protocol.KindAttestationError)

	e.setPolicy("deny_all")
	wantError(t, sg.getNoCookie("m/e/t", stok), http.StatusUnauthorized, protocol.KindPolicyDeny) // denied

	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"kbs_attestations_total", `outcome="success",tee="sample"`, 2},
		{"kbs_attestations_total", `outcome="success",tee="snp"`, 1},
		{"kbs_attestations_total", `outcome="failure",tee="sample"`, 1},
		{"kbs_attestations_total", `outcome="failure",tee="snp"`, 1},
		{"kbs_resource_releases_total", `outcome="released"`, 3},
		{"kbs_resource_releases_total", `outcome="not_found"`, 1},
		{"kbs_resource_releases_total", `outcome="denied"`, 1},
		{"kbs_refused_requests_total", `endpoint="resource"`, 2},
		{"kbs_sessions", "", 3},
		{"kbs_http_requests_total", `code="200",endpoint="healthz"`, 1},
		{"kbs_http_requests_total", `code="200",endpoint="auth"`, 5},
		{"kbs_http_requests_total", `code="401",endpoint="attest"`, 2},
	} {
		if got := metricValue(t, e.url, c.name, c.labels); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

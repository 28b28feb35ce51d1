package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/testclock"
)

// fakeKBS speaks enough RCAR to drive the client: /auth hands out a nonce,
// /attest checks it and issues a token (unsigned: the client does not
// verify tokens) expiring ttl later on the shared clock, and resource
// requests are served only with the latest token, unexpired, sent as
// Bearer, encrypted to the TEE key of that attestation. reject401 makes
// the next resource requests fail with 401 whatever they carry.
type fakeKBS struct {
	t      *testing.T
	clock  *testclock.Clock
	ttl    time.Duration
	secret []byte

	mu        sync.Mutex
	nonce     string
	token     string
	exp       time.Time
	pub       protocol.TeePubKey
	attests   int // successful /attest calls
	gets      int // resource requests
	reject401 int
}

func newFakeKBS(t *testing.T, clock *testclock.Clock, ttl time.Duration) (*fakeKBS, string) {
	f := &fakeKBS{t: t, clock: clock, ttl: ttl, secret: []byte("fake-kbs-secret")}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func (f *fakeKBS) counts() (attests, gets int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attests, f.gets
}

func (f *fakeKBS) rejectNext(n int) {
	f.mu.Lock()
	f.reject401 = n
	f.mu.Unlock()
}

func (f *fakeKBS) fail(w http.ResponseWriter, status int, kind protocol.ErrorKind, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(protocol.MarshalErrorInformation(kind, detail))
}

func (f *fakeKBS) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/kbs/v0/auth":
		if _, err := protocol.DecodeRequest(r.Body); err != nil {
			f.fail(w, http.StatusUnauthorized, protocol.KindAttestationError, err.Error())
			return
		}
		n, err := protocol.NewNonce()
		if err != nil {
			f.t.Error(err)
			return
		}
		f.nonce = n
		b, _ := json.Marshal(protocol.Challenge{Nonce: n})
		_, _ = w.Write(b)
	case r.Method == http.MethodPost && r.URL.Path == "/kbs/v0/attest":
		att, err := protocol.DecodeAttestation(r.Body)
		if err != nil || f.nonce == "" || att.RuntimeData.Nonce != f.nonce {
			f.fail(w, http.StatusUnauthorized, protocol.KindAttestationError, fmt.Sprintf("bad attestation (%v)", err))
			return
		}
		f.nonce = "" // single use
		f.attests++
		f.pub = att.RuntimeData.TeePubKey
		f.exp = f.clock.Now().Add(f.ttl)
		claims, _ := json.Marshal(map[string]any{"exp": f.exp.Unix(), "n": f.attests})
		f.token = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256"}`)) + "." +
			base64.RawURLEncoding.EncodeToString(claims) + ".c2ln"
		b, _ := json.Marshal(map[string]string{"token": f.token})
		_, _ = w.Write(b)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/kbs/v0/resource/"):
		f.gets++
		if f.reject401 > 0 {
			f.reject401--
			f.fail(w, http.StatusUnauthorized, protocol.KindTokenVerifierError, "rejected by the test")
			return
		}
		if f.token == "" || r.Header.Get("Authorization") != "Bearer "+f.token {
			f.fail(w, http.StatusUnauthorized, protocol.KindTokenVerifierError, "not the latest token")
			return
		}
		if !f.clock.Now().Before(f.exp) {
			f.fail(w, http.StatusUnauthorized, protocol.KindTokenVerifierError, "token expired")
			return
		}
		if r.URL.Path != "/kbs/v0/resource/a/b/c" {
			f.fail(w, http.StatusNotFound, protocol.KindPluginInternalError, "resource not found")
			return
		}
		jwe, err := protocol.EncryptResponse(f.pub, f.secret)
		if err != nil {
			f.t.Error(err)
			return
		}
		b, _ := json.Marshal(jwe)
		_, _ = w.Write(b)
	default:
		f.fail(w, http.StatusNotFound, protocol.KindPluginNotFound, r.URL.Path)
	}
}

func newTestClient(t *testing.T, url string, clock *testclock.Clock) *Client {
	t.Helper()
	c, err := New(url, tee.NewSample(), Options{Now: clock.Now, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// get fetches a/b/c and checks the counts of attestations and resource
// requests the KBS saw so far.
func get(t *testing.T, c *Client, f *fakeKBS, wantAttests, wantGets int) {
	t.Helper()
	got, err := c.GetResource(context.Background(), "kbs:///a/b/c")
	if err != nil {
		t.Fatalf("GetResource: %v", err)
	}
	if !bytes.Equal(got, f.secret) {
		t.Fatalf("got %q, want %q", got, f.secret)
	}
	wantCounts(t, f, wantAttests, wantGets)
}

func wantCounts(t *testing.T, f *fakeKBS, wantAttests, wantGets int) {
	t.Helper()
	if a, g := f.counts(); a != wantAttests || g != wantGets {
		t.Fatalf("the KBS saw %d attestations and %d resource requests, want %d and %d", a, g, wantAttests, wantGets)
	}
}

// The token is cached until shortly before its exp: resources fetched
// while it is valid need no new attestation; once it expires (or is
// within tokenMargin of expiring) the next fetch
// attests again and uses the new token.
func TestTokenCachedUntilExp(t *testing.T) {
	clock := testclock.New(time.Unix(1_700_000_000, 0))
	f, url := newFakeKBS(t, clock, 5*time.Minute)
	c := newTestClient(t, url, clock)

	get(t, c, f, 1, 1) // no token yet: attest
	get(t, c, f, 1, 2) // cached
	clock.Advance(4 * time.Minute)
	get(t, c, f, 1, 3) // still valid (1 min left)
	clock.Advance(61 * time.Second)
	get(t, c, f, 2, 4) // expired: re-attested, the new token served

	clock.Advance(5*time.Minute - 11*time.Second)
	get(t, c, f, 2, 5) // 11 s left: still used
	clock.Advance(2 * time.Second)
	get(t, c, f, 3, 6) // 9 s left: refreshed before the KBS would refuse it

	// Attest replaces the cached token too.
	if _, err := c.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	get(t, c, f, 4, 7)
}

// A 401 to a cached token makes the client drop it, re-attest once and
// retry; a 401 to a token just obtained is returned as the error (no
// loop), and other errors (404) are returned without re-attesting.
func TestReattestOn401(t *testing.T) {
	clock := testclock.New(time.Unix(1_700_000_000, 0))
	f, url := newFakeKBS(t, clock, 5*time.Minute)
	c := newTestClient(t, url, clock)

	// A token this call just obtained, refused: attesting again would not
	// help, so the 401 is the answer (and the token is dropped).
	f.rejectNext(1)
	if _, err := c.GetResource(context.Background(), "a/b/c"); !IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("err %v, want the 401 to the fresh token", err)
	}
	wantCounts(t, f, 1, 1)
	get(t, c, f, 2, 2)
	// A cached token refused (e.g. the KBS's signing key changed).
	f.rejectNext(1)
	get(t, c, f, 3, 4)
	get(t, c, f, 3, 5) // and the new token is cached

	// Refused again after the re-attestation: the 401 is the error.
	f.rejectNext(100)
	_, err := c.GetResource(context.Background(), "a/b/c")
	if !IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("err %v, want a 401 KBSError", err)
	}
	if !strings.Contains(err.Error(), "rejected by the test") {
		t.Errorf("err %q does not carry the KBS's detail", err)
	}
	wantCounts(t, f, 4, 7)
	f.rejectNext(0)

	// 404: returned at once, the token kept.
	_, err = c.GetResource(context.Background(), "a/b/missing")
	if !IsStatus(err, http.StatusNotFound) {
		t.Fatalf("err %v, want a 404 KBSError", err)
	}
	wantCounts(t, f, 5, 8) // the failed round left no token: one attestation
	get(t, c, f, 5, 9)     // cached again
}

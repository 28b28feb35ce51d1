package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/store"
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
	e.srv.Close() // flushes the audit writer

	ents, err := store.ListAudit(context.Background(), e.st, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seq []string
	for _, en := range ents {
		var ev struct{ Kind, Outcome, Detail string }
		if err := json.Unmarshal(en.Event, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Kind == "admin" {
			continue
		}
		seq = append(seq, ev.Kind+":"+ev.Outcome)
		if ev.Kind == "attest" && ev.Outcome == "denied" && !strings.Contains(ev.Detail, "nonce does not match") {
			t.Errorf("denied attestation without the failed check in its detail: %q", ev.Detail)
		}
	}
	if got := strings.Join(seq, " "); got != "attest:denied attest:success release:not_found" {
		t.Errorf("audit log = %q, want the denial, the success and the refused release in order", got)
	}
}

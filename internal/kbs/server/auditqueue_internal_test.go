package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/store"
)

func TestAuditQueue(t *testing.T) {
	q := newAuditQueue(2, 2)
	if !q.push(auditEvent{Kind: "a"}) {
		t.Fatal("push to an open queue refused")
	}
	select {
	case <-q.wake:
	default:
		t.Fatal("the first event did not wake the writer")
	}
	q.push(auditEvent{Kind: "b"})
	select {
	case <-q.wake: // a full batch (2) wakes the writer again
	default:
		t.Fatal("a full batch did not wake the writer")
	}
	// Full: a third push waits until the writer takes events.
	pushed := make(chan bool)
	go func() { pushed <- q.push(auditEvent{Kind: "c"}) }()
	select {
	case <-pushed:
		t.Fatal("push to a full queue did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	got, closed := q.take(nil, 1)
	if closed || len(got) != 1 || got[0].Kind != "a" {
		t.Fatalf("take(1) = %v, closed %v; want [a], open", got, closed)
	}
	if ok := <-pushed; !ok {
		t.Fatal("the waiting push was refused")
	}
	got, _ = q.take(nil, 10)
	if len(got) != 2 || got[0].Kind != "b" || got[1].Kind != "c" {
		t.Fatalf("take(10) = %v; want [b c] in order", got)
	}
	// Close wakes a waiting writer and refuses later events; queued ones
	// can still be taken.
	q.push(auditEvent{Kind: "d"})
	q.push(auditEvent{Kind: "e"})
	blocked := make(chan bool)
	go func() { blocked <- q.push(auditEvent{Kind: "f"}) }()
	time.Sleep(20 * time.Millisecond)
	q.close()
	if ok := <-blocked; ok {
		t.Fatal("a push waiting at close was accepted")
	}
	if q.push(auditEvent{Kind: "g"}) {
		t.Fatal("push after close accepted")
	}
	got, closed = q.take(nil, 10)
	if !closed || len(got) != 2 {
		t.Fatalf("after close take = %v, closed %v; want [d e], closed", got, closed)
	}
}

// Many handlers auditing at once through a small queue (back-pressure),
// then Close: every event accepted is in the store, in order per handler.
func TestAuditWriterFlushesEverything(t *testing.T) {
	st := store.NewMemory()
	s := &Server{cfg: Config{AuditMaxRefused: 1 << 20}, deps: Deps{Store: st}, log: slog.New(slog.DiscardHandler), now: time.Now}
	s.audits = newAuditQueue(16, 8)
	s.auditDone.Add(1)
	go s.auditWriter()
	const handlers, each = 8, 300
	var wg sync.WaitGroup
	for h := range handlers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				s.audit(context.Background(), auditEvent{Kind: "release", Path: fmt.Sprintf("h%d/%04d", h, i), Outcome: "released"})
			}
		}()
	}
	wg.Wait()
	s.Close()
	entries, err := store.ListAudit(context.Background(), st, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != handlers*each {
		t.Fatalf("%d audit records, want %d", len(entries), handlers*each)
	}
	last := map[string]string{}
	for _, e := range entries {
		var ev auditEvent
		if err := json.Unmarshal(e.Event, &ev); err != nil {
			t.Fatal(err)
		}
		h, _, _ := strings.Cut(ev.Path, "/")
		if ev.Path <= last[h] {
			t.Fatalf("handler %s's events out of order: %s after %s", h, ev.Path, last[h])
		}
		last[h] = ev.Path
	}
	// After Close nothing is accepted, and audit does not block.
	done := make(chan struct{})
	go func() {
		s.audit(context.Background(), auditEvent{Kind: "release", Outcome: "released"})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("audit after Close blocked")
	}
}

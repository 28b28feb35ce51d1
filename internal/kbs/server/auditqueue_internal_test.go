package server

import (
	"testing"
	"time"
)

func TestAuditQueue(t *testing.T) {
	q := newAuditQueue(2)
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
	case <-q.wake:
		t.Fatal("a second event woke the writer again")
	default:
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

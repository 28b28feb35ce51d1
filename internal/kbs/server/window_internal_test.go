package server

import (
	"fmt"
	"testing"
	"time"
)

// windowCount counts by key within a window, returns the window before's
// counts when a new one opens, and starts afresh when a new key would
// exceed maxKeys.
func TestWindowCount(t *testing.T) {
	var w windowCount
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= 3; i++ {
		if n, prev := w.add(t0.Add(time.Duration(i)*time.Millisecond), time.Second, "a", 2); n != i || prev != nil {
			t.Fatalf("add %d: %d %v", i, n, prev)
		}
	}
	if n, _ := w.add(t0, time.Second, "b", 2); n != 1 {
		t.Fatalf("b: %d", n)
	}
	if n, _ := w.add(t0, time.Second, "c", 2); n != 1 || len(w.n) != 1 {
		t.Fatalf("a third key over maxKeys 2: %d, %v (want a fresh table)", n, w.n)
	}
	n, prev := w.add(t0.Add(time.Second), time.Second, "a", 2)
	if n != 1 || prev["c"] != 1 {
		t.Fatalf("next window: %d %v", n, prev)
	}
}

// Failed attestations go to the main audit log at most
// failureRecordsPerMinute a minute per host and
// failureRecordsPerMinuteTotal a minute over all hosts, however many
// addresses send them (more hosts than the per-host table holds, too);
// the next minute starts afresh.
func TestFailureOverLimitManyHosts(t *testing.T) {
	var s Server
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	main := 0
	for h := range 2 * maxFailureHosts {
		for range 2 {
			if !s.failureOverLimit(t0, fmt.Sprintf("10.%d.%d.%d:4000", h>>16, (h>>8)&255, h&255)) {
				main++
			}
		}
	}
	if main != failureRecordsPerMinuteTotal {
		t.Errorf("%d failures from %d hosts went to the main log in one minute, want %d", main, 2*maxFailureHosts, failureRecordsPerMinuteTotal)
	}
	// One host alone is held to its own limit.
	var one Server
	main = 0
	for range 2 * failureRecordsPerMinute {
		if !one.failureOverLimit(t0, "192.0.2.1:5000") {
			main++
		}
	}
	if main != failureRecordsPerMinute {
		t.Errorf("%d failures from one host went to the main log, want %d", main, failureRecordsPerMinute)
	}
	if s.failureOverLimit(t0.Add(time.Minute), "10.0.0.1:4000") {
		t.Error("the next minute did not start afresh")
	}
}

package server

import (
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

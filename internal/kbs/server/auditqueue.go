package server

import "sync"

// auditQueue hands audit events from the request handlers to the audit
// writer. A handler appends under a mutex and wakes the writer only when
// the queue was empty: the writer then lingers to collect a batch, so
// under load there is one wake-up per batch rather than one goroutine
// hand-off per event (a channel send woke the writer for each event, ~20 µs
// of scheduler and futex work per handshake). A full queue makes
// handlers wait (back-pressure, nothing dropped); after close, push drops
// the event and reports it. The writer is woken again when a full batch is
// queued, so that it need not linger.
type auditQueue struct {
	mu     sync.Mutex
	space  *sync.Cond // signalled when the writer takes events, or on close
	events []auditEvent
	max    int // bound on queued events
	batch  int // a full batch: wake the writer again at this length
	closed bool
	wake   chan struct{} // 1-buffered: there are events to write
}

func newAuditQueue(max, batch int) *auditQueue {
	q := &auditQueue{max: max, batch: batch, wake: make(chan struct{}, 1), events: make([]auditEvent, 0, 64)}
	q.space = sync.NewCond(&q.mu)
	return q
}

// push queues e, waiting while the queue is full. It returns false when the
// queue is closed (the event is not written).
func (q *auditQueue) push(e auditEvent) bool {
	q.mu.Lock()
	for len(q.events) >= q.max && !q.closed {
		q.space.Wait()
	}
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.events = append(q.events, e)
	n := len(q.events)
	q.mu.Unlock()
	if n == 1 || n == q.batch {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// take moves the queued events (at most n) into dst and returns it, and
// whether the queue is closed.
func (q *auditQueue) take(dst []auditEvent, n int) ([]auditEvent, bool) {
	q.mu.Lock()
	k := min(n, len(q.events))
	dst = append(dst, q.events[:k]...)
	rest := copy(q.events, q.events[k:])
	clear(q.events[rest:])
	q.events = q.events[:rest]
	closed := q.closed
	q.mu.Unlock()
	if k > 0 {
		q.space.Broadcast()
	}
	return dst, closed
}

// isClosed reports whether close was called.
func (q *auditQueue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// close makes push refuse new events and wakes the writer.
func (q *auditQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.space.Broadcast()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

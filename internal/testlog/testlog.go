// Package testlog is a log/slog handler for tests that keeps every record
// it is given, so a test can assert what was logged, at which level and
// with which attributes. It owns nothing but its records.
package testlog

import (
	"context"
	"log/slog"
	"sync"
)

// Recorder is a slog.Handler keeping the records it handles (all levels).
// It is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

// Enabled reports true for every level.
func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// WithAttrs returns r: attributes given to a derived logger are not kept.
func (r *Recorder) WithAttrs([]slog.Attr) slog.Handler { return r }

// WithGroup returns r.
func (r *Recorder) WithGroup(string) slog.Handler { return r }

// Handle keeps a copy of rec.
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// Records returns the records kept so far, oldest first.
func (r *Recorder) Records() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.records...)
}

// Find returns the records whose message is msg.
func (r *Recorder) Find(msg string) []slog.Record {
	var out []slog.Record
	for _, rec := range r.Records() {
		if rec.Message == msg {
			out = append(out, rec)
		}
	}
	return out
}

// Attr returns the value of rec's attribute key as a string ("" if absent).
func Attr(rec slog.Record, key string) string {
	var v string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// Attrs returns rec's attributes as strings by key.
func Attrs(rec slog.Record) map[string]string {
	m := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	return m
}

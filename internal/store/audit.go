package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// auditTimeLayout is fixed-width so that keys sort in time order.
const auditTimeLayout = "20060102T150405.000000000Z"

// AuditEntry is one audit log record as returned by ListAudit.
type AuditEntry struct {
	// Key is the entry's key in NSAudit: "<UTC time>-<random hex>".
	Key string `json:"key"`
	// Time is when the entry was appended (from the key).
	Time time.Time `json:"time"`
	// Event is the JSON the caller passed to AppendAudit.
	Event json.RawMessage `json:"event"`
}

// AppendAudit marshals event to JSON and appends it to the audit log
// (namespace NSAudit) under a new, unique key that sorts in time order
// ("20060102T150405.000000000Z-<16 hex>"). Entries are never overwritten.
func AppendAudit(ctx context.Context, st Store, event any) error {
	return AppendAuditBatch(ctx, st, []AuditItem{{At: time.Now(), Event: event}})
}

// AuditItem is one event for AppendAuditBatch, with the time it happened.
type AuditItem struct {
	At    time.Time
	Event any
}

// AppendAuditBatch appends several events as AppendAudit does, in one
// store transaction: a busy server pays one commit for many events. Each
// entry's key carries its item's time; items given in order keep that
// order in the log, even with equal times (later ones get a nanosecond
// more).
func AppendAuditBatch(ctx context.Context, st Store, items []AuditItem) error {
	if len(items) == 0 {
		return nil
	}
	kvs := make([]KV, len(items))
	stamps := make([]string, len(items))
	var last time.Time
	for i, it := range items {
		data, err := json.Marshal(it.Event)
		if err != nil {
			return fmt.Errorf("audit: encode event %T as JSON: %w", it.Event, err)
		}
		kvs[i].Value = data
		at := it.At.UTC()
		if i > 0 && !at.After(last) {
			at = last.Add(time.Nanosecond)
		}
		last = at
		stamps[i] = at.Format(auditTimeLayout)
	}
	pending, idx := kvs, make([]int, len(kvs))
	for i := range idx {
		idx[i] = i
	}
	for range 4 {
		rnd := make([]byte, 8*len(pending))
		if _, err := rand.Read(rnd); err != nil {
			return fmt.Errorf("audit: random key suffix: %w", err)
		}
		for i := range pending {
			pending[i].Key = stamps[idx[i]] + "-" + hex.EncodeToString(rnd[8*i:8*i+8])
		}
		written, err := st.PutBatch(ctx, NSAudit, pending, false)
		if err != nil {
			return fmt.Errorf("audit: append %d events: %w", len(pending), err)
		}
		var again []KV
		var againIdx []int
		for i, ok := range written {
			if !ok {
				again, againIdx = append(again, pending[i]), append(againIdx, idx[i])
			}
		}
		if len(again) == 0 {
			return nil
		}
		pending, idx = again, againIdx
	}
	return errors.New("audit: append event: could not find an unused key after 4 attempts")
}

// ListAudit returns the newest limit audit entries (all if limit <= 0), in
// chronological order (oldest first).
func ListAudit(ctx context.Context, st Store, limit int) ([]AuditEntry, error) {
	keys, err := st.List(ctx, NSAudit, "")
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	if limit > 0 && len(keys) > limit {
		keys = keys[len(keys)-limit:]
	}
	out := make([]AuditEntry, 0, len(keys))
	for _, k := range keys {
		v, err := st.Get(ctx, NSAudit, k)
		if errors.Is(err, ErrNotFound) {
			continue // pruned concurrently
		}
		if err != nil {
			return nil, fmt.Errorf("audit: read entry: %w", err)
		}
		e := AuditEntry{Key: k, Event: json.RawMessage(v)}
		if i := strings.IndexByte(k, '-'); i > 0 {
			e.Time, _ = time.Parse(auditTimeLayout, k[:i])
		}
		out = append(out, e)
	}
	return out, nil
}

// PruneAudit deletes the oldest audit entries so that at most keep remain,
// and returns how many it deleted. The audit log otherwise grows without
// bound; callers decide the retention.
func PruneAudit(ctx context.Context, st Store, keep int) (int, error) {
	if keep < 0 {
		keep = 0
	}
	keys, err := st.List(ctx, NSAudit, "")
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	n := 0
	for i := 0; i < len(keys)-keep; i++ {
		if err := st.Delete(ctx, NSAudit, keys[i]); err != nil && !errors.Is(err, ErrNotFound) {
			return n, fmt.Errorf("audit: prune: %w", err)
		}
		n++
	}
	return n, nil
}

package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	// Refused files the event under NSAuditRefused (a request refused
	// before any session or token), pruned apart from the rest.
	Refused bool
}

// AppendAuditBatch appends several events as AppendAudit does, in one
// store transaction per namespace (NSAudit, and NSAuditRefused for the
// refused items): a busy server pays one commit for many events. Each
// entry's key carries its item's time; items given in order keep that
// order in the log, even with equal times (later ones get a nanosecond
// more). A namespace's write that fails is tried once more (a batch holds
// many events, so a transient store error should not cost them all); one
// that was written is not written again.
func AppendAuditBatch(ctx context.Context, st Store, items []AuditItem) error {
	var main, refused []AuditItem
	for _, it := range items {
		if it.Refused {
			refused = append(refused, it)
		} else {
			main = append(main, it)
		}
	}
	var errs []error
	for _, b := range []struct {
		ns    string
		items []AuditItem
	}{{NSAudit, main}, {NSAuditRefused, refused}} {
		err := appendAudit(ctx, st, b.ns, b.items)
		if err != nil {
			err = appendAudit(ctx, st, b.ns, b.items)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// appendAudit appends items to the audit namespace ns in one batch.
func appendAudit(ctx context.Context, st Store, ns string, items []AuditItem) error {
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
		written, err := st.PutBatch(ctx, ns, pending, false)
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

// ListAudit returns the newest limit audit entries (all if limit <= 0) of
// both audit namespaces (NSAudit and NSAuditRefused), merged in
// chronological order (oldest first).
func ListAudit(ctx context.Context, st Store, limit int) ([]AuditEntry, error) {
	type ref struct{ ns, key string }
	var refs []ref
	for _, ns := range []string{NSAudit, NSAuditRefused} {
		keys, err := st.List(ctx, ns, "")
		if err != nil {
			return nil, fmt.Errorf("audit: list: %w", err)
		}
		for _, k := range keys {
			refs = append(refs, ref{ns, k})
		}
	}
	// Keys start with their UTC time in a fixed-width layout: byte order
	// is time order across both namespaces.
	slices.SortFunc(refs, func(a, b ref) int { return strings.Compare(a.key, b.key) })
	if limit > 0 && len(refs) > limit {
		refs = refs[len(refs)-limit:]
	}
	out := make([]AuditEntry, 0, len(refs))
	for _, r := range refs {
		v, err := st.Get(ctx, r.ns, r.key)
		if errors.Is(err, ErrNotFound) {
			continue // pruned concurrently
		}
		if err != nil {
			return nil, fmt.Errorf("audit: read entry: %w", err)
		}
		e := AuditEntry{Key: r.key, Event: json.RawMessage(v)}
		if i := strings.IndexByte(r.key, '-'); i > 0 {
			e.Time, _ = time.Parse(auditTimeLayout, r.key[:i])
		}
		out = append(out, e)
	}
	return out, nil
}

// PruneAudit deletes the oldest entries of NSAudit so that at most keep
// remain, and returns how many it deleted. The audit log otherwise grows
// without bound; callers decide the retention.
func PruneAudit(ctx context.Context, st Store, keep int) (int, error) {
	return pruneAudit(ctx, st, NSAudit, keep)
}

// PruneRefusedAudit is PruneAudit for NSAuditRefused.
func PruneRefusedAudit(ctx context.Context, st Store, keep int) (int, error) {
	return pruneAudit(ctx, st, NSAuditRefused, keep)
}

// pruneBatch bounds one delete transaction.
const pruneBatch = 4096

func pruneAudit(ctx context.Context, st Store, ns string, keep int) (int, error) {
	keep = max(keep, 0)
	keys, err := st.List(ctx, ns, "")
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	old := keys[:max(len(keys)-keep, 0)]
	n := 0
	for len(old) > 0 {
		chunk := old[:min(len(old), pruneBatch)]
		if err := st.DeleteBatch(ctx, ns, chunk); err != nil {
			return n, fmt.Errorf("audit: prune: %w", err)
		}
		n += len(chunk)
		old = old[len(chunk):]
	}
	return n, nil
}

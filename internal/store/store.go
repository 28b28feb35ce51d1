package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Get and Delete for a missing key.
var ErrNotFound = errors.New("not found")

// Namespaces used by coffer-kbs.
const (
	NSResources      = "resources"          // repo/type/tag -> bytes
	NSAttestPolicies = "attestation-policy" // policy id -> rego
	NSResourcePolicy = "resource-policy"    // "policy" -> rego
	NSReferenceValue = "reference-value"    // name -> JSON record
	NSAudit          = "audit"              // time-ordered key -> JSON event
	// NSAuditRefused holds the audit records of requests refused before
	// any session or token was established (anyone can send those), so
	// that a flood of them, pruned on its own, never pushes the records
	// of attestations, releases and admin calls out of NSAudit.
	NSAuditRefused = "audit-refused"
)

// KV is one key and value for PutBatch.
type KV struct {
	Key   string
	Value []byte
}

// Store is a namespaced key-value store. Implementations are safe for
// concurrent use; a Put that returned nil survives a restart (for
// persistent implementations).
type Store interface {
	Get(ctx context.Context, ns, key string) ([]byte, error)
	// Put writes value; with overwrite=false an existing key is kept and
	// (false, nil) returned.
	Put(ctx context.Context, ns, key string, value []byte, overwrite bool) (written bool, err error)
	// PutBatch writes every kvs[i] with Put's overwrite rule, all in one
	// transaction (for persistent stores: one fsync); written[i] tells
	// whether kvs[i] was written. Either every write that was due happens
	// or none does.
	PutBatch(ctx context.Context, ns string, kvs []KV, overwrite bool) (written []bool, err error)
	Delete(ctx context.Context, ns, key string) error
	// DeleteBatch removes every key of keys from ns in one transaction
	// (for persistent stores: one fsync); keys that do not exist are
	// skipped.
	DeleteBatch(ctx context.Context, ns string, keys []string) error
	// List returns the keys in ns that start with prefix, sorted.
	List(ctx context.Context, ns, prefix string) ([]string, error)
	Close() error
}

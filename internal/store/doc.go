// Package store owns coffer-kbs persistence: the namespaced key-value
// Store interface, its embedded bbolt implementation (one file, one bucket
// per namespace, every commit fsync'd), an in-memory implementation for
// tests, key validation shared by all implementations, and the append-only
// audit log kept in the NSAudit namespace.
//
// Keys use Trustee's key-value charset [A-Za-z0-9-_./], at most MaxKeyLen
// bytes, and are '/'-separated paths without empty, "." or ".." segments,
// so that a key can never name a location outside its namespace in any
// backend (including future file- or URL-based ones).
package store

// Package server is coffer-kbs: the relying party that speaks the
// Confidential Containers (Trustee) KBS protocol v0.4.0. It owns the HTTP
// API (guest RCAR endpoints, resource release, admin endpoints, metrics,
// health), sessions, admin authentication and authorization, the audit
// log, and wires the attestation service, reference values, policies and
// the resource store together.
package server

// Package rvps is coffer-kbs's Reference Value Provider Service: it accepts
// reference values in Trustee's RVPS message format, stores them
// persistently (store.NSReferenceValue) as records with an expiration, and
// answers queries from the appraisal policy's query_reference_value builtin.
//
// Message format (Trustee RVPS, version 0.1.0):
//
//	{"version":"0.1.0","type":"sample","payload":"<std base64 of {name: value, ...}>"}
//
// Only the "sample" type is supported (Trustee's "swid" and "corim" are
// refused with a clear error). Each entry becomes a Record
// {"version":"0.1.0","name":…,"expiration":"<RFC 3339>","value":…} stored
// under its name, overwriting any previous value. Names are store keys
// (charset [A-Za-z0-9-_./]).
//
// Coffer extension: an optional top-level "expiration" (RFC 3339) applies to
// every entry of the message; without it entries expire 12 months after
// registration (as in Trustee), or after the validity set with
// WithValidity.
//
// Unlike Trustee (whose query ignores the expiration), Query enforces it:
// an expired value is reported as absent. Get still returns the record,
// with Expired set, so operators can see why a value stopped matching.
package rvps

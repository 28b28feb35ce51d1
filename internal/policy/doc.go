// Package policy owns Coffer's Rego policy engine: a wrapper over the OPA Go
// library used by coffer-kbs for attestation appraisal (EAR trust vectors)
// and resource release, plus the built-in default policies and their
// installation into the store.
//
// Policies are Rego modules with `package policy`, in either Rego v0 syntax
// (`allow { … }`, `default allow = false`) or v1 syntax (`allow if { … }`,
// `import rego.v1`): Compile tries v1 first, then v0, and reports parse and
// compile errors with line numbers. Every compiled query is prepared once
// (rego.PreparedEvalQuery) and reused for each evaluation; a Policy is
// safe for concurrent use.
//
// Policies may call the custom builtin query_reference_value(id), which
// returns the reference value registered under id (any JSON) or null,
// served by the function given with WithReferenceValues (normally
// rvps.Service.Query).
//
// Appraisal (EvaluateAppraisal) follows Trustee's attestation service:
// data.policy.trust_claims maps AR4SI claim names to integers in
// −127..127, data.policy.extensions is an optional array of
// {"name","key","value"}, and the EAR status is the worst tier of the
// vector. Resource release (EvaluateAllow) follows Trustee's KBS:
// data.policy.allow must be true, with input = token claims and
// data = {"plugin", "resource-path", "query"}.
//
// Every denial says why: the policy's own data.policy.deny_reasons (or
// data.policy.reasons) set of strings when it defines one, otherwise an
// explanation derived from an evaluation trace naming, for each allow rule,
// the line and text of the condition that failed. Appraisals that are not
// affirming likewise name the claims and the conditions that kept them
// from their affirming value, and the reference values that were looked up
// but are not registered (or have expired).
package policy

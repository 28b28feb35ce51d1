// Package ear owns the attestation token coffer-kbs issues: an EAR
// (Entity Attestation Result, draft-ietf-rats-ear) claims set signed as an
// ES256 JWT, shaped exactly like the one Trustee's attestation service
// issues, so Trustee resource policies and guests accept it unchanged.
//
// It provides:
//
//   - Claims, Appraisal (one per submod: cpu0, gpu0, …), VerifierID and
//     TrustVector, with the EAR member names (eat_profile, iat, exp, iss,
//     ear.verifier-id, submods, ear.status, ear.trustworthiness-vector,
//     ear.appraisal-policy-id, ear.veraison.annotated-evidence,
//     ear.trustee.identifiers). Unknown appraisal members (policy-produced
//     extensions) are preserved in Appraisal.Extensions.
//   - Coffer's one addition, submods.<name>["coffer.simulated"] = true,
//     present only when the evidence came from the simulated TEE, so
//     policies can refuse simulated guests (see MemberSimulated).
//   - AR4SI trust-tier math identical to veraison/rust-ear: Tier maps a
//     claim value to none/affirming/warning/contraindicated and Status is
//     the worst tier of the vector.
//   - Signer (ES256 over P-256; ephemeral, or a PEM key file, optionally
//     created on first use). The header is {"alg":"ES256","jwk":{…,
//     "alg":"ES256"},"typ":"JWT"}: the jwk carries "alg" because Trustee's
//     KBS derives the verification algorithm from it.
//   - Verifier: signature against configured trusted keys (optionally, for
//     development, the header jwk — Trustee's insecure_header_jwk), only
//     ES256 accepted, exp/iat/nbf checked with a 60 s leeway.
//   - FindTeePubKey: Trustee's JSON-pointer search for the TEE public key in
//     verified claims.
//
// It does no I/O besides reading or creating the signing key file.
package ear

// Package attestation owns the relying party's evidence verification: the
// Verifier interface and one verifier per TEE, each returning Trustee's
// claims for that TEE or a *CheckError naming the check that failed.
//
//   - NewSampleVerifier: Trustee's "sample" TEE (report-data binding only).
//   - NewSNPVerifier: AMD SEV-SNP evidence (Trustee's format, see
//     tee.SNPEvidence) checked with go-sev-guest against AMD's roots, and
//     against simulated roots (tee/sim) only when configured; claims from a
//     simulated chain carry "simulated": true.
//
// Appraisal (policies, EAR tokens) lives in subpackages.
package attestation

// Package tee owns the guest side of attestation: attesters that produce
// TEE evidence bound to the relying party's report data, in the exact
// formats Trustee's verifiers and guest-components' attesters use.
//
//   - Sample: Trustee's "sample" TEE ({"svn","report_data"}), test only.
//   - SNP: real AMD SEV-SNP guests, through configfs-tsm or /dev/sev-guest.
//   - SimSNP: SEV-SNP evidence from a simulated secure processor (tee/sim),
//     reached through the SNPReportProvider interface.
//
// Detect picks the attester for the running platform. The SNP evidence
// format (SNPEvidence and friends) lives here too, because the guest writes
// it and the relying party's verifier (internal/attestation) reads it.
package tee

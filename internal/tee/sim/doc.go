// Package sim is a simulated AMD SEV-SNP secure processor for development
// and CI on machines without SEV-SNP hardware.
//
// A Processor is one simulated chip. It owns a key chain structured like
// AMD's: an ARK (RSA-4096, self-signed, RSASSA-PSS SHA-384), an ASK signed
// by it, and a VCEK (ECDSA P-384) signed by the ASK and carrying the AMD
// KDS X.509 extensions (struct version, product name, bootloader/TEE/SNP/
// microcode security patch levels, hwID = CHIP_ID). Names, key usages and
// CRL links are AMD's, so go-sev-guest's verify package accepts the chain —
// but only if a verifier is explicitly told to trust this ARK/ASK
// (RootCertsPEM); the real AMD roots never sign it.
//
// A host launches simulated guests (Launch) with a MEASUREMENT, HOST_DATA
// and guest POLICY; a Guest then produces ATTESTATION_REPORTs (SEV-SNP ABI
// layout, signature algorithm ECDSA P-384 with SHA-384, r/s little-endian)
// for the REPORT_DATA the guest asks for, plus the certificate table an
// extended report carries. Guest implements tee.SNPReportProvider.
//
// Chains can be generated fresh (New; two RSA-4096 key generations take a
// second or more) or persisted for a long-lived development relying party
// (Save, Load, LoadOrCreate).
package sim

package attestation

import (
	"context"
	"encoding/json"
)

// TEE classes, as Trustee names them; submodule names in the EAR token are
// <class><index> (cpu0, gpu0, ...).
const (
	ClassCPU = "cpu"
	ClassGPU = "gpu"
)

// VerifyInput is what a verifier checks.
type VerifyInput struct {
	// Evidence is the TEE's evidence JSON exactly as the guest sent it
	// (tee-evidence.primary_evidence, or one entry of additional_evidence).
	Evidence json.RawMessage
	// ReportData is the expected binding: SHA-384 over the JCS of the
	// runtime data (48 bytes). Each verifier compares it against its
	// report-data field with its own padding rule (sample: exact bytes;
	// SNP: zero-padded to 64 bytes).
	ReportData []byte
	// InitDataDigest, when the guest sent init-data, is the digest of the
	// raw TOML with the algorithm it names; verifiers compare it with their
	// host-data field (SNP HOST_DATA, zero-padded/truncated to 32 bytes).
	InitDataDigest []byte
}

// Claims are a verifier's output for one TEE: the map that becomes the
// "<tee-name>" member of the EAR annotated evidence (Trustee's TCB claims),
// plus report_data (hex for hardware TEEs, base64 for sample) and, when
// init data was checked, init_data (hex).
type Claims map[string]any

// Verifier checks evidence of one TEE type.
type Verifier interface {
	// Tee is the Trustee TEE name this verifier handles ("sample", "snp").
	Tee() string
	// Class is the TEE class (ClassCPU for sample and snp).
	Class() string
	// Verify checks the evidence and its binding to in.ReportData (and
	// in.InitDataDigest if set). A failed check returns a *CheckError that
	// names the check; malformed evidence returns a *CheckError too.
	Verify(ctx context.Context, in VerifyInput) (Claims, error)
}

// CheckError is a verification failure with the name of the check that
// failed (e.g. "report-signature", "vcek-chain", "report-data-binding",
// "debug-policy", "evidence-format"), for error details and the audit log.
type CheckError struct {
	Check  string
	Detail string
}

func (e *CheckError) Error() string { return e.Check + ": " + e.Detail }

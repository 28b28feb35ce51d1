package attestation

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// MaxSampleEvidenceBytes bounds sample evidence (it is ~100 bytes).
const MaxSampleEvidenceBytes = 16 << 10

// sampleEvidence mirrors Trustee's SampleTeeEvidence: svn is required,
// report_data defaults to "".
type sampleEvidence struct {
	SVN        *string `json:"svn"`
	ReportData string  `json:"report_data"`
}

type sampleVerifier struct{}

// NewSampleVerifier returns the verifier of Trustee's "sample" TEE. It
// checks nothing but the report-data binding (there is no hardware and no
// signature), exactly as Trustee's sample verifier: report_data must
// base64-decode to exactly VerifyInput.ReportData (no padding). Its claims
// are Trustee's fixed sample claims; the default relying-party policies
// refuse them outside development.
func NewSampleVerifier() Verifier { return sampleVerifier{} }

func (sampleVerifier) Tee() string   { return "sample" }
func (sampleVerifier) Class() string { return ClassCPU }

func (sampleVerifier) Verify(ctx context.Context, in VerifyInput) (Claims, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(in.Evidence) > MaxSampleEvidenceBytes {
		return nil, &CheckError{Check: "evidence-format", Detail: fmt.Sprintf("sample evidence is %d bytes, more than the %d byte limit", len(in.Evidence), MaxSampleEvidenceBytes)}
	}
	var ev sampleEvidence
	dec := json.NewDecoder(bytes.NewReader(in.Evidence))
	if err := dec.Decode(&ev); err != nil {
		return nil, &CheckError{Check: "evidence-format", Detail: fmt.Sprintf(`sample evidence is not {"svn":"…","report_data":"<base64>"}: %v`, err)}
	}
	if len(bytes.TrimSpace(in.Evidence[dec.InputOffset():])) != 0 {
		return nil, &CheckError{Check: "evidence-format", Detail: "sample evidence has trailing data after the JSON object"}
	}
	if ev.SVN == nil {
		return nil, &CheckError{Check: "evidence-format", Detail: `sample evidence has no "svn" string`}
	}
	if len(in.ReportData) == 0 {
		return nil, &CheckError{Check: "report-data-binding", Detail: "no expected report data was given to the verifier (caller bug: the runtime-data digest must always be checked)"}
	}
	got, err := base64.StdEncoding.Strict().DecodeString(ev.ReportData)
	if err != nil {
		return nil, &CheckError{Check: "evidence-format", Detail: fmt.Sprintf("sample report_data is not standard base64: %v", err)}
	}
	if len(got) != len(in.ReportData) || subtle.ConstantTimeCompare(got, in.ReportData) != 1 {
		return nil, &CheckError{Check: "report-data-binding", Detail: "sample report_data does not match the digest of this session's runtime data (nonce and tee-pubkey): the evidence was made for another session or key"}
	}
	claims := Claims{
		"svn":              *ev.SVN,
		"report_data":      ev.ReportData,
		"launch_digest":    "abcde",
		"platform_version": map[string]any{"major": 1, "minor": 4},
		"debug":            false,
	}
	if in.InitDataDigest != nil {
		// Trustee does not check init data for sample either; it only
		// reports it, base64-encoded.
		claims["init_data"] = base64.StdEncoding.EncodeToString(in.InitDataDigest)
	}
	return claims, nil
}

package tee

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// TEE names as Trustee (kbs-types) spells them.
const (
	TeeSample = "sample"
	TeeSNP    = "snp"
)

// SampleEvidence is the evidence of Trustee's "sample" TEE, exactly as
// guest-components' sample attester emits it: no hardware, no signature,
// for protocol tests only.
type SampleEvidence struct {
	SVN string `json:"svn"`
	// ReportData is the standard (padded) base64 of the report data as
	// given, not padded to any field size.
	ReportData string `json:"report_data"`
}

// Sample is the attester of the "sample" TEE. It proves nothing: the KBS's
// default policies refuse it outside development.
type Sample struct{}

// NewSample returns the sample attester.
func NewSample() *Sample { return &Sample{} }

// Tee implements Attester.
func (*Sample) Tee() string { return TeeSample }

// Evidence implements Attester: {"svn":"1","report_data":"<base64>"}.
func (*Sample) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out, err := json.Marshal(SampleEvidence{SVN: "1", ReportData: base64.StdEncoding.EncodeToString(reportData)})
	if err != nil {
		return nil, fmt.Errorf("encode sample evidence: %w", err)
	}
	return out, nil
}

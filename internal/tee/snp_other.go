//go:build !linux

package tee

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/google/go-sev-guest/abi"
)

// SNP is the attester of a real AMD SEV-SNP guest; only Linux guests are
// supported.
type SNP struct {
	dev    string
	tsmDir string
}

// NewSNP returns the hardware SNP attester.
func NewSNP() *SNP { return &SNP{dev: SevGuestDevice, tsmDir: TSMReportDir} }

// Tee implements Attester.
func (*SNP) Tee() string { return TeeSNP }

// Evidence implements Attester.
func (s *SNP) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	return snpEvidence(ctx, s, reportData)
}

// GetExtendedReport implements SNPReportProvider.
func (*SNP) GetExtendedReport(context.Context, [abi.ReportDataSize]byte) ([]byte, []byte, error) {
	return nil, nil, errors.New("SEV-SNP attestation needs a Linux guest")
}

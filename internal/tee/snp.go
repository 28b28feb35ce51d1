package tee

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/google/go-sev-guest/abi"
)

// Default locations of the SEV-SNP guest interfaces.
const (
	// sevGuestSysfs is what guest-components' snp::detect_platform checks:
	// the kernel registers this platform device in every SNP guest.
	sevGuestSysfs = "/sys/devices/platform/sev-guest"
	// SevGuestDevice is the sev-guest driver's character device.
	SevGuestDevice = "/dev/sev-guest"
	// TSMReportDir is the configfs-tsm report directory (Linux 6.7+).
	TSMReportDir = "/sys/kernel/config/tsm/report"
)

// SNPReportProvider is a source of SEV-SNP extended attestation reports:
// the guest's AMD secure processor (SNP, via configfs-tsm or
// /dev/sev-guest) or a simulated one (package tee/sim; in-process today,
// later reached over the agent channel).
type SNPReportProvider interface {
	// GetExtendedReport returns a raw ATTESTATION_REPORT (abi.ReportSize
	// bytes) whose REPORT_DATA is reportData, signed by the chip's VCEK,
	// and the GHCB certificate table the host provided (empty if none).
	GetExtendedReport(ctx context.Context, reportData [abi.ReportDataSize]byte) (report, certTable []byte, err error)
}

// snpEvidence asks p for a report bound to reportData and encodes it in
// Trustee's SNP evidence format.
func snpEvidence(ctx context.Context, p SNPReportProvider, reportData []byte) (json.RawMessage, error) {
	if len(reportData) > abi.ReportDataSize {
		return nil, fmt.Errorf("SNP report data is %d bytes; the REPORT_DATA field holds at most %d", len(reportData), abi.ReportDataSize)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var rd [abi.ReportDataSize]byte
	copy(rd[:], reportData)
	report, certs, err := p.GetExtendedReport(ctx, rd)
	if err != nil {
		return nil, fmt.Errorf("get SNP attestation report: %w", err)
	}
	if len(report) < abi.ReportSize {
		return nil, fmt.Errorf("SNP secure processor returned a %d byte report, want %d", len(report), abi.ReportSize)
	}
	if !bytes.Equal(report[0x50:0x90], rd[:]) {
		return nil, errors.New("SNP secure processor returned a report whose REPORT_DATA is not the requested one; refusing to send it")
	}
	ev, err := NewSNPEvidence(report[:abi.ReportSize], certs)
	if err != nil {
		return nil, fmt.Errorf("encode SNP evidence: %w", err)
	}
	out, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode SNP evidence: %w", err)
	}
	return out, nil
}

// SimSNP is the attester for a simulated SEV-SNP guest: the report comes
// from a simulated secure processor. Its evidence is ordinary SNP evidence
// (TEE name "snp"): only a verifier that was told to trust the simulated
// root accepts it, and it then marks the claims as simulated.
type SimSNP struct {
	p SNPReportProvider
}

// NewSimSNP returns an attester that takes reports from p, e.g. a
// *sim.Guest.
func NewSimSNP(p SNPReportProvider) *SimSNP { return &SimSNP{p: p} }

// Tee implements Attester.
func (*SimSNP) Tee() string { return TeeSNP }

// Evidence implements Attester.
func (s *SimSNP) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	if s.p == nil {
		return nil, errors.New("simulated SNP attester has no secure processor: construct it with NewSimSNP(provider)")
	}
	return snpEvidence(ctx, s.p, reportData)
}

// platform holds the paths Detect probes (tests point them elsewhere).
type platform struct {
	sevGuestSysfs string
	sevGuestDev   string
	tsmReport     string
}

func defaultPlatform() platform {
	return platform{sevGuestSysfs: sevGuestSysfs, sevGuestDev: SevGuestDevice, tsmReport: TSMReportDir}
}

// Detect returns the attester for the platform this process runs on,
// following guest-components' detection order restricted to the TEEs
// Coffer supports: SEV-SNP when the guest has the sev-guest device,
// otherwise the sample attester (with a warning, as upstream does).
func Detect() Attester {
	return detect(defaultPlatform(), slog.Default())
}

func detect(p platform, log *slog.Logger) Attester {
	if exists(p.sevGuestSysfs) || exists(p.sevGuestDev) {
		log.Info("TEE detected", "tee", TeeSNP)
		return &SNP{dev: p.sevGuestDev, tsmDir: p.tsmReport}
	}
	log.Warn("no supported TEE detected; using the sample attester, whose evidence proves nothing and is refused by non-dev relying parties",
		"tee", TeeSample)
	return NewSample()
}

func exists(path string) bool {
	if path == "" {
		return false
	}
	_, err := os.Stat(path)
	return err == nil
}

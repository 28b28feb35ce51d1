package tee

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
)

// SNP is the attester of a real AMD SEV-SNP guest. It asks the secure
// processor for an extended report through configfs-tsm when the kernel
// has it (/sys/kernel/config/tsm/report), otherwise through the sev-guest
// driver's /dev/sev-guest ioctl, and emits Trustee's SNP evidence.
type SNP struct {
	dev    string
	tsmDir string
	// tsm, when set, replaces the Linux configfs client (tests).
	tsm configfsi.Client
}

// NewSNP returns the hardware SNP attester with the default device paths.
func NewSNP() *SNP { return &SNP{dev: SevGuestDevice, tsmDir: TSMReportDir} }

// Tee implements Attester.
func (*SNP) Tee() string { return TeeSNP }

// Evidence implements Attester.
func (s *SNP) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	return snpEvidence(ctx, s, reportData)
}

// GetExtendedReport implements SNPReportProvider with the guest's
// secure processor (VMPL 0 / the kernel's default privilege level).
func (s *SNP) GetExtendedReport(ctx context.Context, reportData [abi.ReportDataSize]byte) ([]byte, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	dev, tsmDir := s.dev, s.tsmDir
	if dev == "" {
		dev = SevGuestDevice
	}
	if tsmDir == "" {
		tsmDir = TSMReportDir
	}
	if s.tsm != nil || exists(tsmDir) {
		return s.configfsReport(tsmDir, reportData)
	}
	if !exists(dev) {
		return nil, nil, fmt.Errorf("neither %s nor %s exists: this is not an SEV-SNP guest, or the sev-guest driver is not loaded (modprobe sev-guest)", tsmDir, dev)
	}
	raw, err := (&client.LinuxIoctlQuoteProvider{}).GetRawQuote(reportData)
	if err != nil {
		return nil, nil, fmt.Errorf("SNP_GET_EXT_REPORT ioctl on %s: %w", dev, err)
	}
	if len(raw) < abi.ReportSize {
		return nil, nil, fmt.Errorf("%s returned %d bytes, less than a report", dev, len(raw))
	}
	return raw[:abi.ReportSize], raw[abi.ReportSize:], nil
}

func (s *SNP) configfsReport(tsmDir string, reportData [abi.ReportDataSize]byte) ([]byte, []byte, error) {
	c := s.tsm
	if c == nil {
		var err error
		if c, err = linuxtsm.MakeClient(); err != nil {
			return nil, nil, fmt.Errorf("open configfs-tsm at %s: %w", tsmDir, err)
		}
	}
	resp, err := tsmGet(c, reportData, true)
	if err != nil {
		// Some kernels fail the auxblob read when the host supplied no
		// certificates; the report alone is still usable with a VCEK cache
		// on the verifier side.
		var errNoAux error
		if resp, errNoAux = tsmGet(c, reportData, false); errNoAux != nil {
			return nil, nil, fmt.Errorf("configfs-tsm report: %w", errors.Join(err, errNoAux))
		}
	}
	if p := strings.TrimSpace(resp.Provider); p != "sev_guest" {
		return nil, nil, fmt.Errorf("configfs-tsm provider is %q, not sev_guest: this guest is not an SEV-SNP guest", p)
	}
	return resp.OutBlob, resp.AuxBlob, nil
}

func tsmGet(c configfsi.Client, reportData [abi.ReportDataSize]byte, aux bool) (resp *report.Response, err error) {
	r, err := report.Create(c, &report.Request{InBlob: reportData[:], GetAuxBlob: aux})
	if err != nil {
		return nil, fmt.Errorf("create report entry: %w", err)
	}
	defer func() {
		if derr := r.Destroy(); derr != nil && err == nil {
			err = fmt.Errorf("remove report entry: %w", derr)
		}
	}()
	return r.Get()
}

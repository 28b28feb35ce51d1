package tee

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	labi "github.com/google/go-sev-guest/client/linuxabi"
	"golang.org/x/sys/unix"
)

// SNP is the attester of a real AMD SEV-SNP guest. It asks the secure
// processor for an extended report through configfs-tsm when the kernel
// has it (/sys/kernel/config/tsm/report), otherwise through the sev-guest
// driver's ioctl on dev (/dev/sev-guest), and emits Trustee's SNP evidence.
type SNP struct {
	// dev is the sev-guest device the ioctl path opens.
	dev string
	// tsmDir decides whether configfs-tsm is used (it exists). The report
	// itself goes through go-configfs-tsm, whose paths are fixed under
	// /sys/kernel/config/tsm: a tsmDir elsewhere only works with tsm set.
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
	return ioctlReport(dev, reportData)
}

// ioctlDevice is go-sev-guest's Linux sev-guest device that remembers the
// error of its last ioctl (go-sev-guest's helpers flatten it into text).
type ioctlDevice struct {
	client.LinuxDevice
	lastErr error
}

func (d *ioctlDevice) Ioctl(command uintptr, req any) (uintptr, error) {
	r, err := d.LinuxDevice.Ioctl(command, req)
	d.lastErr = err
	if cerr := checkCertsLength(req); cerr != nil {
		return r, cerr
	}
	return r, err
}

// maxSNPCertsLength bounds the certificate table the host may announce for
// an extended report (VCEK, ASK and ARK take a few KiB). go-sev-guest
// allocates whatever length the host reports (up to 4 GiB) for its second
// request; refusing a larger one makes the extended request fail, and the
// plain report (no certificates) is used instead.
const maxSNPCertsLength = 64 << 10

// checkCertsLength refuses an extended report request whose certificate
// length, as the host set it, is over maxSNPCertsLength.
func checkCertsLength(req any) error {
	g, ok := req.(*labi.SnpUserGuestRequest)
	if !ok {
		return nil
	}
	x, ok := g.ReqData.(*labi.SnpExtendedReportReq)
	if !ok || x.CertsLength <= maxSNPCertsLength {
		return nil
	}
	n := x.CertsLength
	// message() would report a firmware error code in preference to ours.
	g.FwErr = 0
	x.CertsLength = 0
	return fmt.Errorf("the host announced a %d-byte SEV-SNP certificate table, over the %d-byte limit", n, maxSNPCertsLength)
}

// ioctlReport gets an extended report (VMPL 0) from the sev-guest device
// at dev. go-sev-guest's QuoteProvider would open the path of its global
// -sev_guest_device_path flag (default /dev/sev-guest) whatever dev is, so
// the device is opened here and go-sev-guest's Device-level calls are used.
// Like go-sev-guest's provider, a host that does not answer the extended
// request still gives the plain report (no certificates: the verifier then
// needs its VCEK cache). go-sev-guest spaces its ioctls on one device by
// 2 s (its -self_throttle_duration flag), so a report takes ~2 s here.
func ioctlReport(dev string, reportData [abi.ReportDataSize]byte) ([]byte, []byte, error) {
	fi, err := os.Stat(dev)
	if err != nil {
		return nil, nil, fmt.Errorf("SEV-SNP guest device: %w", err)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return nil, nil, fmt.Errorf("SEV-SNP guest device %s is not a character device (mode %s): configure the sev-guest driver's device", dev, fi.Mode())
	}
	d := &ioctlDevice{}
	if err := d.Open(dev); err != nil {
		return nil, nil, fmt.Errorf("open the SEV-SNP guest device: %w", err)
	}
	defer d.Close()
	//lint:ignore SA1019 the non-deprecated QuoteProvider API cannot be given a device path
	report, certs, err := client.GetRawExtendedReportAtVmpl(d, reportData, 0)
	if errors.Is(d.lastErr, unix.ENOTTY) {
		return nil, nil, fmt.Errorf("%s does not answer SEV-SNP guest requests (%v): either it is not the sev-guest device, or the sev-guest driver has disabled its VMPCK key after a failed guest request (the kernel log says \"disabling vmpck\"; the host can cause this, and only a reboot of the guest restores it)", dev, d.lastErr)
	}
	if err != nil {
		var errPlain error
		//lint:ignore SA1019 as above
		if report, errPlain = client.GetRawReportAtVmpl(d, reportData, 0); errPlain != nil {
			return nil, nil, fmt.Errorf("SNP_GET_EXT_REPORT and SNP_GET_REPORT ioctls on %s: %w", dev, errors.Join(err, errPlain))
		}
		certs = nil
	}
	if len(report) < abi.ReportSize {
		return nil, nil, fmt.Errorf("%s returned %d bytes, less than a report", dev, len(report))
	}
	return report[:abi.ReportSize], certs, nil
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

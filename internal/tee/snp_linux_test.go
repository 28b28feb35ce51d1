package tee

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	labi "github.com/google/go-sev-guest/client/linuxabi"
)

// The ioctl path uses the configured device, not go-sev-guest's default
// /dev/sev-guest: every failure names the configured path. (No test
// machine has an SEV-SNP guest device; the success path is covered by
// the configfs-tsm and simulated tests.)
func TestSNPConfiguredDevicePath(t *testing.T) {
	dir := t.TempDir()
	noTSM := filepath.Join(dir, "no-tsm")
	var rd [64]byte

	// Missing: the error names the configured device.
	missing := filepath.Join(dir, "custom-sev-guest")
	_, _, err := (&SNP{dev: missing, tsmDir: noTSM}).GetExtendedReport(context.Background(), rd)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "not an SEV-SNP guest") {
		t.Errorf("missing device: %v, want an error naming %s", err, missing)
	}

	// Not a device.
	file := filepath.Join(dir, "sev-guest-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = (&SNP{dev: file, tsmDir: noTSM}).GetExtendedReport(context.Background(), rd)
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "not a character device") {
		t.Errorf("regular file: %v, want an error naming %s as not a character device", err, file)
	}

	// A character device that is not sev-guest: opened (the path reached
	// the ioctl) and refused at once, without mentioning /dev/sev-guest.
	if _, err := os.Stat("/dev/null"); err != nil {
		t.Skip("no /dev/null")
	}
	_, _, err = (&SNP{dev: "/dev/null", tsmDir: noTSM}).GetExtendedReport(context.Background(), rd)
	if err == nil || !strings.Contains(err.Error(), "/dev/null does not answer SEV-SNP guest requests") || strings.Contains(err.Error(), SevGuestDevice) {
		t.Errorf("/dev/null: %v, want an error naming /dev/null as not the sev-guest device", err)
	}
}

// The host decides how long a certificate table it announces, and
// go-sev-guest allocates that much for its next request: over
// maxSNPCertsLength the extended request fails (the plain report is used)
// with our error, not a firmware code.
func TestSNPCertsLengthBounded(t *testing.T) {
	ext := &labi.SnpExtendedReportReq{CertsLength: 1 << 30}
	req := &labi.SnpUserGuestRequest{ReqData: ext, FwErr: 0x1234}
	if err := checkCertsLength(req); err == nil || !strings.Contains(err.Error(), "1073741824-byte") {
		t.Fatalf("a 1 GiB certificate table: %v", err)
	}
	if req.FwErr != 0 || ext.CertsLength != 0 {
		t.Errorf("after the refusal: FwErr %#x, CertsLength %d; want both 0", req.FwErr, ext.CertsLength)
	}
	ok := &labi.SnpUserGuestRequest{ReqData: &labi.SnpExtendedReportReq{CertsLength: 4096}}
	if err := checkCertsLength(ok); err != nil {
		t.Errorf("a 4 KiB table: %v", err)
	}
	plain := &labi.SnpUserGuestRequest{ReqData: &labi.SnpReportReqABI{}}
	if err := checkCertsLength(plain); err != nil {
		t.Errorf("a plain report request: %v", err)
	}
}

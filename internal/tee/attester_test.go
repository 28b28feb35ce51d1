package tee

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/uuid"

	"github.com/coffer-project/coffer/internal/tee/sim"
)

func mustUUID(s string) uuid.UUID { return uuid.MustParse(s) }

var (
	chipOnce sync.Once
	chip     *sim.Processor
	chipErr  error
)

func simChip(t testing.TB) *sim.Processor {
	t.Helper()
	chipOnce.Do(func() { chip, chipErr = sim.New(sim.Options{}) })
	if chipErr != nil {
		t.Fatal(chipErr)
	}
	return chip
}

func TestSampleEvidenceExactBytes(t *testing.T) {
	a := NewSample()
	if a.Tee() != "sample" {
		t.Fatal(a.Tee())
	}
	rd := bytes.Repeat([]byte{0xAB}, 48)
	got, err := a.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"svn":"1","report_data":"q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6ur"}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Evidence(ctx, rd); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestSimSNPEvidence(t *testing.T) {
	p := simChip(t)
	g, err := p.Launch(sim.LaunchConfig{HostData: [32]byte{7}})
	if err != nil {
		t.Fatal(err)
	}
	a := NewSimSNP(g)
	if a.Tee() != "snp" {
		t.Fatal(a.Tee())
	}
	rd := bytes.Repeat([]byte{0x11}, 48)
	out, err := a.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := ParseSNPEvidence(out)
	if err != nil {
		t.Fatal(err)
	}
	wantRD := append(bytes.Clone(rd), make([]byte, 16)...)
	if !bytes.Equal(ev.AttestationReport.ReportData, wantRD) {
		t.Errorf("report_data %x", []byte(ev.AttestationReport.ReportData))
	}
	if ev.AttestationReport.HostData[0] != 7 {
		t.Errorf("host_data not from the launch")
	}
	if !bytes.Equal(ev.Cert(SNPCertVCEK), p.VCEK().Raw) || !bytes.Equal(ev.Cert(SNPCertARK), p.ARK().Raw) || !bytes.Equal(ev.Cert(SNPCertASK), p.ASK().Raw) {
		t.Errorf("cert_chain does not carry the chip's VCEK/ASK/ARK")
	}
	raw, _ := ev.AttestationReport.ABIBytes()
	if err := verify.SnpReportSignature(raw, p.VCEK()); err != nil {
		t.Errorf("signature: %v", err)
	}
	if _, err := a.Evidence(context.Background(), make([]byte, 65)); err == nil {
		t.Error("65 bytes of report data accepted")
	}
	if _, err := NewSimSNP(nil).Evidence(context.Background(), rd); err == nil {
		t.Error("nil provider accepted")
	}
}

type lyingProvider struct{ SNPReportProvider }

func (l lyingProvider) GetExtendedReport(ctx context.Context, rd [64]byte) ([]byte, []byte, error) {
	rd[0] ^= 1
	return l.SNPReportProvider.GetExtendedReport(ctx, rd)
}

func TestSNPEvidenceRefusesForeignReportData(t *testing.T) {
	g, _ := simChip(t).Launch(sim.LaunchConfig{})
	if _, err := NewSimSNP(lyingProvider{g}).Evidence(context.Background(), []byte("x")); err == nil || !strings.Contains(err.Error(), "REPORT_DATA") {
		t.Fatalf("err %v", err)
	}
}

// fakeSevTSM emulates the kernel's configfs-tsm report subsystem backed by
// a simulated guest.
func fakeSevTSM(t *testing.T, g *sim.Guest, provider string) configfsi.Client {
	sub := faketsm.ReportV7(0)
	sub.ReadAttr = func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
		var rd [64]byte
		if in, ok := e.InAttrs["inblob"]; ok {
			copy(rd[:], in.Value)
		}
		switch attr {
		case "provider":
			return []byte(provider + "\n"), nil
		case "outblob":
			rep, _, err := g.GetExtendedReport(context.Background(), rd)
			return rep, err
		case "auxblob":
			_, certs, err := g.GetExtendedReport(context.Background(), rd)
			return certs, err
		case "privlevel_floor":
			return []byte("0\n"), nil
		}
		return nil, os.ErrNotExist
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}
}

func TestSNPConfigfsTSM(t *testing.T) {
	p := simChip(t)
	g, _ := p.Launch(sim.LaunchConfig{})
	a := &SNP{tsm: fakeSevTSM(t, g, "sev_guest"), tsmDir: TSMReportDir}
	rd := []byte("bind me")
	out, err := a.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := ParseSNPEvidence(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(ev.AttestationReport.ReportData, rd) || !bytes.Equal(ev.Cert(SNPCertVCEK), p.VCEK().Raw) {
		t.Fatal("configfs evidence does not carry the report data and VCEK")
	}
	raw, _ := ev.AttestationReport.ABIBytes()
	if err := verify.SnpReportSignature(raw, p.VCEK()); err != nil {
		t.Fatalf("signature: %v", err)
	}

	tdx := &SNP{tsm: fakeSevTSM(t, g, "tdx_guest"), tsmDir: TSMReportDir}
	if _, err := tdx.Evidence(context.Background(), rd); err == nil || !strings.Contains(err.Error(), "not an SEV-SNP guest") {
		t.Fatalf("tdx provider: %v", err)
	}
}

func TestSNPWithoutDevice(t *testing.T) {
	dir := t.TempDir()
	a := &SNP{dev: filepath.Join(dir, "sev-guest"), tsmDir: filepath.Join(dir, "tsm")}
	_, err := a.Evidence(context.Background(), []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "not an SEV-SNP guest") {
		t.Fatalf("err %v", err)
	}
	if NewSNP().Tee() != "snp" {
		t.Fatal("tee name")
	}
}

func TestDetect(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := platform{sevGuestSysfs: filepath.Join(dir, "sys-sev-guest"), sevGuestDev: filepath.Join(dir, "dev-sev-guest"), tsmReport: filepath.Join(dir, "tsm")}
	if a := detect(p, log); a.Tee() != "sample" {
		t.Fatalf("no TEE: %s", a.Tee())
	}
	if err := os.Mkdir(p.sevGuestSysfs, 0o755); err != nil {
		t.Fatal(err)
	}
	a := detect(p, log)
	snp, ok := a.(*SNP)
	if !ok || snp.dev != p.sevGuestDev || snp.tsmDir != p.tsmReport {
		t.Fatalf("SNP platform: %T %+v", a, a)
	}
	// This machine is not an SNP guest.
	if _, err := os.Stat(sevGuestSysfs); err != nil {
		if _, err := os.Stat(SevGuestDevice); err != nil {
			if Detect().Tee() != "sample" {
				t.Fatal("Detect on a non-TEE host")
			}
		}
	}
}

func TestSimSNPThroughAttesterInterface(t *testing.T) {
	g, _ := simChip(t).Launch(sim.LaunchConfig{})
	var a Attester = NewSimSNP(g)
	out, err := a.Evidence(context.Background(), []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), `{"attestation_report":{"version":3,`) {
		t.Fatalf("%.60s", out)
	}
}

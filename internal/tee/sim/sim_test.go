package sim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// One generated chain shared by every test: RSA-4096 key generation is
// the slow part.
var (
	sharedOnce sync.Once
	shared     *Processor
	sharedErr  error
)

func chain(t *testing.T) *Processor {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = New(Options{}) })
	if sharedErr != nil {
		t.Fatalf("New: %v", sharedErr)
	}
	return shared
}

// verifyReport runs go-sev-guest's full verification (chain + KDS
// certificate checks + signature) with only p's roots trusted and no
// network.
func verifyReport(t *testing.T, roots []byte, product string, report, vcekDER []byte) error {
	t.Helper()
	root := trust.AMDRootCertsProduct(product)
	if err := root.FromKDSCertBytes(roots); err != nil {
		t.Fatalf("parse roots: %v", err)
	}
	pb, err := abi.ReportToProto(report)
	if err != nil {
		t.Fatalf("ReportToProto: %v", err)
	}
	return verify.SnpAttestation(&spb.Attestation{Report: pb, CertificateChain: &spb.CertificateChain{VcekCert: vcekDER}},
		&verify.Options{DisableCertFetching: true, TrustedRoots: map[string][]*trust.AMDRootCerts{product: {root}}, Now: time.Now()})
}

func TestChainIsStructuredLikeAMDs(t *testing.T) {
	p := chain(t)
	if p.Product() != ProductGenoa {
		t.Fatalf("default product %q, want Genoa", p.Product())
	}
	for _, c := range []struct {
		name string
		cert *x509.Certificate
		cn   string
	}{{"ARK", p.ARK(), "ARK-Genoa"}, {"ASK", p.ASK(), "SEV-Genoa"}} {
		if c.cert.Subject.CommonName != c.cn {
			t.Errorf("%s CN %q, want %q", c.name, c.cert.Subject.CommonName, c.cn)
		}
		if c.cert.SignatureAlgorithm != x509.SHA384WithRSAPSS {
			t.Errorf("%s signature algorithm %v", c.name, c.cert.SignatureAlgorithm)
		}
		if k, ok := c.cert.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 4096 {
			t.Errorf("%s key is not RSA-4096", c.name)
		}
		if !c.cert.IsCA || c.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("%s is not a CA certificate", c.name)
		}
		if len(c.cert.CRLDistributionPoints) != 1 || c.cert.CRLDistributionPoints[0] != "https://kdsintf.amd.com/vcek/v1/Genoa/crl" {
			t.Errorf("%s CRL distribution points %v", c.name, c.cert.CRLDistributionPoints)
		}
		if c.cert.Subject.Organization[0] != "Advanced Micro Devices" || c.cert.Subject.Locality[0] != "Santa Clara" {
			t.Errorf("%s subject %v", c.name, c.cert.Subject)
		}
	}
	if err := p.ARK().CheckSignatureFrom(p.ARK()); err != nil {
		t.Errorf("ARK not self-signed: %v", err)
	}
	if err := p.ASK().CheckSignatureFrom(p.ARK()); err != nil {
		t.Errorf("ASK not signed by ARK: %v", err)
	}
	vcek := p.VCEK()
	if vcek.Subject.CommonName != "SEV-VCEK" || vcek.Issuer.CommonName != "SEV-Genoa" {
		t.Errorf("VCEK subject/issuer %q/%q", vcek.Subject.CommonName, vcek.Issuer.CommonName)
	}
	if k, ok := vcek.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P384() {
		t.Errorf("VCEK key is not P-384")
	}
	exts, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		t.Fatalf("VCEK extensions: %v", err)
	}
	id := p.ChipID()
	if !bytes.Equal(exts.HWID, id[:]) {
		t.Errorf("VCEK hwID != chip ID")
	}
	if exts.ProductName != "Genoa-B1" {
		t.Errorf("product name %q", exts.ProductName)
	}
	parts := kds.DecomposeTCBVersion(exts.TCBVersion)
	if got := (TCB{parts.BlSpl, parts.TeeSpl, parts.SnpSpl, parts.UcodeSpl}); got != DefaultTCB() {
		t.Errorf("VCEK TCB %+v, want %+v", got, DefaultTCB())
	}
	// Trust bundle: ASK then ARK, as KDS's cert_chain.
	root := trust.AMDRootCertsProduct(ProductGenoa)
	if err := root.FromKDSCertBytes(p.RootCertsPEM()); err != nil {
		t.Fatalf("RootCertsPEM is not a KDS cert_chain: %v", err)
	}
	if !root.ProductCerts.Ark.Equal(p.ARK()) || !root.ProductCerts.Ask.Equal(p.ASK()) {
		t.Errorf("RootCertsPEM order is not ASK, ARK")
	}
}

func TestReportVerifiesWithGoSevGuest(t *testing.T) {
	p := chain(t)
	cfg := LaunchConfig{HostData: [32]byte{1, 2, 3}, GuestSVN: 7}
	cfg.Measurement[0], cfg.Measurement[47] = 0xAA, 0xBB
	g, err := p.Launch(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var rd [64]byte
	copy(rd[:], "nonce-binding")
	rep, certs, err := g.GetExtendedReport(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep) != abi.ReportSize {
		t.Fatalf("report is %d bytes", len(rep))
	}
	if err := verifyReport(t, p.RootCertsPEM(), ProductGenoa, rep, p.VCEK().Raw); err != nil {
		t.Fatalf("go-sev-guest rejects the simulated report: %v", err)
	}
	pb, err := abi.ReportToProto(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pb.ReportData, rd[:]) || !bytes.Equal(pb.Measurement, cfg.Measurement[:]) || !bytes.Equal(pb.HostData, cfg.HostData[:]) {
		t.Errorf("report fields do not carry the inputs")
	}
	if pb.Version != 3 || pb.GuestSvn != 7 || pb.Vmpl != 0 || pb.SignatureAlgo != abi.SignEcdsaP384Sha384 {
		t.Errorf("version %d svn %d vmpl %d algo %d", pb.Version, pb.GuestSvn, pb.Vmpl, pb.SignatureAlgo)
	}
	if kds.ProductLineFromFms(pb.Cpuid1EaxFms) != ProductGenoa {
		t.Errorf("CPUID says %s", kds.ProductLineFromFms(pb.Cpuid1EaxFms))
	}
	id := p.ChipID()
	if !bytes.Equal(pb.ChipId, id[:]) {
		t.Errorf("chip ID")
	}
	pol, _ := abi.ParseSnpPolicy(pb.Policy)
	if pol.Debug || !pol.SMT {
		t.Errorf("default policy %+v", pol)
	}
	// The certificate table carries VCEK, ASK and ARK.
	var table abi.CertTable
	if err := table.Unmarshal(certs); err != nil {
		t.Fatal(err)
	}
	chainPB := table.Proto()
	if !bytes.Equal(chainPB.VcekCert, p.VCEK().Raw) || !bytes.Equal(chainPB.AskCert, p.ASK().Raw) || !bytes.Equal(chainPB.ArkCert, p.ARK().Raw) {
		t.Errorf("certificate table does not hold VCEK/ASK/ARK")
	}
	// Tampering breaks the signature.
	bad := bytes.Clone(rep)
	bad[0x90] ^= 1
	if err := verifyReport(t, p.RootCertsPEM(), ProductGenoa, bad, p.VCEK().Raw); err == nil {
		t.Errorf("tampered report verified")
	}
	// Two reports of one guest share REPORT_ID; another launch does not.
	rep2, err := g.Report(rd)
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := p.Launch(cfg)
	rep3, _ := g2.Report(rd)
	if !bytes.Equal(rep[0x140:0x160], rep2[0x140:0x160]) || bytes.Equal(rep[0x140:0x160], rep3[0x140:0x160]) {
		t.Errorf("REPORT_ID is not per launch")
	}
}

func TestNotTrustedByAMDRoots(t *testing.T) {
	p := chain(t)
	g, _ := p.Launch(LaunchConfig{})
	rep, err := g.Report([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := abi.ReportToProto(rep)
	err = verify.SnpAttestation(&spb.Attestation{Report: pb, CertificateChain: &spb.CertificateChain{VcekCert: p.VCEK().Raw}},
		&verify.Options{DisableCertFetching: true, Now: time.Now()})
	if err == nil {
		t.Fatal("simulated report verified against AMD's embedded roots")
	}
}

func TestPolicyAndVersion(t *testing.T) {
	p := chain(t)
	g, err := p.Launch(LaunchConfig{Debug: true, ReportVersion: ReportVersion5})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := g.Report([64]byte{9})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := abi.ReportToProto(rep)
	if err != nil {
		t.Fatal(err)
	}
	pol, _ := abi.ParseSnpPolicy(pb.Policy)
	if !pol.Debug || pb.Version != 5 {
		t.Errorf("debug %v version %d", pol.Debug, pb.Version)
	}
	if err := verifyReport(t, p.RootCertsPEM(), ProductGenoa, rep, p.VCEK().Raw); err != nil {
		t.Errorf("v5 report: %v", err)
	}
	if _, err := p.Launch(LaunchConfig{Policy: 1 << 40}); err == nil {
		t.Errorf("policy with reserved bits accepted")
	}
	if _, err := p.Launch(LaunchConfig{ReportVersion: 4}); err == nil {
		t.Errorf("report version 4 accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := g.GetExtendedReport(ctx, [64]byte{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// TestMilan reissues the shared keys as a Milan chip (no new RSA keys).
func TestMilan(t *testing.T) {
	s := chain(t)
	p := &Processor{product: ProductMilan, tcb: TCB{Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115}, arkKey: s.arkKey, askKey: s.askKey, vcekKey: s.vcekKey}
	copy(p.chipID[:], bytes.Repeat([]byte{0x5A}, 64))
	if err := p.issueCerts(time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	g, _ := p.Launch(LaunchConfig{})
	rep, err := g.Report([64]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if rep[0x188] != 0x19 || rep[0x189] != 0x01 {
		t.Errorf("Milan CPUID %x %x", rep[0x188], rep[0x189])
	}
	if err := verifyReport(t, p.RootCertsPEM(), ProductMilan, rep, p.VCEK().Raw); err != nil {
		t.Errorf("Milan report: %v", err)
	}
	if err := verifyReport(t, s.RootCertsPEM(), ProductMilan, rep, p.VCEK().Raw); err == nil {
		t.Errorf("Milan VCEK verified against the Genoa roots")
	}
}

func TestOptionsValidation(t *testing.T) {
	if _, err := New(Options{Product: "Turin"}); err == nil {
		t.Error("Turin accepted")
	}
	if _, err := New(Options{TCB: TCB{SNP: 200}}); err == nil {
		t.Error("SNP SPL 200 accepted")
	}
	if _, err := New(Options{ChipID: []byte{1}}); err == nil {
		t.Error("short chip ID accepted")
	}
}

func TestSaveLoad(t *testing.T) {
	p := chain(t)
	dir := filepath.Join(t.TempDir(), "chip")
	if _, err := Load(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of missing dir: %v", err)
	}
	if err := p.Save(dir); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{arkKeyFile, askKeyFile, vcekKeyFile} {
		st, err := os.Stat(filepath.Join(dir, k))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v err %v", k, st.Mode(), err)
		}
	}
	if chainPEM, _ := os.ReadFile(filepath.Join(dir, CertChainFile)); !bytes.Equal(chainPEM, p.RootCertsPEM()) {
		t.Errorf("cert_chain.pem != RootCertsPEM")
	}
	q, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if q.ChipID() != p.ChipID() || q.TCB() != p.TCB() || q.Product() != p.Product() || !q.VCEK().Equal(p.VCEK()) || !q.ARK().Equal(p.ARK()) {
		t.Fatal("loaded chip differs")
	}
	g, _ := q.Launch(LaunchConfig{})
	rep, err := g.Report([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyReport(t, p.RootCertsPEM(), ProductGenoa, rep, q.VCEK().Raw); err != nil {
		t.Errorf("report of loaded chip does not verify with the saved roots: %v", err)
	}
	r, created, err := LoadOrCreate(dir, Options{})
	if err != nil || created || r.ChipID() != p.ChipID() {
		t.Errorf("LoadOrCreate on a saved chip: created=%v err=%v", created, err)
	}
	// A foreign VCEK key is detected.
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	bad := &Processor{product: p.product, chipID: p.chipID, tcb: p.tcb, arkKey: p.arkKey, ark: p.ark, askKey: p.askKey, ask: p.ask, vcekKey: other, vcek: p.vcek}
	badDir := filepath.Join(t.TempDir(), "bad")
	if err := bad.Save(badDir); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(badDir); err == nil {
		t.Error("chip with a mismatched VCEK key loaded")
	}
	// Leftover temp files: none.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 8 {
		t.Errorf("saved dir has %d entries, want 8", len(entries))
	}
}

package attestation

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
)

// Two simulated chips shared by all tests (RSA-4096 generation is slow):
// "trusted" is configured as a simulated root, "other" never is.
var (
	chipsOnce      sync.Once
	trusted, other *sim.Processor
	chipsErr       error
)

func simChips(t testing.TB) (*sim.Processor, *sim.Processor) {
	t.Helper()
	chipsOnce.Do(func() {
		var wg sync.WaitGroup
		var err1, err2 error
		wg.Add(1)
		go func() {
			defer wg.Done()
			other, err2 = sim.New(sim.Options{})
		}()
		trusted, err1 = sim.New(sim.Options{})
		wg.Wait()
		chipsErr = errors.Join(err1, err2)
	})
	if chipsErr != nil {
		t.Fatal(chipsErr)
	}
	return trusted, other
}

func sha384Of(s string) []byte {
	h := sha512.Sum384([]byte(s))
	return h[:]
}

func newSimSNPVerifier(t testing.TB, mod func(*SNPOptions)) *SNPVerifier {
	t.Helper()
	tr, _ := simChips(t)
	opts := SNPOptions{TrustedSimulatedRoots: [][]byte{tr.RootCertsPEM()}}
	if mod != nil {
		mod(&opts)
	}
	v, err := NewSNPVerifier(opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func simSNPEvidence(t testing.TB, p *sim.Processor, cfg sim.LaunchConfig, reportData []byte) json.RawMessage {
	t.Helper()
	g, err := p.Launch(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := tee.NewSimSNP(g).Evidence(context.Background(), reportData)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// editEvidence decodes evidence, applies f, and re-encodes it.
func editSNPEvidence(t *testing.T, ev json.RawMessage, f func(*tee.SNPEvidence)) json.RawMessage {
	t.Helper()
	parsed, err := tee.ParseSNPEvidence(ev)
	if err != nil {
		t.Fatal(err)
	}
	f(parsed)
	out, err := json.Marshal(parsed)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantCheckError(t *testing.T, err error, check string) {
	t.Helper()
	var ce *CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("want CheckError %q, got %v", check, err)
	}
	if ce.Check != check {
		t.Fatalf("want check %q, got %q (%s)", check, ce.Check, ce.Detail)
	}
	if ce.Detail == "" {
		t.Fatalf("check %q has no detail", check)
	}
}

func TestSNPSimulatedVerifies(t *testing.T) {
	tr, _ := simChips(t)
	v := newSimSNPVerifier(t, nil)
	if v.Tee() != "snp" || v.Class() != ClassCPU {
		t.Fatal(v.Tee(), v.Class())
	}
	rd := sha384Of("runtime data")
	cfg := sim.LaunchConfig{}
	copy(cfg.Measurement[:], bytes.Repeat([]byte{0xAB}, 48))
	initData := sha512.Sum384([]byte("init data toml"))
	copy(cfg.HostData[:], initData[:32])
	ev := simSNPEvidence(t, tr, cfg, rd)
	for range 2 { // second round takes the verified-VCEK cache path
		claims, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd, InitDataDigest: initData[:]})
		if err != nil {
			t.Fatal(err)
		}
		id := tr.ChipID()
		tcb := tr.TCB()
		want := Claims{
			"policy_abi_major": 0, "policy_abi_minor": 0,
			"policy_smt_allowed": true, "policy_migrate_ma": false, "policy_debug_allowed": false, "policy_single_socket": false,
			"reported_tcb_bootloader": int(tcb.Bootloader), "reported_tcb_tee": int(tcb.TEE), "reported_tcb_snp": int(tcb.SNP), "reported_tcb_microcode": int(tcb.Microcode),
			"platform_tsme_enabled": false, "platform_smt_enabled": true,
			"measurement": strings.Repeat("ab", 48),
			"report_data": hex.EncodeToString(append(bytes.Clone(rd), make([]byte, 16)...)),
			"init_data":   hex.EncodeToString(initData[:32]),
			"chip_id":     hex.EncodeToString(id[:]),
			"simulated":   true,
		}
		if fmt.Sprint(claims) != fmt.Sprint(want) {
			t.Fatalf("claims\n got %v\nwant %v", claims, want)
		}
	}
}

func TestSNPTamperedReport(t *testing.T) {
	tr, _ := simChips(t)
	v := newSimSNPVerifier(t, nil)
	rd := sha384Of("x")
	ev := simSNPEvidence(t, tr, sim.LaunchConfig{}, rd)
	for name, f := range map[string]func(*tee.SNPEvidence){
		"measurement": func(e *tee.SNPEvidence) { e.AttestationReport.Measurement[3] ^= 0x40 },
		"guest svn":   func(e *tee.SNPEvidence) { e.AttestationReport.GuestSVN++ },
		"signature":   func(e *tee.SNPEvidence) { e.AttestationReport.Signature.R[0] ^= 1 },
		"policy":      func(e *tee.SNPEvidence) { e.AttestationReport.Policy |= 1 << 20 },
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), VerifyInput{Evidence: editSNPEvidence(t, ev, f), ReportData: rd})
			wantCheckError(t, err, "report-signature")
		})
	}
	// A raw byte edit inside the JSON (measurement's first element).
	s := string(ev)
	i := strings.Index(s, `"measurement":[`) + len(`"measurement":[`)
	j := i + strings.IndexByte(s[i:], ',')
	bad := s[:i] + "7" + s[j:]
	if s[i:j] == "7" {
		bad = s[:i] + "8" + s[j:]
	}
	_, err := v.Verify(context.Background(), VerifyInput{Evidence: json.RawMessage(bad), ReportData: rd})
	wantCheckError(t, err, "report-signature")
}

func TestSNPUntrustedChain(t *testing.T) {
	_, ot := simChips(t)
	v := newSimSNPVerifier(t, nil)
	rd := sha384Of("x")
	_, err := v.Verify(context.Background(), VerifyInput{Evidence: simSNPEvidence(t, ot, sim.LaunchConfig{}, rd), ReportData: rd})
	wantCheckError(t, err, "vcek-chain")

	// The other chip's VCEK swapped into trusted evidence: the chain is
	// fine for neither.
	tr, _ := simChips(t)
	ev := editSNPEvidence(t, simSNPEvidence(t, tr, sim.LaunchConfig{}, rd), func(e *tee.SNPEvidence) {
		for i := range e.CertChain {
			if e.CertChain[i].CertType == tee.SNPCertVCEK {
				e.CertChain[i].Data = ot.VCEK().Raw
			}
		}
	})
	_, err = v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd})
	wantCheckError(t, err, "vcek-chain")
}

func TestSNPSimulatedRefusedByDefault(t *testing.T) {
	tr, _ := simChips(t)
	v, err := NewSNPVerifier(SNPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rd := sha384Of("x")
	_, err = v.Verify(context.Background(), VerifyInput{Evidence: simSNPEvidence(t, tr, sim.LaunchConfig{}, rd), ReportData: rd})
	wantCheckError(t, err, "vcek-chain")
	if !strings.Contains(err.Error(), "simulated") {
		t.Errorf("detail does not say why: %v", err)
	}
}

func TestSNPReportDataBinding(t *testing.T) {
	tr, _ := simChips(t)
	v := newSimSNPVerifier(t, nil)
	ev := simSNPEvidence(t, tr, sim.LaunchConfig{}, sha384Of("session A"))
	for name, rd := range map[string][]byte{
		"other session": sha384Of("session B"),
		"none":          nil,
		"too long":      make([]byte, 65),
		// The report holds the digest zero-padded; a 64-byte expectation
		// with non-zero padding must not match.
		"padding": append(sha384Of("session A"), bytes.Repeat([]byte{1}, 16)...),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd})
			wantCheckError(t, err, "report-data-binding")
		})
	}
	// Zero-padded to 64 bytes explicitly is the same binding.
	if _, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: append(sha384Of("session A"), make([]byte, 16)...)}); err != nil {
		t.Fatal(err)
	}
}

func TestSNPHostDataBinding(t *testing.T) {
	tr, _ := simChips(t)
	v := newSimSNPVerifier(t, nil)
	rd := sha384Of("x")
	sha384 := sha384Of("init data")
	var cfg sim.LaunchConfig
	copy(cfg.HostData[:], sha384) // truncated to 32 bytes, as Trustee compares
	ev := simSNPEvidence(t, tr, cfg, rd)
	if _, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd, InitDataDigest: sha384}); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd, InitDataDigest: sha384Of("other init data")})
	wantCheckError(t, err, "host-data-binding")
	// A 32-byte digest is zero-padded: HOST_DATA all zero != a sha256.
	ev0 := simSNPEvidence(t, tr, sim.LaunchConfig{}, rd)
	_, err = v.Verify(context.Background(), VerifyInput{Evidence: ev0, ReportData: rd, InitDataDigest: make([]byte, 8)})
	if err != nil {
		t.Fatalf("zero digest vs zero HOST_DATA: %v", err)
	}
	_, err = v.Verify(context.Background(), VerifyInput{Evidence: ev0, ReportData: rd, InitDataDigest: []byte{1}})
	wantCheckError(t, err, "host-data-binding")
}

func TestSNPDebugPolicy(t *testing.T) {
	tr, _ := simChips(t)
	rd := sha384Of("x")
	ev := simSNPEvidence(t, tr, sim.LaunchConfig{Debug: true}, rd)
	_, err := newSimSNPVerifier(t, nil).Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd})
	wantCheckError(t, err, "debug-policy")
	claims, err := newSimSNPVerifier(t, func(o *SNPOptions) { o.AllowDebug = true }).Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	if claims["policy_debug_allowed"] != true {
		t.Fatalf("claims %v", claims)
	}
}

func TestSNPMinimumTCB(t *testing.T) {
	tr, _ := simChips(t)
	rd := sha384Of("x")
	ev := simSNPEvidence(t, tr, sim.LaunchConfig{}, rd)
	tcb := tr.TCB()
	ok := newSimSNPVerifier(t, func(o *SNPOptions) {
		o.MinimumTCB = &SNPTCB{Bootloader: tcb.Bootloader, TEE: tcb.TEE, SNP: tcb.SNP, Microcode: tcb.Microcode}
	})
	if _, err := ok.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd}); err != nil {
		t.Fatal(err)
	}
	high := newSimSNPVerifier(t, func(o *SNPOptions) { o.MinimumTCB = &SNPTCB{SNP: tcb.SNP + 1} })
	_, err := high.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd})
	wantCheckError(t, err, "tcb")
	// Editing REPORTED_TCB breaks the signature.
	bad := editSNPEvidence(t, ev, func(e *tee.SNPEvidence) { e.AttestationReport.ReportedTCB.Microcode-- })
	_, err = newSimSNPVerifier(t, nil).Verify(context.Background(), VerifyInput{Evidence: bad, ReportData: rd})
	wantCheckError(t, err, "report-signature")
	// A signed report whose REPORTED_TCB is not the VCEK's TCB.
	lower := tcb
	lower.Microcode--
	ev = simSNPEvidence(t, tr, sim.LaunchConfig{ReportedTCB: &lower}, rd)
	_, err = newSimSNPVerifier(t, nil).Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd})
	wantCheckError(t, err, "tcb")
}

func TestSNPEvidenceFormat(t *testing.T) {
	tr, _ := simChips(t)
	v := newSimSNPVerifier(t, func(o *SNPOptions) { o.MaxEvidenceBytes = 64 << 10 })
	rd := sha384Of("x")
	ev := simSNPEvidence(t, tr, sim.LaunchConfig{}, rd)
	cases := map[string][]byte{
		"empty":           nil,
		"not JSON":        []byte(`{"attestation_report":`),
		"sample evidence": []byte(`{"svn":"1","report_data":"AAAA"}`),
		"trailing":        append(bytes.Clone(ev), []byte(` {}`)...),
		"oversized":       append(bytes.Clone(ev[:len(ev)-1]), []byte(`,"pad":"`+strings.Repeat("x", 64<<10)+`"}`)...),
		"short chip_id":   bytes.Replace(ev, []byte(`"chip_id":[`), []byte(`"chip_id":[1,`), 1),
		"version 2":       editSNPEvidence(t, ev, func(e *tee.SNPEvidence) { e.AttestationReport.Version = 2 }),
		"version 6":       editSNPEvidence(t, ev, func(e *tee.SNPEvidence) { e.AttestationReport.Version = 6 }),
		"Turin": editSNPEvidence(t, ev, func(e *tee.SNPEvidence) {
			f, m := uint8(0x1A), uint8(0x02)
			e.AttestationReport.CPUIDFamID, e.AttestationReport.CPUIDModID = &f, &m
		}),
		"reserved policy bit": editSNPEvidence(t, ev, func(e *tee.SNPEvidence) { e.AttestationReport.Policy &^= 1 << 17 }),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), VerifyInput{Evidence: in, ReportData: rd})
			wantCheckError(t, err, "evidence-format")
		})
	}
	// Default limit is 256 KiB.
	def := newSimSNPVerifier(t, nil)
	huge := append(bytes.Clone(ev[:len(ev)-1]), []byte(`,"pad":"`+strings.Repeat("x", DefaultMaxSNPEvidenceBytes)+`"}`)...)
	_, err := def.Verify(context.Background(), VerifyInput{Evidence: huge, ReportData: rd})
	wantCheckError(t, err, "evidence-format")
	// Unknown members are ignored, as serde does.
	extra := append(bytes.Clone(ev[:len(ev)-1]), []byte(`,"extra":1}`)...)
	if _, err := def.Verify(context.Background(), VerifyInput{Evidence: extra, ReportData: rd}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := def.Verify(ctx, VerifyInput{Evidence: ev, ReportData: rd}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestSNPVCEKFromCache(t *testing.T) {
	tr, _ := simChips(t)
	rd := sha384Of("x")
	noChain := editSNPEvidence(t, simSNPEvidence(t, tr, sim.LaunchConfig{}, rd), func(e *tee.SNPEvidence) { e.CertChain = nil })
	if !bytes.Contains(noChain, []byte(`"cert_chain":null`)) {
		t.Fatal("cert_chain is not null")
	}
	_, err := newSimSNPVerifier(t, nil).Verify(context.Background(), VerifyInput{Evidence: noChain, ReportData: rd})
	wantCheckError(t, err, "vcek-missing")

	cache := t.TempDir()
	v := newSimSNPVerifier(t, func(o *SNPOptions) { o.CertCacheDir = cache })
	_, err = v.Verify(context.Background(), VerifyInput{Evidence: noChain, ReportData: rd})
	wantCheckError(t, err, "vcek-missing")
	id := tr.ChipID()
	dir := filepath.Join(cache, "vcek", hex.EncodeToString(id[:]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tcb := tr.TCB()
	tcbFile := filepath.Join(dir, fmt.Sprintf("bl%02d_tee%02d_snp%02d_ucode%02d_vcek.der", tcb.Bootloader, tcb.TEE, tcb.SNP, tcb.Microcode))
	if !strings.Contains(err.Error(), tcbFile) {
		t.Errorf("detail does not name where to put the VCEK: %v", err)
	}
	// Flat layout fallback.
	if err := os.WriteFile(filepath.Join(dir, "vcek.der"), tr.VCEK().Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), VerifyInput{Evidence: noChain, ReportData: rd}); err != nil {
		t.Fatalf("vcek.der: %v", err)
	}
	// TCB-specific file wins; a broken one is reported.
	if err := os.WriteFile(tcbFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), VerifyInput{Evidence: noChain, ReportData: rd})
	wantCheckError(t, err, "vcek-chain")
	if err := os.WriteFile(tcbFile, tr.VCEK().Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), VerifyInput{Evidence: noChain, ReportData: rd})
	if err != nil || claims["simulated"] != true {
		t.Fatalf("tcb file: %v %v", claims, err)
	}
}

func TestSNPCertificateValidity(t *testing.T) {
	tr, _ := simChips(t)
	rd := sha384Of("x")
	ev := simSNPEvidence(t, tr, sim.LaunchConfig{}, rd)
	v := newSimSNPVerifier(t, func(o *SNPOptions) { o.Now = func() time.Time { return time.Now().Add(10 * 365 * 24 * time.Hour) } })
	_, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd})
	wantCheckError(t, err, "vcek-chain")
}

func TestNewSNPVerifierRejectsBadRoots(t *testing.T) {
	tr, _ := simChips(t)
	for name, bundle := range map[string][]byte{
		"garbage":  []byte("x"),
		"ARK only": certsPEM(tr.ARK().Raw),
		"reversed": certsPEM(tr.ARK().Raw, tr.ASK().Raw),
		"VCEK":     certsPEM(tr.VCEK().Raw, tr.ASK().Raw),
	} {
		if _, err := NewSNPVerifier(SNPOptions{TrustedSimulatedRoots: [][]byte{bundle}}); err == nil {
			t.Errorf("%s accepted as a simulated root", name)
		}
	}
}

// TestSNPRealGenoaEvidence verifies a report made by real AMD hardware
// (Trustee's e2e test vector) against AMD's embedded Genoa root.
func TestSNPRealGenoaEvidence(t *testing.T) {
	data, err := os.ReadFile("../tee/testdata/trustee-genoa-evidence.json")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := tee.ParseSNPEvidence(data)
	if err != nil {
		t.Fatal(err)
	}
	rd := ev.AttestationReport.ReportData
	v, err := NewSNPVerifier(SNPOptions{Now: func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), VerifyInput{Evidence: data, ReportData: rd})
	if err != nil {
		t.Fatalf("real Genoa evidence: %v", err)
	}
	if _, sim := claims["simulated"]; sim {
		t.Fatal("real evidence marked simulated")
	}
	if claims["measurement"] != "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e" {
		t.Errorf("measurement %v", claims["measurement"])
	}
	if claims["reported_tcb_snp"] != 23 || claims["reported_tcb_microcode"] != 25 || claims["policy_debug_allowed"] != false {
		t.Errorf("claims %v", claims)
	}
	// A trusted simulated root changes nothing for real evidence.
	tr, _ := simChips(t)
	v2, _ := NewSNPVerifier(SNPOptions{TrustedSimulatedRoots: [][]byte{tr.RootCertsPEM()}, Now: v.opts.Now})
	if claims, err := v2.Verify(context.Background(), VerifyInput{Evidence: data, ReportData: rd}); err != nil || claims["simulated"] != nil {
		t.Fatalf("with sim roots: %v %v", claims, err)
	}
	// Tampered real report.
	bad := bytes.Replace(data, []byte(`"guest_svn":0`), []byte(`"guest_svn":1`), 1)
	_, err = v.Verify(context.Background(), VerifyInput{Evidence: bad, ReportData: rd})
	wantCheckError(t, err, "report-signature")
}

func TestSNPConcurrentVerify(t *testing.T) {
	tr, ot := simChips(t)
	v := newSimSNPVerifier(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rd := sha384Of(fmt.Sprint(i))
			p := tr
			if i%4 == 3 {
				p = ot
			}
			g, _ := p.Launch(sim.LaunchConfig{})
			ev, err := tee.NewSimSNP(g).Evidence(context.Background(), rd)
			if err != nil {
				errs <- err
				return
			}
			_, err = v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd})
			if (p == ot) != (err != nil) {
				errs <- fmt.Errorf("verifier %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func certsPEM(ders ...[]byte) []byte {
	var b bytes.Buffer
	for _, d := range ders {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	return b.Bytes()
}

// FuzzSNPEvidence: the SNP evidence parser and verifier never panic, and
// fail only with a *CheckError. The setup avoids RSA key generation (fuzz
// workers restart and would regenerate): it trusts AMD's roots only and
// seeds with real Genoa evidence, which verifies.
func FuzzSNPEvidence(f *testing.F) {
	real, err := os.ReadFile("../tee/testdata/trustee-genoa-evidence.json")
	if err != nil {
		f.Fatal(err)
	}
	ev, err := tee.ParseSNPEvidence(real)
	if err != nil {
		f.Fatal(err)
	}
	rd := bytes.Clone(ev.AttestationReport.ReportData)
	f.Add(real)
	noChain := *ev
	noChain.CertChain = nil
	js, _ := json.Marshal(noChain)
	f.Add(js)
	f.Add([]byte(`{"attestation_report":{"version":3},"cert_chain":[{"cert_type":"VCEK","data":[48,0]}]}`))
	f.Add([]byte(`null`))
	v, err := NewSNPVerifier(SNPOptions{Now: func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), VerifyInput{Evidence: real, ReportData: rd}); err != nil {
		f.Fatalf("seed evidence does not verify: %v", err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		claims, err := v.Verify(context.Background(), VerifyInput{Evidence: data, ReportData: rd})
		if err != nil {
			var ce *CheckError
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a CheckError: %v", err)
			}
			return
		}
		if claims["report_data"] != hex.EncodeToString(rd) {
			t.Fatalf("accepted evidence with other report data: %v", claims)
		}
	})
}

func BenchmarkSNPVerifySimulated(b *testing.B) {
	tr, _ := simChips(b)
	rd := sha384Of("bench")
	ev := simSNPEvidence(b, tr, sim.LaunchConfig{}, rd)
	v := newSimSNPVerifier(b, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSNPVerifyColdVCEK measures the first sight of a VCEK (full
// go-sev-guest chain verification).
func BenchmarkSNPVerifyColdVCEK(b *testing.B) {
	tr, _ := simChips(b)
	rd := sha384Of("bench")
	ev := simSNPEvidence(b, tr, sim.LaunchConfig{}, rd)
	v := newSimSNPVerifier(b, nil)
	b.ReportAllocs()
	for b.Loop() {
		clear(v.vceks)
		if _, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSNPSimulatedEvidence(b *testing.B) {
	tr, _ := simChips(b)
	g, _ := tr.Launch(sim.LaunchConfig{})
	a := tee.NewSimSNP(g)
	rd := sha384Of("bench")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Evidence(context.Background(), rd); err != nil {
			b.Fatal(err)
		}
	}
}

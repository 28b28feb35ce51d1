package attestation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/coffer-project/coffer/internal/tee"
)

// DefaultMaxSNPEvidenceBytes bounds SNP evidence when SNPOptions does not.
// Real evidence (report + VCEK/ASK/ARK as JSON number arrays) is ~30 KiB.
const DefaultMaxSNPEvidenceBytes = 256 << 10

// maxVCEKFileBytes bounds a VCEK read from the certificate cache.
const maxVCEKFileBytes = 64 << 10

// vcekCacheEntries bounds the verified-VCEK cache.
const vcekCacheEntries = 4096

// Report versions Trustee accepts (version 3 is the first with CPUID, which
// tells the processor generation and so the root of trust).
const (
	snpMinReportVersion = 3
	snpMaxReportVersion = 5
)

// SNPTCB is a minimum TCB: every security patch level of the report's
// REPORTED_TCB must be at least the given one.
type SNPTCB struct {
	Bootloader uint8
	TEE        uint8
	SNP        uint8
	Microcode  uint8
}

// SNPOptions configure the SNP verifier.
type SNPOptions struct {
	// TrustedSimulatedRoots are simulated ASK+ARK PEM bundles
	// (sim.Processor.RootCertsPEM, or a saved chip's cert_chain.pem) whose
	// chains are accepted besides AMD's. Claims of reports that chain to
	// one of them carry "simulated": true. Empty (the default) means
	// simulated SNP evidence is refused.
	TrustedSimulatedRoots [][]byte
	// CertCacheDir is a directory of VCEK certificates used when the
	// evidence carries none, in Trustee's offline KDS store layout:
	// <dir>/vcek/<hex CHIP_ID>/bl<NN>_tee<NN>_snp<NN>_ucode<NN>_vcek.der,
	// falling back to <dir>/vcek/<hex CHIP_ID>/vcek.der (DER or PEM).
	// The verifier never contacts AMD's KDS.
	CertCacheDir string
	// AllowDebug accepts reports whose guest policy allows debugging
	// (the host can read the guest's memory). Development only.
	AllowDebug bool
	// MinimumTCB, when set, is the lowest acceptable REPORTED_TCB.
	MinimumTCB *SNPTCB
	// MaxEvidenceBytes bounds the evidence size; 0 means
	// DefaultMaxSNPEvidenceBytes.
	MaxEvidenceBytes int
	// Now returns the time certificates are checked at; nil means
	// time.Now.
	Now func() time.Time
}

// SNPVerifier verifies AMD SEV-SNP evidence in Trustee's format
// (tee.SNPEvidence): the VCEK → ASK → ARK chain to AMD's roots (or to
// configured simulated roots), the report signature, the VCEK's TCB and
// hwID against the report, VMPL 0, the REPORT_DATA and HOST_DATA bindings,
// the debug policy bit and an optional minimum TCB. It uses go-sev-guest's
// abi and verify packages and never touches the network.
type SNPVerifier struct {
	opts SNPOptions
	amd  map[string]*trust.AMDRootCerts
	sim  map[string][]*trust.AMDRootCerts

	mu    sync.Mutex
	vceks map[[32]byte]*endorsedVCEK
}

// endorsedVCEK is a VCEK certificate whose chain was verified; the chain
// is valid from notBefore to notAfter (intersection of VCEK, ASK, ARK).
type endorsedVCEK struct {
	cert                *x509.Certificate
	exts                *kds.Extensions
	root                *trust.AMDRootCerts
	simulated           bool
	notBefore, notAfter time.Time
}

// NewSNPVerifier returns an SNP verifier. It fails if a simulated root
// bundle is not an ASK+ARK PEM pair of a supported product line.
func NewSNPVerifier(opts SNPOptions) (*SNPVerifier, error) {
	v := &SNPVerifier{
		opts:  opts,
		amd:   map[string]*trust.AMDRootCerts{},
		sim:   map[string][]*trust.AMDRootCerts{},
		vceks: map[[32]byte]*endorsedVCEK{},
	}
	if v.opts.MaxEvidenceBytes <= 0 {
		v.opts.MaxEvidenceBytes = DefaultMaxSNPEvidenceBytes
	}
	if v.opts.Now == nil {
		v.opts.Now = time.Now
	}
	for _, line := range []string{"Milan", "Genoa"} {
		r, err := trust.GetDefaultRootCerts(line)
		if err != nil {
			return nil, fmt.Errorf("load AMD %s root certificates: %w", line, err)
		}
		v.amd[line] = r
	}
	for i, bundle := range opts.TrustedSimulatedRoots {
		line, root, err := parseSimulatedRoot(bundle)
		if err != nil {
			return nil, fmt.Errorf("trusted simulated root #%d: %w", i+1, err)
		}
		v.sim[line] = append(v.sim[line], root)
	}
	return v, nil
}

func parseSimulatedRoot(bundle []byte) (string, *trust.AMDRootCerts, error) {
	askDER, arkDER, err := kds.ParseProductCertChain(bytes.TrimSpace(bundle))
	if err != nil {
		return "", nil, fmt.Errorf("want the ASK and then the ARK certificate in PEM (the simulated chip's cert_chain.pem): %w", err)
	}
	ark, err := x509.ParseCertificate(arkDER)
	if err != nil {
		return "", nil, fmt.Errorf("parse ARK: %w", err)
	}
	ask, err := x509.ParseCertificate(askDER)
	if err != nil {
		return "", nil, fmt.Errorf("parse ASK: %w", err)
	}
	line, ok := strings.CutPrefix(ark.Subject.CommonName, "ARK-")
	if !ok || (line != "Milan" && line != "Genoa") {
		return "", nil, fmt.Errorf("ARK common name %q is not ARK-Milan or ARK-Genoa", ark.Subject.CommonName)
	}
	if ask.Subject.CommonName != "SEV-"+line {
		return "", nil, fmt.Errorf("ASK common name %q, want SEV-%s", ask.Subject.CommonName, line)
	}
	if err := ask.CheckSignatureFrom(ark); err != nil {
		return "", nil, fmt.Errorf("ASK is not signed by the ARK: %w", err)
	}
	root := trust.AMDRootCertsProduct(line)
	root.ProductCerts = &trust.ProductCerts{Ask: ask, Ark: ark}
	return line, root, nil
}

// Tee implements Verifier.
func (*SNPVerifier) Tee() string { return tee.TeeSNP }

// Class implements Verifier.
func (*SNPVerifier) Class() string { return ClassCPU }

func snpCheckError(check, format string, args ...any) *CheckError {
	return &CheckError{Check: check, Detail: fmt.Sprintf(format, args...)}
}

// Verify implements Verifier.
func (v *SNPVerifier) Verify(ctx context.Context, in VerifyInput) (Claims, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(in.Evidence) > v.opts.MaxEvidenceBytes {
		return nil, snpCheckError("evidence-format", "SNP evidence is %d bytes, more than the %d byte limit", len(in.Evidence), v.opts.MaxEvidenceBytes)
	}
	ev, err := tee.ParseSNPEvidence(in.Evidence)
	if err != nil {
		return nil, snpCheckError("evidence-format", "%v", err)
	}
	rep := &ev.AttestationReport
	if rep.Version < snpMinReportVersion || rep.Version > snpMaxReportVersion {
		return nil, snpCheckError("evidence-format", "SNP report version %d is not supported (need %d..%d; version 2 reports do not name the processor: update the host's SEV firmware)",
			rep.Version, snpMinReportVersion, snpMaxReportVersion)
	}
	line, err := rep.ProductLine()
	if err != nil {
		return nil, snpCheckError("evidence-format", "%v", err)
	}
	if line == "Turin" {
		return nil, snpCheckError("evidence-format", "SNP reports from Turin processors are not supported yet")
	}
	raw, err := rep.ABIBytes()
	if err != nil {
		return nil, snpCheckError("evidence-format", "%v", err)
	}
	pb, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, snpCheckError("evidence-format", "malformed SNP report: %v", err)
	}
	signer, err := abi.ParseSignerInfo(pb.SignerInfo)
	if err != nil {
		return nil, snpCheckError("evidence-format", "malformed SNP report key_info: %v", err)
	}
	switch signer.SigningKey {
	case abi.VcekReportSigner:
	case abi.VlekReportSigner:
		return nil, snpCheckError("vcek-chain", "the report is signed with a VLEK; only VCEK-signed reports are supported")
	default:
		return nil, snpCheckError("report-signature", "the report is not signed (signing key %v)", signer.SigningKey)
	}
	if pb.SignatureAlgo != abi.SignEcdsaP384Sha384 {
		return nil, snpCheckError("report-signature", "unknown report signature algorithm %d (want 1, ECDSA P-384 with SHA-384)", pb.SignatureAlgo)
	}

	vcekDER := ev.Cert(tee.SNPCertVCEK)
	if len(vcekDER) == 0 {
		if vcekDER, err = v.cachedVCEK(rep); err != nil {
			return nil, err
		}
	}
	vc, err := v.endorse(ctx, line, vcekDER, pb, raw)
	if err != nil {
		return nil, err
	}
	if !signer.MaskChipKey && !bytes.Equal(vc.exts.HWID, rep.ChipID) {
		return nil, snpCheckError("vcek-chain", "the VCEK certificate is for chip %x…, the report comes from chip %x…", vc.exts.HWID[:8], []byte(rep.ChipID[:8]))
	}
	certTCB := kds.DecomposeTCBVersion(vc.exts.TCBVersion)
	rt := rep.ReportedTCB
	if certTCB.BlSpl != rt.Bootloader || certTCB.TeeSpl != rt.TEE || certTCB.SnpSpl != rt.SNP || certTCB.UcodeSpl != rt.Microcode {
		return nil, snpCheckError("tcb", "REPORTED_TCB (bl %d tee %d snp %d ucode %d) is not the TCB the VCEK certifies (bl %d tee %d snp %d ucode %d): the host must supply the VCEK for the reported TCB",
			rt.Bootloader, rt.TEE, rt.SNP, rt.Microcode, certTCB.BlSpl, certTCB.TeeSpl, certTCB.SnpSpl, certTCB.UcodeSpl)
	}
	if rep.VMPL != 0 {
		return nil, snpCheckError("vmpl", "the report was requested at VMPL %d; only VMPL 0 reports prove the guest's own state", rep.VMPL)
	}

	if len(in.ReportData) == 0 {
		return nil, snpCheckError("report-data-binding", "no expected report data was given to the verifier (caller bug: the runtime-data digest must always be checked)")
	}
	if len(in.ReportData) > abi.ReportDataSize {
		return nil, snpCheckError("report-data-binding", "expected report data is %d bytes, longer than REPORT_DATA (%d)", len(in.ReportData), abi.ReportDataSize)
	}
	want := make([]byte, abi.ReportDataSize)
	copy(want, in.ReportData)
	if subtle.ConstantTimeCompare(want, rep.ReportData) != 1 {
		return nil, snpCheckError("report-data-binding", "REPORT_DATA does not match the digest of this session's runtime data (nonce and tee-pubkey): the report was made for another session or key")
	}
	if in.InitDataDigest != nil {
		wantHost := make([]byte, abi.HostDataSize)
		copy(wantHost, in.InitDataDigest) // zero-pad or truncate, as Trustee
		if subtle.ConstantTimeCompare(wantHost, rep.HostData) != 1 {
			return nil, snpCheckError("host-data-binding", "HOST_DATA %x does not match the init-data digest %x: the VM was launched with other init data", []byte(rep.HostData), wantHost)
		}
	}
	pol, _ := abi.ParseSnpPolicy(pb.Policy) // validated by ReportToProto
	if pol.Debug && !v.opts.AllowDebug {
		return nil, snpCheckError("debug-policy", "the guest policy allows debugging (policy 0x%x has the DEBUG bit): the host can read the guest's memory; relaunch without debug or allow it explicitly for development", pb.Policy)
	}
	if m := v.opts.MinimumTCB; m != nil {
		if rt.Bootloader < m.Bootloader || rt.TEE < m.TEE || rt.SNP < m.SNP || rt.Microcode < m.Microcode {
			return nil, snpCheckError("tcb", "REPORTED_TCB (bl %d tee %d snp %d ucode %d) is below the minimum (bl %d tee %d snp %d ucode %d): update the host's SEV firmware and microcode",
				rt.Bootloader, rt.TEE, rt.SNP, rt.Microcode, m.Bootloader, m.TEE, m.SNP, m.Microcode)
		}
	}
	return snpClaims(rep, pol, vc.simulated), nil
}

// snpClaims are Trustee's SNP claims (deps/verifier/src/snp parse_tee_evidence).
func snpClaims(rep *tee.SNPReport, pol abi.SnpPolicy, simulated bool) Claims {
	c := Claims{
		"policy_abi_major":        int(pol.ABIMajor),
		"policy_abi_minor":        int(pol.ABIMinor),
		"policy_smt_allowed":      pol.SMT,
		"policy_migrate_ma":       pol.MigrateMA,
		"policy_debug_allowed":    pol.Debug,
		"policy_single_socket":    pol.SingleSocket,
		"reported_tcb_bootloader": int(rep.ReportedTCB.Bootloader),
		"reported_tcb_tee":        int(rep.ReportedTCB.TEE),
		"reported_tcb_snp":        int(rep.ReportedTCB.SNP),
		"reported_tcb_microcode":  int(rep.ReportedTCB.Microcode),
		"platform_tsme_enabled":   rep.PlatInfo&(1<<1) != 0,
		"platform_smt_enabled":    rep.PlatInfo&(1<<0) != 0,
		"measurement":             hex.EncodeToString(rep.Measurement),
		"report_data":             hex.EncodeToString(rep.ReportData),
		"init_data":               hex.EncodeToString(rep.HostData),
		"chip_id":                 hex.EncodeToString(rep.ChipID),
	}
	if simulated {
		c["simulated"] = true
	}
	return c
}

// cachedVCEK finds the report's VCEK in the certificate cache directory.
func (v *SNPVerifier) cachedVCEK(rep *tee.SNPReport) ([]byte, error) {
	if v.opts.CertCacheDir == "" {
		return nil, snpCheckError("vcek-missing", "the evidence carries no VCEK certificate and no certificate cache is configured: have the host provide the certificate chain with extended reports (e.g. snphost import), or configure a VCEK cache directory")
	}
	if bytes.Equal(rep.ChipID, make([]byte, abi.ChipIDSize)) {
		return nil, snpCheckError("vcek-missing", "the evidence carries no VCEK certificate and the report's CHIP_ID is masked, so no cached VCEK can be selected: have the host provide the certificate chain with extended reports")
	}
	t := rep.ReportedTCB
	dir := filepath.Join(v.opts.CertCacheDir, "vcek", hex.EncodeToString(rep.ChipID))
	tcbFile := filepath.Join(dir, fmt.Sprintf("bl%02d_tee%02d_snp%02d_ucode%02d_vcek.der", t.Bootloader, t.TEE, t.SNP, t.Microcode))
	for _, p := range []string{tcbFile, filepath.Join(dir, "vcek.der")} {
		data, err := readLimited(p, maxVCEKFileBytes)
		if err == nil {
			return data, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, snpCheckError("vcek-missing", "read cached VCEK %s: %v", p, err)
		}
	}
	return nil, snpCheckError("vcek-missing", "the evidence carries no VCEK certificate and none is cached: put the chip's VCEK (from AMD KDS) at %s", tcbFile)
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("file is larger than %d bytes", limit)
	}
	return data, nil
}

// endorse checks the VCEK's chain (AMD roots first, then the trusted
// simulated roots) and the report signature. A VCEK seen before with a
// verified chain is taken from the cache and only the signature is checked.
func (v *SNPVerifier) endorse(ctx context.Context, line string, der []byte, pb *spb.Report, raw []byte) (*endorsedVCEK, error) {
	now := v.opts.Now()
	key := sha256.Sum256(der)
	v.mu.Lock()
	vc := v.vceks[key]
	v.mu.Unlock()
	if vc != nil && vc.root.GetProductLine() == line && !now.Before(vc.notBefore) && !now.After(vc.notAfter) {
		if err := verify.SnpReportSignature(raw, vc.cert); err != nil {
			return nil, snpCheckError("report-signature", "the report signature does not verify with the chip's VCEK: %v", err)
		}
		return vc, nil
	}

	cert, err := trust.ParseCert(der)
	if err != nil {
		return nil, snpCheckError("vcek-chain", "the VCEK certificate does not parse: %v", err)
	}
	// Pick the root the VCEK chains to. go-sev-guest then re-verifies
	// everything (KDS certificate profile, chain, signature) against it.
	candidates := []*trust.AMDRootCerts{v.amd[line]}
	candidates = append(candidates, v.sim[line]...)
	var root *trust.AMDRootCerts
	simulated := false
	var chainErrs []error
	for i, r := range candidates {
		opts := r.X509Options(now, abi.VcekReportSigner)
		if opts == nil {
			continue
		}
		if _, err := cert.Verify(*opts); err != nil {
			chainErrs = append(chainErrs, err)
			continue
		}
		root, simulated = r, i > 0
		break
	}
	if root == nil {
		detail := fmt.Sprintf("the VCEK certificate does not chain to AMD's %s root (ARK → ASK → VCEK)", line)
		if len(v.sim[line]) > 0 {
			detail += " nor to a trusted simulated root"
		} else {
			detail += "; simulated SNP chains are refused unless their root is configured as trusted (development only)"
		}
		return nil, snpCheckError("vcek-chain", "%s: %v", detail, errors.Join(chainErrs...))
	}
	// go-sev-guest keys trusted roots by the product line it derives from
	// CPUID, which is "Unknown" for some models Trustee maps to Genoa.
	gsgLine := kds.ProductLineFromFms(pb.GetCpuid1EaxFms())
	att := &spb.Attestation{Report: pb, CertificateChain: &spb.CertificateChain{VcekCert: cert.Raw}}
	opts := &verify.Options{
		DisableCertFetching: true,
		CheckRevocations:    false, // CRLs come from the network
		Getter:              noNetwork{},
		Now:                 now,
		TrustedRoots:        map[string][]*trust.AMDRootCerts{gsgLine: {root}},
	}
	if err := verify.SnpAttestationContext(ctx, att, opts); err != nil {
		if serr := verify.SnpReportSignature(raw, cert); serr != nil {
			return nil, snpCheckError("report-signature", "the report signature does not verify with the chip's VCEK: %v", serr)
		}
		return nil, snpCheckError("vcek-chain", "the VCEK certificate is not a valid AMD KDS VCEK for this chain: %v", err)
	}
	exts, err := kds.VcekCertificateExtensions(cert)
	if err != nil {
		return nil, snpCheckError("vcek-chain", "VCEK extensions: %v", err)
	}
	vc = &endorsedVCEK{cert: cert, exts: exts, root: root, simulated: simulated, notBefore: cert.NotBefore, notAfter: cert.NotAfter}
	for _, c := range []*x509.Certificate{root.ProductCerts.Ask, root.ProductCerts.Ark} {
		if c.NotBefore.After(vc.notBefore) {
			vc.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(vc.notAfter) {
			vc.notAfter = c.NotAfter
		}
	}
	v.mu.Lock()
	if len(v.vceks) >= vcekCacheEntries {
		clear(v.vceks)
	}
	v.vceks[key] = vc
	v.mu.Unlock()
	return vc, nil
}

// noNetwork is the HTTPS getter handed to go-sev-guest: the verifier never
// fetches certificates or CRLs.
type noNetwork struct{}

func (noNetwork) Get(url string) ([]byte, error) {
	return nil, fmt.Errorf("network access is disabled in the SNP verifier (wanted %s): provide certificates in the evidence or the VCEK cache", url)
}

package sim

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/google/go-sev-guest/abi"
)

// Guest policy bits (SEV-SNP ABI, "Guest Policy Structure").
const (
	// PolicyDebug is the DEBUG bit: the host may decrypt the guest.
	PolicyDebug uint64 = 1 << 19
	// PolicySMT is the SMT bit: the guest may run on SMT cores.
	PolicySMT uint64 = 1 << 16
	// policyReserved17 must be 1.
	policyReserved17 uint64 = 1 << 17
	// DefaultPolicy is what QEMU launches SNP guests with: SMT allowed,
	// no debug, no migration agent, ABI 0.0.
	DefaultPolicy = PolicySMT | policyReserved17
)

// Report versions the simulator can produce.
const (
	ReportVersion3 = 3
	ReportVersion5 = 5
)

// platformInfo is the PLATFORM_INFO of the simulated host: SMT enabled,
// ECC memory, alias check complete.
const platformInfo = 1<<0 | 1<<2 | 1<<5

// LaunchConfig is what the host fixes when it launches a guest: the guest
// cannot change any of it afterwards.
type LaunchConfig struct {
	// Measurement is the launch digest (MEASUREMENT).
	Measurement [abi.MeasurementSize]byte
	// HostData is HOST_DATA (Coffer/Trustee: the init-data digest).
	HostData [abi.HostDataSize]byte
	// Policy is the guest policy; 0 means DefaultPolicy. Reserved bit 17
	// is always set.
	Policy uint64
	// Debug sets the policy's DEBUG bit.
	Debug bool
	// GuestSVN, FamilyID and ImageID come from the ID block.
	GuestSVN uint32
	FamilyID [abi.FamilyIDSize]byte
	ImageID  [abi.ImageIDSize]byte
	// ReportVersion is ReportVersion3 (default) or ReportVersion5.
	ReportVersion uint32
	// ReportedTCB, when set, overrides REPORTED_TCB as a host's
	// SNP_SET_CONFIG does. The VCEK still certifies the chip's TCB, so a
	// different value makes verifiers fail their TCB check (tests of that
	// host misconfiguration).
	ReportedTCB *TCB
}

func (c LaunchConfig) policy() (uint64, error) {
	pol := c.Policy
	if pol == 0 {
		pol = DefaultPolicy
	}
	pol |= policyReserved17
	if c.Debug {
		pol |= PolicyDebug
	}
	if _, err := abi.ParseSnpPolicy(pol); err != nil {
		return 0, fmt.Errorf("guest policy 0x%x: %w", pol, err)
	}
	return pol, nil
}

// Guest is one launched guest on the simulated chip. It implements
// tee.SNPReportProvider.
type Guest struct {
	p        *Processor
	cfg      LaunchConfig
	policy   uint64
	reportID [abi.ReportIDSize]byte
}

// Launch starts a simulated guest with cfg (a fresh REPORT_ID).
func (p *Processor) Launch(cfg LaunchConfig) (*Guest, error) {
	pol, err := cfg.policy()
	if err != nil {
		return nil, err
	}
	switch cfg.ReportVersion {
	case 0:
		cfg.ReportVersion = ReportVersion3
	case ReportVersion3, ReportVersion5:
	default:
		return nil, fmt.Errorf("report version %d is not simulated: use 3 or 5", cfg.ReportVersion)
	}
	g := &Guest{p: p, cfg: cfg, policy: pol}
	if _, err := rand.Read(g.reportID[:]); err != nil {
		return nil, fmt.Errorf("generate report ID: %w", err)
	}
	return g, nil
}

// Report returns a signed ATTESTATION_REPORT for this guest with the given
// REPORT_DATA at VMPL 0.
func (g *Guest) Report(reportData [abi.ReportDataSize]byte) ([]byte, error) {
	return g.p.signedReport(g, reportData)
}

// GetExtendedReport implements tee.SNPReportProvider: the report plus the
// chip's certificate table (VCEK, ASK, ARK), as an SNP host that imported
// its certificates (snphost import) returns them.
func (g *Guest) GetExtendedReport(ctx context.Context, reportData [abi.ReportDataSize]byte) ([]byte, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	rep, err := g.Report(reportData)
	if err != nil {
		return nil, nil, err
	}
	return rep, g.p.CertTable(), nil
}

// signedReport lays out the report per the SEV-SNP ABI (Milan/Genoa TCB
// layout) and signs it with the VCEK.
func (p *Processor) signedReport(g *Guest, reportData [abi.ReportDataSize]byte) ([]byte, error) {
	d := make([]byte, abi.ReportSize)
	le := binary.LittleEndian
	tcb := []byte{p.tcb.Bootloader, p.tcb.TEE, 0, 0, 0, 0, p.tcb.SNP, p.tcb.Microcode}
	le.PutUint32(d[0x00:], g.cfg.ReportVersion)
	le.PutUint32(d[0x04:], g.cfg.GuestSVN)
	le.PutUint64(d[0x08:], g.policy)
	copy(d[0x10:0x20], g.cfg.FamilyID[:])
	copy(d[0x20:0x30], g.cfg.ImageID[:])
	le.PutUint32(d[0x30:], 0) // VMPL
	le.PutUint32(d[0x34:], abi.SignEcdsaP384Sha384)
	copy(d[0x38:0x40], tcb) // CURRENT_TCB
	le.PutUint64(d[0x40:], platformInfo)
	le.PutUint32(d[0x48:], abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}))
	copy(d[0x50:0x90], reportData[:])
	copy(d[0x90:0xC0], g.cfg.Measurement[:])
	copy(d[0xC0:0xE0], g.cfg.HostData[:])
	// ID_KEY_DIGEST, AUTHOR_KEY_DIGEST: zero (no ID block keys).
	copy(d[0x140:0x160], g.reportID[:])
	for i := 0x160; i < 0x180; i++ {
		d[i] = 0xFF // REPORT_ID_MA: no migration agent
	}
	reported := tcb
	if r := g.cfg.ReportedTCB; r != nil {
		reported = []byte{r.Bootloader, r.TEE, 0, 0, 0, 0, r.SNP, r.Microcode}
	}
	copy(d[0x180:0x188], reported) // REPORTED_TCB
	fam, mod, step := cpuid(p.product)
	d[0x188], d[0x189], d[0x18A] = fam, mod, step
	copy(d[0x1A0:0x1E0], p.chipID[:])
	copy(d[0x1E0:0x1E8], tcb)                // COMMITTED_TCB
	d[0x1E8], d[0x1E9], d[0x1EA] = 40, 55, 1 // CURRENT build/minor/major
	d[0x1EC], d[0x1ED], d[0x1EE] = 40, 55, 1 // COMMITTED
	copy(d[0x1F0:0x1F8], tcb)                // LAUNCH_TCB
	// LAUNCH_MIT_VECTOR / CURRENT_MIT_VECTOR (v5): zero.
	if err := p.sign(d); err != nil {
		return nil, err
	}
	return d, nil
}

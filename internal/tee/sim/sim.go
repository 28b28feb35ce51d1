package sim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/uuid"
)

// Product lines the simulator can impersonate. Turin is not offered: its
// TCB layout and VCEK extensions differ and go-sev-guest v0.15 cannot
// verify them.
const (
	ProductMilan = "Milan"
	ProductGenoa = "Genoa"
)

// Validity periods, as AMD issues them.
const (
	rootValidity = 25 * 365 * 24 * time.Hour // ARK, ASK
	vcekValidity = 7 * 365 * 24 * time.Hour  // VCEK
)

// TCB is a TCB_VERSION's security patch levels (Milan/Genoa layout).
type TCB struct {
	Bootloader uint8 `json:"bootloader"`
	TEE        uint8 `json:"tee"`
	SNP        uint8 `json:"snp"`
	Microcode  uint8 `json:"microcode"`
}

// defaultTCB is the TCB a new simulated chip reports unless told otherwise
// (values of a recent Genoa firmware).
var defaultTCB = TCB{Bootloader: 10, TEE: 0, SNP: 23, Microcode: 84}

// DefaultTCB returns the TCB a new simulated chip reports by default.
func DefaultTCB() TCB { return defaultTCB }

// Options configure a new simulated chip.
type Options struct {
	// Product is ProductMilan or ProductGenoa (default ProductGenoa).
	Product string
	// TCB is the chip's current, committed and reported TCB; the zero
	// value means DefaultTCB().
	TCB TCB
	// ChipID is the 64-byte CHIP_ID / VCEK hwID; nil means random.
	ChipID []byte
	// Now is the start of the certificates' validity (minus one hour of
	// clock-skew slack); zero means time.Now().
	Now time.Time
}

// Processor is a simulated AMD secure processor: a chip with an ARK → ASK
// → VCEK key chain structured like AMD's, which signs SEV-SNP attestation
// reports with the VCEK. It is safe for concurrent use.
type Processor struct {
	product string
	chipID  [abi.ChipIDSize]byte
	tcb     TCB

	arkKey  *rsa.PrivateKey
	ark     *x509.Certificate
	askKey  *rsa.PrivateKey
	ask     *x509.Certificate
	vcekKey *ecdsa.PrivateKey
	vcek    *x509.Certificate
}

// New generates a fresh simulated chip: two RSA-4096 keys (ARK, ASK; this
// takes a second or more) and a P-384 VCEK.
func New(opts Options) (*Processor, error) {
	product, err := checkProduct(opts.Product)
	if err != nil {
		return nil, err
	}
	tcb := opts.TCB
	if tcb == (TCB{}) {
		tcb = defaultTCB
	}
	if err := checkTCB(tcb); err != nil {
		return nil, err
	}
	p := &Processor{product: product, tcb: tcb}
	switch {
	case opts.ChipID == nil:
		if _, err := rand.Read(p.chipID[:]); err != nil {
			return nil, fmt.Errorf("generate chip ID: %w", err)
		}
	case len(opts.ChipID) == abi.ChipIDSize:
		copy(p.chipID[:], opts.ChipID)
	default:
		return nil, fmt.Errorf("chip ID is %d bytes, want %d", len(opts.ChipID), abi.ChipIDSize)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	notBefore := now.Add(-time.Hour).UTC().Truncate(time.Second)

	// The two RSA-4096 keys dominate; generate them in parallel.
	type keyResult struct {
		k   *rsa.PrivateKey
		err error
	}
	askCh := make(chan keyResult, 1)
	go func() {
		k, err := rsa.GenerateKey(rand.Reader, 4096)
		askCh <- keyResult{k, err}
	}()
	arkKey, err := rsa.GenerateKey(rand.Reader, 4096)
	askRes := <-askCh
	if err != nil {
		return nil, fmt.Errorf("generate simulated ARK key: %w", err)
	}
	if askRes.err != nil {
		return nil, fmt.Errorf("generate simulated ASK key: %w", askRes.err)
	}
	p.arkKey, p.askKey = arkKey, askRes.k
	if p.vcekKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		return nil, fmt.Errorf("generate simulated VCEK key: %w", err)
	}
	if err := p.issueCerts(notBefore); err != nil {
		return nil, err
	}
	return p, nil
}

func checkProduct(product string) (string, error) {
	switch product {
	case "":
		return ProductGenoa, nil
	case ProductMilan, ProductGenoa:
		return product, nil
	}
	return "", fmt.Errorf("simulated product %q is not supported: use %q or %q", product, ProductMilan, ProductGenoa)
}

func checkTCB(t TCB) error {
	// KDS: every SPL but the microcode's is 0..127.
	if t.Bootloader > 127 || t.TEE > 127 || t.SNP > 127 {
		return fmt.Errorf("TCB %+v: bootloader, TEE and SNP security patch levels must be 0..127", t)
	}
	return nil
}

// amdName is the subject/issuer name layout of every AMD KDS certificate.
func amdName(cn string) pkix.Name {
	return pkix.Name{
		OrganizationalUnit: []string{"Engineering"},
		Country:            []string{"US"},
		Locality:           []string{"Santa Clara"},
		Province:           []string{"CA"},
		Organization:       []string{"Advanced Micro Devices"},
		CommonName:         cn,
	}
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, fmt.Errorf("generate certificate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// issueCerts creates the ARK (self-signed), ASK (signed by the ARK) and
// VCEK (signed by the ASK) certificates for the keys in p.
func (p *Processor) issueCerts(notBefore time.Time) error {
	crl := kds.CrlLinkByRole(p.product, "ARK")
	caTemplate := func(cn string) (*x509.Certificate, error) {
		sn, err := serial()
		if err != nil {
			return nil, err
		}
		return &x509.Certificate{
			SerialNumber:          sn,
			Subject:               amdName(cn),
			NotBefore:             notBefore,
			NotAfter:              notBefore.Add(rootValidity),
			SignatureAlgorithm:    x509.SHA384WithRSAPSS,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
			CRLDistributionPoints: []string{crl},
		}, nil
	}
	arkT, err := caTemplate("ARK-" + p.product)
	if err != nil {
		return err
	}
	arkDER, err := x509.CreateCertificate(rand.Reader, arkT, arkT, &p.arkKey.PublicKey, p.arkKey)
	if err != nil {
		return fmt.Errorf("create simulated ARK certificate: %w", err)
	}
	if p.ark, err = x509.ParseCertificate(arkDER); err != nil {
		return fmt.Errorf("parse simulated ARK certificate: %w", err)
	}
	askT, err := caTemplate("SEV-" + p.product)
	if err != nil {
		return err
	}
	askDER, err := x509.CreateCertificate(rand.Reader, askT, p.ark, &p.askKey.PublicKey, p.arkKey)
	if err != nil {
		return fmt.Errorf("create simulated ASK certificate: %w", err)
	}
	if p.ask, err = x509.ParseCertificate(askDER); err != nil {
		return fmt.Errorf("parse simulated ASK certificate: %w", err)
	}
	return p.issueVCEK(notBefore)
}

// issueVCEK creates the VCEK certificate with the AMD KDS extensions
// (struct version, product name, TCB SPLs, hwID) and nothing else but the
// authority key identifier, as KDS-issued VCEKs have.
func (p *Processor) issueVCEK(notBefore time.Time) error {
	sn, err := serial()
	if err != nil {
		return err
	}
	exts, err := vcekExtensions(p.product, p.tcb, p.chipID[:])
	if err != nil {
		return err
	}
	t := &x509.Certificate{
		SerialNumber:       sn,
		Subject:            amdName("SEV-VCEK"),
		NotBefore:          notBefore,
		NotAfter:           notBefore.Add(vcekValidity),
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
		ExtraExtensions:    exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, t, p.ask, &p.vcekKey.PublicKey, p.askKey)
	if err != nil {
		return fmt.Errorf("create simulated VCEK certificate: %w", err)
	}
	if p.vcek, err = x509.ParseCertificate(der); err != nil {
		return fmt.Errorf("parse simulated VCEK certificate: %w", err)
	}
	return nil
}

func vcekExtensions(product string, tcb TCB, hwid []byte) ([]pkix.Extension, error) {
	integer := func(v uint8) []byte {
		b, _ := asn1.Marshal(int(v)) // cannot fail for an int
		return b
	}
	name, err := asn1.MarshalWithParams(productName(product), "ia5")
	if err != nil {
		return nil, fmt.Errorf("encode VCEK product name: %w", err)
	}
	return []pkix.Extension{
		{Id: kds.OidStructVersion, Value: integer(1)},
		{Id: kds.OidProductName1, Value: name},
		{Id: kds.OidBlSpl, Value: integer(tcb.Bootloader)},
		{Id: kds.OidTeeSpl, Value: integer(tcb.TEE)},
		{Id: kds.OidSpl4, Value: integer(0)},
		{Id: kds.OidSpl5, Value: integer(0)},
		{Id: kds.OidSpl6, Value: integer(0)},
		{Id: kds.OidSpl7, Value: integer(0)},
		{Id: kds.OidSnpSpl, Value: integer(tcb.SNP)},
		{Id: kds.OidUcodeSpl, Value: integer(tcb.Microcode)},
		// KDS puts the 64 raw hwID bytes directly in the extension value
		// (no inner OCTET STRING tag).
		{Id: kds.OidHwid, Value: bytes.Clone(hwid)},
	}, nil
}

// productName is the VCEK product-name extension: product line and the
// stepping the simulated CPUID reports.
func productName(product string) string { return product + "-B1" }

// cpuid returns the CPUID family, model and stepping the simulated chip
// reports (version 3+ reports carry them).
func cpuid(product string) (family, model, stepping uint8) {
	if product == ProductMilan {
		return 0x19, 0x01, 1
	}
	return 0x19, 0x11, 1
}

// Product returns the product line ("Milan" or "Genoa").
func (p *Processor) Product() string { return p.product }

// ChipID returns the chip's 64-byte CHIP_ID (the VCEK's hwID).
func (p *Processor) ChipID() [abi.ChipIDSize]byte { return p.chipID }

// TCB returns the chip's reported TCB.
func (p *Processor) TCB() TCB { return p.tcb }

// ARK returns the simulated AMD Root Key certificate.
func (p *Processor) ARK() *x509.Certificate { return p.ark }

// ASK returns the simulated AMD SEV Key certificate.
func (p *Processor) ASK() *x509.Certificate { return p.ask }

// VCEK returns the chip's VCEK certificate.
func (p *Processor) VCEK() *x509.Certificate { return p.vcek }

// RootCertsPEM returns the simulated ASK and ARK as PEM, in that order —
// the layout of AMD KDS's cert_chain endpoint — for a verifier's trusted
// simulated roots.
func (p *Processor) RootCertsPEM() []byte {
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: p.ask.Raw})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: p.ark.Raw})
	return b.Bytes()
}

// CertTable returns the GHCB certificate table a host would attach to
// extended reports of this chip: VCEK, ASK, ARK.
func (p *Processor) CertTable() []byte {
	t := abi.CertTable{Entries: []abi.CertTableEntry{
		{GUID: uuid.MustParse(abi.VcekGUID), RawCert: p.vcek.Raw},
		{GUID: uuid.MustParse(abi.AskGUID), RawCert: p.ask.Raw},
		{GUID: uuid.MustParse(abi.ArkGUID), RawCert: p.ark.Raw},
	}}
	return t.Marshal()
}

// sign writes the ECDSA P-384 SHA-384 signature of report[0:0x2A0] into
// the report's signature field (r and s little-endian, AMD layout).
func (p *Processor) sign(report []byte) error {
	digest := crypto.SHA384.New()
	digest.Write(abi.SignedComponent(report))
	r, s, err := ecdsa.Sign(rand.Reader, p.vcekKey, digest.Sum(nil))
	if err != nil {
		return fmt.Errorf("sign simulated report: %w", err)
	}
	return abi.SetSignature(r, s, report)
}

package tee

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/uuid"
)

// SNP evidence wire format.
//
// Trustee's SNP verifier (deps/verifier/src/snp) and guest-components' SNP
// attester (attestation-agent/attester/src/snp) exchange the serde JSON of
// virtee/sev's types:
//
//	{"attestation_report": <sev::firmware::guest::AttestationReport>,
//	 "cert_chain": null | [{"cert_type": "VCEK"|"ASK"|"ARK"|"VLEK"|"CRL"|"Empty"|{"OTHER":"<guid>"},
//	                        "data": [<DER bytes as numbers>]}, ...]}
//
// The report is not carried as its 1184 raw bytes but as its decoded fields
// (byte arrays as JSON arrays of numbers, TCB versions as objects); the
// verifier re-encodes the fields into the ABI layout to check the signature,
// exactly as the sev crate does (reserved bytes are zero). SNPEvidence,
// SNPReport and SNPCertEntry reproduce that format field for field and in
// the same member order as serde emits it.

// Processor generations as the sev crate identifies them; they decide the
// byte layout of TCB_VERSION fields.
const (
	genLegacy = iota // Milan, Genoa: [bl, tee, 0, 0, 0, 0, snp, ucode]
	genTurin         // Turin: [fmc, bl, tee, snp, 0, 0, 0, ucode]
)

// Certificate table entry types, as the sev crate's CertType serializes them.
const (
	SNPCertARK   = "ARK"
	SNPCertASK   = "ASK"
	SNPCertVCEK  = "VCEK"
	SNPCertVLEK  = "VLEK"
	SNPCertCRL   = "CRL"
	SNPCertEmpty = "Empty"
)

// crlGUID is the GHCB certificate-table GUID of the CRL entry (AMD GHCB spec).
const crlGUID = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea"

// MaxSNPCertTableBytes bounds the certificate table accepted from a device
// or a simulator (the GHCB limit is a few pages; 64 KiB is generous).
const MaxSNPCertTableBytes = 64 << 10

// SNPEvidence is the SNP primary evidence (tee-evidence.primary_evidence).
type SNPEvidence struct {
	AttestationReport SNPReport `json:"attestation_report"`
	// CertChain is the extended report's certificate table; nil marshals as
	// null (serde's None), as when the host provided no certificates.
	CertChain []SNPCertEntry `json:"cert_chain"`
}

// SNPCertEntry is one certificate table entry.
type SNPCertEntry struct {
	CertType SNPCertType `json:"cert_type"`
	Data     ByteArray   `json:"data"`
}

// SNPCertType is a certificate type: one of the SNPCert* names, or, for
// entries with another GUID, that GUID (lower-case, hyphenated), which is
// serialized as {"OTHER":"<guid>"}.
type SNPCertType string

// SNPTCBVersion is a TCB_VERSION as the sev crate serializes it. FMC is
// only present (non-nil) on Turin.
type SNPTCBVersion struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

// SNPFirmwareVersion is a firmware version triple (CURRENT_*, COMMITTED_*).
type SNPFirmwareVersion struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

// SNPSignature is the report signature: ECDSA P-384 r and s, each a
// 72-byte little-endian integer, as in the ABI.
type SNPSignature struct {
	R ByteArray `json:"r"`
	S ByteArray `json:"s"`
}

// SNPReport is sev::firmware::guest::AttestationReport (sev 6.x/7.x serde
// layout). Field order matters: it is the order serde emits.
type SNPReport struct {
	Version          uint32             `json:"version"`
	GuestSVN         uint32             `json:"guest_svn"`
	Policy           uint64             `json:"policy"`
	FamilyID         ByteArray          `json:"family_id"`
	ImageID          ByteArray          `json:"image_id"`
	VMPL             uint32             `json:"vmpl"`
	SigAlgo          uint32             `json:"sig_algo"`
	CurrentTCB       SNPTCBVersion      `json:"current_tcb"`
	PlatInfo         uint64             `json:"plat_info"`
	KeyInfo          uint32             `json:"key_info"`
	ReportData       ByteArray          `json:"report_data"`
	Measurement      ByteArray          `json:"measurement"`
	HostData         ByteArray          `json:"host_data"`
	IDKeyDigest      ByteArray          `json:"id_key_digest"`
	AuthorKeyDigest  ByteArray          `json:"author_key_digest"`
	ReportID         ByteArray          `json:"report_id"`
	ReportIDMA       ByteArray          `json:"report_id_ma"`
	ReportedTCB      SNPTCBVersion      `json:"reported_tcb"`
	CPUIDFamID       *uint8             `json:"cpuid_fam_id"`
	CPUIDModID       *uint8             `json:"cpuid_mod_id"`
	CPUIDStep        *uint8             `json:"cpuid_step"`
	ChipID           ByteArray          `json:"chip_id"`
	CommittedTCB     SNPTCBVersion      `json:"committed_tcb"`
	Current          SNPFirmwareVersion `json:"current"`
	Committed        SNPFirmwareVersion `json:"committed"`
	LaunchTCB        SNPTCBVersion      `json:"launch_tcb"`
	LaunchMitVector  *uint64            `json:"launch_mit_vector"`
	CurrentMitVector *uint64            `json:"current_mit_vector"`
	Signature        SNPSignature       `json:"signature"`
}

// ByteArray is a byte string serialized as serde serializes [u8; N] and
// Vec<u8>: a JSON array of numbers 0..255 (not base64).
type ByteArray []byte

// MarshalJSON implements json.Marshaler.
func (b ByteArray) MarshalJSON() ([]byte, error) {
	if b == nil {
		return []byte("null"), nil
	}
	out := make([]byte, 0, 2+4*len(b))
	out = append(out, '[')
	for i, v := range b {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendUint(out, uint64(v), 10)
	}
	return append(out, ']'), nil
}

// UnmarshalJSON implements json.Unmarshaler. It accepts only an array of
// integers in 0..255 (no signs, fractions or exponents); encoding/json has
// already checked that data is syntactically valid JSON.
func (b *ByteArray) UnmarshalJSON(data []byte) error {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return errors.New("expected an array of byte values (numbers 0..255)")
	}
	i = skipSpace(data, i+1)
	out := make([]byte, 0, len(data)/2)
	if i < len(data) && data[i] == ']' {
		*b = out
		return nil
	}
	for {
		start := i
		v := 0
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			v = v*10 + int(data[i]-'0')
			if v > 255 {
				return fmt.Errorf("byte value at element %d is larger than 255", len(out))
			}
			i++
		}
		if i == start {
			return fmt.Errorf("element %d of a byte array is not an integer 0..255", len(out))
		}
		out = append(out, byte(v))
		i = skipSpace(data, i)
		if i >= len(data) {
			return errors.New("unterminated byte array")
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case ']':
			*b = out
			return nil
		default:
			return fmt.Errorf("element %d of a byte array is not an integer 0..255", len(out)-1)
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// MarshalJSON implements json.Marshaler.
func (t SNPCertType) MarshalJSON() ([]byte, error) {
	switch t {
	case SNPCertARK, SNPCertASK, SNPCertVCEK, SNPCertVLEK, SNPCertCRL, SNPCertEmpty:
		return json.Marshal(string(t))
	}
	if _, err := uuid.Parse(string(t)); err != nil {
		return nil, fmt.Errorf("certificate type %q is neither a known name nor a GUID", string(t))
	}
	return json.Marshal(map[string]string{"OTHER": string(t)})
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *SNPCertType) UnmarshalJSON(data []byte) error {
	var name string
	if err := json.Unmarshal(data, &name); err == nil {
		switch name {
		case SNPCertARK, SNPCertASK, SNPCertVCEK, SNPCertVLEK, SNPCertCRL, SNPCertEmpty:
			*t = SNPCertType(name)
			return nil
		}
		return fmt.Errorf("unknown certificate type %q", name)
	}
	var other struct {
		OTHER *string `json:"OTHER"`
	}
	if err := json.Unmarshal(data, &other); err != nil || other.OTHER == nil {
		return errors.New(`certificate type must be a name or {"OTHER":"<guid>"}`)
	}
	g, err := uuid.Parse(*other.OTHER)
	if err != nil {
		return fmt.Errorf("OTHER certificate type has an invalid GUID: %w", err)
	}
	*t = SNPCertType(g.String())
	return nil
}

func certTypeFromGUID(g uuid.UUID) SNPCertType {
	switch g.String() {
	case abi.ArkGUID:
		return SNPCertARK
	case abi.AskGUID:
		return SNPCertASK
	case abi.VcekGUID:
		return SNPCertVCEK
	case abi.VlekGUID:
		return SNPCertVLEK
	case crlGUID:
		return SNPCertCRL
	case "00000000-0000-0000-0000-000000000000":
		return SNPCertEmpty
	}
	return SNPCertType(g.String())
}

// ParseSNPEvidence decodes SNP evidence JSON and checks the structural
// expectations of the format (field sizes, a known processor generation).
// It does not verify anything cryptographically.
func ParseSNPEvidence(data []byte) (*SNPEvidence, error) {
	var ev SNPEvidence
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&ev); err != nil {
		return nil, fmt.Errorf("decode SNP evidence JSON: %w", err)
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) != 0 {
		return nil, errors.New("decode SNP evidence JSON: trailing data after the evidence object")
	}
	if err := ev.AttestationReport.check(); err != nil {
		return nil, err
	}
	return &ev, nil
}

// Cert returns the data of the first certificate-table entry of type t.
func (e *SNPEvidence) Cert(t SNPCertType) []byte {
	for _, c := range e.CertChain {
		if c.CertType == t {
			return c.Data
		}
	}
	return nil
}

// NewSNPEvidence builds evidence from a raw ATTESTATION_REPORT (at least
// abi.ReportSize bytes; extra bytes are ignored) and a GHCB certificate
// table (may be empty: cert_chain is then null).
func NewSNPEvidence(rawReport, certTable []byte) (*SNPEvidence, error) {
	rep, err := SNPReportFromABI(rawReport)
	if err != nil {
		return nil, err
	}
	ev := &SNPEvidence{AttestationReport: *rep}
	if len(certTable) > 0 {
		if len(certTable) > MaxSNPCertTableBytes {
			return nil, fmt.Errorf("SNP certificate table is %d bytes, larger than the %d byte limit", len(certTable), MaxSNPCertTableBytes)
		}
		chain, err := parseSNPCertTable(certTable)
		if err != nil {
			return nil, fmt.Errorf("parse SNP certificate table: %w", err)
		}
		ev.CertChain = chain
	}
	return ev, nil
}

// parseSNPCertTable decodes a GHCB certificate table: 24-byte header
// entries {GUID, offset, length} ended by an all-zero entry, each naming a
// byte range of the table after the header. go-sev-guest's
// CertTable.Unmarshal is not used: it checks offset+length in uint32
// arithmetic, so a wrapping entry (from the host, which fills the table)
// made it allocate up to 4 GiB and panic. Entries may not name more than
// MaxSNPCertTableBytes in total (overlapping entries could otherwise
// multiply the table's size).
func parseSNPCertTable(table []byte) ([]SNPCertEntry, error) {
	header, err := abi.ParseSnpCertTableHeader(table)
	if err != nil {
		return nil, err
	}
	var chain []SNPCertEntry
	total := 0
	for i, e := range header {
		end := uint64(e.Offset) + uint64(e.Length)
		if end > uint64(len(table)) {
			return nil, fmt.Errorf("entry %d names bytes %d..%d, past the end of the %d byte table", i, e.Offset, end, len(table))
		}
		if e.GUID.String() == abi.ExtraPlatformInfoGUID {
			// go-sev-guest's own annotation, not a host certificate.
			continue
		}
		if total += int(e.Length); total > MaxSNPCertTableBytes {
			return nil, fmt.Errorf("the entries name more than %d bytes in total", MaxSNPCertTableBytes)
		}
		chain = append(chain, SNPCertEntry{CertType: certTypeFromGUID(e.GUID), Data: ByteArray(bytes.Clone(table[e.Offset:end]))})
	}
	return chain, nil
}

func (r *SNPReport) check() error {
	sizes := []struct {
		name string
		b    []byte
		n    int
	}{
		{"family_id", r.FamilyID, abi.FamilyIDSize},
		{"image_id", r.ImageID, abi.ImageIDSize},
		{"report_data", r.ReportData, abi.ReportDataSize},
		{"measurement", r.Measurement, abi.MeasurementSize},
		{"host_data", r.HostData, abi.HostDataSize},
		{"id_key_digest", r.IDKeyDigest, abi.IDKeyDigestSize},
		{"author_key_digest", r.AuthorKeyDigest, abi.AuthorKeyDigestSize},
		{"report_id", r.ReportID, abi.ReportIDSize},
		{"report_id_ma", r.ReportIDMA, abi.ReportIDMASize},
		{"chip_id", r.ChipID, abi.ChipIDSize},
		{"signature.r", r.Signature.R, 72},
		{"signature.s", r.Signature.S, 72},
	}
	for _, s := range sizes {
		if len(s.b) != s.n {
			return fmt.Errorf("SNP report field %s has %d bytes, want %d", s.name, len(s.b), s.n)
		}
	}
	if r.Version < 2 {
		return fmt.Errorf("SNP report version %d is not supported (need 2 or later)", r.Version)
	}
	if _, err := r.generation(); err != nil {
		return err
	}
	return nil
}

// ProductLine returns the processor product line ("Milan", "Genoa",
// "Turin") from the report's CPUID fields (version 3 and later), using the
// same family/model ranges as Trustee and the sev crate.
func (r *SNPReport) ProductLine() (string, error) {
	if r.CPUIDFamID == nil || r.CPUIDModID == nil {
		return "", errors.New("SNP report has no CPUID family/model (report version 2): update the host's SEV firmware to get version 3+ reports")
	}
	return productLine(*r.CPUIDFamID, *r.CPUIDModID)
}

func productLine(fam, mod uint8) (string, error) {
	switch fam {
	case 0x19:
		switch {
		case mod <= 0x0F:
			return "Milan", nil
		case mod >= 0x10 && mod <= 0x1F, mod >= 0xA0 && mod <= 0xAF:
			return "Genoa", nil
		}
	case 0x1A:
		if mod <= 0x11 {
			return "Turin", nil
		}
	}
	return "", fmt.Errorf("SNP report CPUID family 0x%x model 0x%x is not a known SEV-SNP processor", fam, mod)
}

func (r *SNPReport) generation() (int, error) {
	if r.Version == 2 {
		// As the sev crate does: v2 reports carry no CPUID, so a chip ID
		// with only its first 8 bytes set is taken as Turin.
		if len(r.ChipID) == abi.ChipIDSize && bytes.Equal(r.ChipID[8:], make([]byte, 56)) && !bytes.Equal(r.ChipID[:8], make([]byte, 8)) {
			return genTurin, nil
		}
		return genLegacy, nil
	}
	line, err := r.ProductLine()
	if err != nil {
		return 0, err
	}
	if line == "Turin" {
		return genTurin, nil
	}
	return genLegacy, nil
}

func (t SNPTCBVersion) bytes(gen int) []byte {
	if gen == genTurin {
		var fmc uint8
		if t.FMC != nil {
			fmc = *t.FMC
		}
		return []byte{fmc, t.Bootloader, t.TEE, t.SNP, 0, 0, 0, t.Microcode}
	}
	return []byte{t.Bootloader, t.TEE, 0, 0, 0, 0, t.SNP, t.Microcode}
}

func tcbFromBytes(b []byte, gen int) SNPTCBVersion {
	if gen == genTurin {
		fmc := b[0]
		return SNPTCBVersion{FMC: &fmc, Bootloader: b[1], TEE: b[2], SNP: b[3], Microcode: b[7]}
	}
	return SNPTCBVersion{Bootloader: b[0], TEE: b[1], SNP: b[6], Microcode: b[7]}
}

// ABIBytes encodes the report into the 1184-byte ATTESTATION_REPORT ABI
// layout (SEV-SNP ABI spec, table "ATTESTATION_REPORT Structure"), the
// bytes the signature covers, exactly as the sev crate's write_bytes does.
func (r *SNPReport) ABIBytes() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	gen, _ := r.generation()
	d := make([]byte, abi.ReportSize)
	le := binary.LittleEndian
	le.PutUint32(d[0x00:], r.Version)
	le.PutUint32(d[0x04:], r.GuestSVN)
	le.PutUint64(d[0x08:], r.Policy)
	copy(d[0x10:0x20], r.FamilyID)
	copy(d[0x20:0x30], r.ImageID)
	le.PutUint32(d[0x30:], r.VMPL)
	le.PutUint32(d[0x34:], r.SigAlgo)
	copy(d[0x38:0x40], r.CurrentTCB.bytes(gen))
	le.PutUint64(d[0x40:], r.PlatInfo)
	le.PutUint32(d[0x48:], r.KeyInfo)
	copy(d[0x50:0x90], r.ReportData)
	copy(d[0x90:0xC0], r.Measurement)
	copy(d[0xC0:0xE0], r.HostData)
	copy(d[0xE0:0x110], r.IDKeyDigest)
	copy(d[0x110:0x140], r.AuthorKeyDigest)
	copy(d[0x140:0x160], r.ReportID)
	copy(d[0x160:0x180], r.ReportIDMA)
	copy(d[0x180:0x188], r.ReportedTCB.bytes(gen))
	if r.Version >= 3 {
		d[0x188] = deref8(r.CPUIDFamID)
		d[0x189] = deref8(r.CPUIDModID)
		d[0x18A] = deref8(r.CPUIDStep)
	}
	copy(d[0x1A0:0x1E0], r.ChipID)
	copy(d[0x1E0:0x1E8], r.CommittedTCB.bytes(gen))
	d[0x1E8], d[0x1E9], d[0x1EA] = r.Current.Build, r.Current.Minor, r.Current.Major
	d[0x1EC], d[0x1ED], d[0x1EE] = r.Committed.Build, r.Committed.Minor, r.Committed.Major
	copy(d[0x1F0:0x1F8], r.LaunchTCB.bytes(gen))
	if r.Version >= 5 {
		le.PutUint64(d[0x1F8:], deref64(r.LaunchMitVector))
		le.PutUint64(d[0x200:], deref64(r.CurrentMitVector))
	}
	copy(d[0x2A0:0x2E8], r.Signature.R)
	copy(d[0x2E8:0x330], r.Signature.S)
	return d, nil
}

// SNPReportFromABI decodes a raw ATTESTATION_REPORT (as the sev crate's
// from_bytes does: reserved bytes are dropped).
func SNPReportFromABI(raw []byte) (*SNPReport, error) {
	if len(raw) < abi.ReportSize {
		return nil, fmt.Errorf("SNP report is %d bytes, want %d", len(raw), abi.ReportSize)
	}
	d := raw[:abi.ReportSize]
	le := binary.LittleEndian
	r := &SNPReport{
		Version:         le.Uint32(d[0x00:]),
		GuestSVN:        le.Uint32(d[0x04:]),
		Policy:          le.Uint64(d[0x08:]),
		FamilyID:        clone(d[0x10:0x20]),
		ImageID:         clone(d[0x20:0x30]),
		VMPL:            le.Uint32(d[0x30:]),
		SigAlgo:         le.Uint32(d[0x34:]),
		PlatInfo:        le.Uint64(d[0x40:]),
		KeyInfo:         le.Uint32(d[0x48:]),
		ReportData:      clone(d[0x50:0x90]),
		Measurement:     clone(d[0x90:0xC0]),
		HostData:        clone(d[0xC0:0xE0]),
		IDKeyDigest:     clone(d[0xE0:0x110]),
		AuthorKeyDigest: clone(d[0x110:0x140]),
		ReportID:        clone(d[0x140:0x160]),
		ReportIDMA:      clone(d[0x160:0x180]),
		ChipID:          clone(d[0x1A0:0x1E0]),
		Current:         SNPFirmwareVersion{Build: d[0x1E8], Minor: d[0x1E9], Major: d[0x1EA]},
		Committed:       SNPFirmwareVersion{Build: d[0x1EC], Minor: d[0x1ED], Major: d[0x1EE]},
		Signature:       SNPSignature{R: clone(d[0x2A0:0x2E8]), S: clone(d[0x2E8:0x330])},
	}
	if r.Version >= 3 {
		fam, mod, step := d[0x188], d[0x189], d[0x18A]
		r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep = &fam, &mod, &step
	}
	if r.Version >= 5 {
		lm, cm := le.Uint64(d[0x1F8:]), le.Uint64(d[0x200:])
		r.LaunchMitVector, r.CurrentMitVector = &lm, &cm
	}
	if r.Version < 2 {
		return nil, fmt.Errorf("SNP report version %d is not supported (need 2 or later)", r.Version)
	}
	gen, err := r.generation()
	if err != nil {
		return nil, err
	}
	r.CurrentTCB = tcbFromBytes(d[0x38:0x40], gen)
	r.ReportedTCB = tcbFromBytes(d[0x180:0x188], gen)
	r.CommittedTCB = tcbFromBytes(d[0x1E0:0x1E8], gen)
	r.LaunchTCB = tcbFromBytes(d[0x1F0:0x1F8], gen)
	return r, nil
}

func clone(b []byte) ByteArray { return ByteArray(bytes.Clone(b)) }

func deref8(p *uint8) uint8 {
	if p == nil {
		return 0
	}
	return *p
}

func deref64(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

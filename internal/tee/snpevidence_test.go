package tee

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

func readTrusteeEvidence(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/trustee-genoa-evidence.json")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestTrusteeEvidenceSignatureVerifies proves the JSON → ABI re-encoding is
// byte-exact: the AMD secure processor's signature over the real report
// verifies with the VCEK that came with it.
func TestTrusteeEvidenceSignatureVerifies(t *testing.T) {
	ev, err := ParseSNPEvidence(readTrusteeEvidence(t))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ev.AttestationReport.ABIBytes()
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := trust.ParseCert(ev.Cert(SNPCertVCEK))
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.SnpReportSignature(raw, vcek); err != nil {
		t.Fatalf("signature over the re-encoded report: %v", err)
	}
	if line, _ := ev.AttestationReport.ProductLine(); line != "Genoa" {
		t.Errorf("product line %q", line)
	}
	// Decoding the ABI bytes gives the same report back, and our JSON of
	// it parses to the same bytes.
	back, err := SNPReportFromABI(raw)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(SNPEvidence{AttestationReport: *back, CertChain: ev.CertChain})
	if err != nil {
		t.Fatal(err)
	}
	ev2, err := ParseSNPEvidence(out)
	if err != nil {
		t.Fatal(err)
	}
	raw2, _ := ev2.AttestationReport.ABIBytes()
	if !bytes.Equal(raw, raw2) {
		t.Fatal("ABI bytes differ after a JSON round trip")
	}
	// A flipped measurement bit breaks the signature.
	ev2.AttestationReport.Measurement[0] ^= 1
	raw3, _ := ev2.AttestationReport.ABIBytes()
	if verify.SnpReportSignature(raw3, vcek) == nil {
		t.Fatal("tampered report verified")
	}
}

// TestSNPEvidenceJSONShape pins the member names and encodings serde uses.
func TestSNPEvidenceJSONShape(t *testing.T) {
	raw := syntheticReport(3, 0x19, 0x11)
	ev, err := NewSNPEvidence(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{
		`{"attestation_report":{"version":3,"guest_svn":0,"policy":196608,"family_id":[0,0,`,
		`"current_tcb":{"fmc":null,"bootloader":10,"tee":1,"snp":23,"microcode":84},"plat_info":37,"key_info":0,"report_data":[1,2,3,0,`,
		`"cpuid_fam_id":25,"cpuid_mod_id":17,"cpuid_step":1,"chip_id":[`,
		`"current":{"major":1,"minor":55,"build":40},"committed":{"major":1,"minor":55,"build":40}`,
		`"launch_mit_vector":null,"current_mit_vector":null,"signature":{"r":[`,
		`]}},"cert_chain":null}`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("evidence JSON lacks %s\n%s", want, s)
		}
	}
}

// syntheticReport is an unsigned report with recognizable fields.
func syntheticReport(version uint32, fam, mod uint8) []byte {
	d := make([]byte, abi.ReportSize)
	le := binary.LittleEndian
	le.PutUint32(d[0:], version)
	le.PutUint64(d[8:], 0x30000)
	le.PutUint32(d[0x34:], 1)
	le.PutUint64(d[0x40:], 37)
	copy(d[0x50:], []byte{1, 2, 3})
	turin := fam == 0x1A || (version == 2 && mod == 0xFF)
	tcb := []byte{10, 1, 0, 0, 0, 0, 23, 84}
	if turin {
		tcb = []byte{4, 10, 1, 23, 0, 0, 0, 84}
	}
	for _, off := range []int{0x38, 0x180, 0x1E0, 0x1F0} {
		copy(d[off:], tcb)
	}
	if version >= 3 {
		d[0x188], d[0x189], d[0x18A] = fam, mod, 1
	}
	for i := range 64 {
		d[0x1A0+i] = byte(i + 1)
	}
	if turin {
		clear(d[0x1A8:0x1E0]) // Turin-like chip ID
	}
	d[0x1E8], d[0x1E9], d[0x1EA] = 40, 55, 1
	d[0x1EC], d[0x1ED], d[0x1EE] = 40, 55, 1
	if version >= 5 {
		le.PutUint64(d[0x1F8:], 7)
		le.PutUint64(d[0x200:], 9)
	}
	for i := 0x2A0; i < 0x330; i++ {
		d[i] = byte(i)
	}
	return d
}

func TestSNPReportRoundTrips(t *testing.T) {
	cases := []struct {
		name     string
		version  uint32
		fam, mod uint8
		fmc      bool
	}{
		{"v3 Genoa", 3, 0x19, 0x11, false},
		{"v3 Milan", 3, 0x19, 0x01, false},
		{"v5 Genoa Siena", 5, 0x19, 0xA0, false},
		{"v5 Turin", 5, 0x1A, 0x02, true},
		{"v2 legacy", 2, 0, 0, false},
		{"v2 Turin-like chip", 2, 0, 0xFF, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := syntheticReport(c.version, c.fam, c.mod)
			if c.version == 2 {
				clear(raw[0x188:0x18B])
			}
			ev, err := NewSNPEvidence(raw, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := ev.AttestationReport
			if (r.ReportedTCB.FMC != nil) != c.fmc {
				t.Errorf("fmc presence %v, want %v", r.ReportedTCB.FMC != nil, c.fmc)
			}
			if r.ReportedTCB.Bootloader != 10 || r.ReportedTCB.TEE != 1 || r.ReportedTCB.SNP != 23 || r.ReportedTCB.Microcode != 84 {
				t.Errorf("reported TCB %+v", r.ReportedTCB)
			}
			if (r.LaunchMitVector != nil) != (c.version >= 5) || (r.CPUIDFamID != nil) != (c.version >= 3) {
				t.Errorf("optional fields: mit %v cpuid %v", r.LaunchMitVector, r.CPUIDFamID)
			}
			js, _ := json.Marshal(ev)
			back, err := ParseSNPEvidence(js)
			if err != nil {
				t.Fatal(err)
			}
			got, err := back.AttestationReport.ABIBytes()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, raw) {
				for i := range got {
					if got[i] != raw[i] {
						t.Fatalf("first difference at 0x%x: %d != %d", i, got[i], raw[i])
					}
				}
			}
		})
	}
}

func TestSNPEvidenceCertChain(t *testing.T) {
	raw := syntheticReport(3, 0x19, 0x11)
	table := abi.CertTable{Entries: []abi.CertTableEntry{
		{GUID: mustUUID(abi.VcekGUID), RawCert: []byte{1, 2}},
		{GUID: mustUUID(abi.AskGUID), RawCert: []byte{3}},
		{GUID: mustUUID(abi.ArkGUID), RawCert: []byte{4}},
		{GUID: mustUUID(abi.ExtraPlatformInfoGUID), RawCert: []byte{5}},
		{GUID: mustUUID("11111111-2222-3333-4444-555555555555"), RawCert: []byte{6}},
	}}
	ev, err := NewSNPEvidence(raw, table.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(ev.CertChain)
	want := `[{"cert_type":"VCEK","data":[1,2]},{"cert_type":"ASK","data":[3]},{"cert_type":"ARK","data":[4]},{"cert_type":{"OTHER":"11111111-2222-3333-4444-555555555555"},"data":[6]}]`
	if string(js) != want {
		t.Fatalf("cert_chain\n got %s\nwant %s", js, want)
	}
	var back []SNPCertEntry
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back[3].CertType != "11111111-2222-3333-4444-555555555555" || !bytes.Equal(back[0].Data, []byte{1, 2}) {
		t.Fatalf("round trip %+v", back)
	}
	if _, err := NewSNPEvidence(raw, []byte{1, 2, 3}); err == nil {
		t.Error("garbage certificate table accepted")
	}
	// Entries whose offset + length wraps around 2^32 (go-sev-guest's
	// CertTable.Unmarshal panicked on them), and entries that together
	// name more than MaxSNPCertTableBytes of a smaller table, are refused.
	term := certTableEntry("", 0, 0)
	for name, table := range map[string][]byte{
		"offset wraps": append(append(certTableEntry(abi.VcekGUID, 0xFFFFFFF0, 0x20), term...), 1, 2, 3, 4, 5, 6, 7, 8),
		"length wraps": append(append(certTableEntry(abi.VcekGUID, 48, 0xFFFFFFD8), term...), 1, 2, 3, 4, 5, 6, 7, 8),
		"overlapping": append(append(append(certTableEntry(abi.VcekGUID, 72, 40<<10), certTableEntry(abi.AskGUID, 72, 40<<10)...), term...),
			make([]byte, 40<<10)...),
	} {
		if _, err := NewSNPEvidence(raw, table); err == nil {
			t.Errorf("%s: certificate table accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestByteArrayJSON(t *testing.T) {
	good := map[string][]byte{
		`[]`:               {},
		`[0,255, 7 ]`:      {0, 255, 7},
		" [\n1,\t2\r] ":    {1, 2},
		`[00]`:             nil, // invalid JSON, rejected by encoding/json
		`[256]`:            nil,
		`[-1]`:             nil,
		`[1.0]`:            nil,
		`[1e2]`:            nil,
		`["1"]`:            nil,
		`[[1]]`:            nil,
		`null`:             nil,
		`"AQI="`:           nil,
		`{"0":1}`:          nil,
		`[1,]`:             nil,
		`[99999999999999]`: nil,
	}
	for in, want := range good {
		var b ByteArray
		err := json.Unmarshal([]byte(in), &b)
		if want == nil {
			if err == nil {
				t.Errorf("%q accepted as %v", in, []byte(b))
			}
			continue
		}
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("%q: %v %v", in, []byte(b), err)
		}
	}
	out, _ := json.Marshal(ByteArray{0, 1, 255})
	if string(out) != `[0,1,255]` {
		t.Errorf("marshal %s", out)
	}
}

func TestParseSNPEvidenceRejects(t *testing.T) {
	valid, _ := json.Marshal(mustEvidence(t, syntheticReport(3, 0x19, 0x11)))
	cases := map[string]string{
		"not JSON":        `{`,
		"trailing":        string(valid) + `{}`,
		"trailing brace":  string(valid) + ` }`,
		"short measure":   strings.Replace(string(valid), `"measurement":[0,`, `"measurement":[`, 1),
		"unknown cert":    strings.Replace(string(valid), `"cert_chain":null`, `"cert_chain":[{"cert_type":"PEK","data":[]}]`, 1),
		"bad OTHER":       strings.Replace(string(valid), `"cert_chain":null`, `"cert_chain":[{"cert_type":{"OTHER":"x"},"data":[]}]`, 1),
		"unknown CPU":     strings.Replace(string(valid), `"cpuid_fam_id":25`, `"cpuid_fam_id":23`, 1),
		"no CPUID in v3":  strings.Replace(string(valid), `"cpuid_fam_id":25`, `"cpuid_fam_id":null`, 1),
		"version 1":       strings.Replace(string(valid), `"version":3`, `"version":1`, 1),
		"tcb overflow":    strings.Replace(string(valid), `"bootloader":10`, `"bootloader":300`, 1),
		"missing report":  `{"cert_chain":null}`,
		"report is array": `{"attestation_report":[]}`,
	}
	for name, in := range cases {
		if _, err := ParseSNPEvidence([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustEvidence(t testing.TB, raw []byte) *SNPEvidence {
	t.Helper()
	ev, err := NewSNPEvidence(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// FuzzParseSNPEvidence: the parser never panics, and whatever it accepts
// encodes to ABI bytes that survive a round trip.
func FuzzParseSNPEvidence(f *testing.F) {
	f.Add(readTrusteeEvidence(f))
	for _, v := range []uint32{2, 3, 5} {
		js, _ := json.Marshal(mustEvidence(f, syntheticReport(v, 0x19, 0x11)))
		f.Add(js)
	}
	f.Add([]byte(`{"attestation_report":{},"cert_chain":null}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := ParseSNPEvidence(data)
		if err != nil {
			return
		}
		raw, err := ev.AttestationReport.ABIBytes()
		if err != nil {
			t.Fatalf("accepted evidence does not encode: %v", err)
		}
		back, err := SNPReportFromABI(raw)
		if err != nil {
			t.Fatalf("encoded report does not decode: %v", err)
		}
		raw2, err := back.ABIBytes()
		if err != nil || !bytes.Equal(raw, raw2) {
			t.Fatalf("ABI round trip differs (err %v)", err)
		}
	})
}

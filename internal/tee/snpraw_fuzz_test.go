package tee

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/uuid"

	"github.com/coffer-project/coffer/internal/tee/sim"
)

// simReports are signed reports of the simulated chip (versions 3 and 5).
func simReports(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	for _, v := range []uint32{sim.ReportVersion3, sim.ReportVersion5} {
		g, err := simChip(f).Launch(sim.LaunchConfig{Measurement: [48]byte{1, 2, 3}, HostData: [32]byte{4}, ReportVersion: v})
		if err != nil {
			f.Fatal(err)
		}
		rep, err := g.Report([abi.ReportDataSize]byte{5, 6, 7})
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, rep)
	}
	return out
}

// isTurin tells, independently of the parser, whether a raw report uses
// the Turin TCB layout.
func isTurin(d []byte) bool {
	if binary.LittleEndian.Uint32(d) == 2 {
		return !bytes.Equal(d[0x1A0:0x1A8], make([]byte, 8)) && bytes.Equal(d[0x1A8:0x1E0], make([]byte, 56))
	}
	return d[0x188] == 0x1A
}

// FuzzSNPReportFromABI: SNPReportFromABI never panics; it accepts exactly
// the reports of at least abi.ReportSize bytes, version 2 or later, with
// a known processor (version 3+); an accepted report has its fields at
// their ABI offsets, re-encodes (ABIBytes) to the input with only
// reserved and unused TCB bytes cleared, decodes from that encoding and
// from its JSON evidence to the same report, and agrees with
// go-sev-guest's decoder where that one accepts the input.
func FuzzSNPReportFromABI(f *testing.F) {
	for _, r := range simReports(f) {
		f.Add(r)
		f.Add(append(bytes.Clone(r), 0xEE, 0xEE)) // trailing bytes are ignored
	}
	for _, c := range []struct {
		v        uint32
		fam, mod uint8
	}{{2, 0, 0}, {2, 0, 0xFF}, {3, 0x19, 0x11}, {3, 0x19, 0x01}, {5, 0x19, 0xA0}, {5, 0x1A, 0x02}, {3, 0x17, 0x31}, {1, 0x19, 0x11}, {0xFFFFFFFF, 0x1A, 0x11}} {
		f.Add(syntheticReport(c.v, c.fam, c.mod))
	}
	if ev, err := ParseSNPEvidence(readTrusteeEvidence(f)); err == nil {
		if raw, err := ev.AttestationReport.ABIBytes(); err == nil {
			f.Add(raw)
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, abi.ReportSize-1))
	f.Add(bytes.Repeat([]byte{0xFF}, abi.ReportSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 2*abi.ReportSize {
			return // bytes past the report are never read
		}
		r, err := SNPReportFromABI(data)
		want := len(data) >= abi.ReportSize
		if want {
			v := binary.LittleEndian.Uint32(data)
			_, lineErr := productLine(data[0x188], data[0x189])
			want = v >= 2 && (v == 2 || lineErr == nil)
		}
		if (err == nil) != want {
			t.Fatalf("accepted %v (err %v), want accepted %v", err == nil, err, want)
		}
		if err != nil {
			return
		}
		in := data[:abi.ReportSize]
		le := binary.LittleEndian
		if r.Version != le.Uint32(in) || r.Policy != le.Uint64(in[0x08:]) ||
			!bytes.Equal(r.ReportData, in[0x50:0x90]) || !bytes.Equal(r.Measurement, in[0x90:0xC0]) ||
			!bytes.Equal(r.HostData, in[0xC0:0xE0]) || !bytes.Equal(r.ChipID, in[0x1A0:0x1E0]) ||
			!bytes.Equal(r.Signature.R, in[0x2A0:0x2E8]) || !bytes.Equal(r.Signature.S, in[0x2E8:0x330]) {
			t.Fatalf("fields not at their ABI offsets: %+v", r)
		}
		if (r.CPUIDFamID != nil) != (r.Version >= 3) || (r.LaunchMitVector != nil) != (r.Version >= 5) {
			t.Fatalf("optional fields for version %d: cpuid %v, mit %v", r.Version, r.CPUIDFamID, r.LaunchMitVector)
		}
		if (r.ReportedTCB.FMC != nil) != isTurin(in) {
			t.Fatalf("FMC presence %v, Turin layout %v", r.ReportedTCB.FMC != nil, isTurin(in))
		}

		out, err := r.ABIBytes()
		if err != nil {
			t.Fatalf("accepted report does not encode: %v", err)
		}
		if len(out) != abi.ReportSize {
			t.Fatalf("encoding is %d bytes", len(out))
		}
		exact := [][2]int{{0x00, 0x38}, {0x40, 0x4C}, {0x50, 0x180}, {0x1A0, 0x1E0}, {0x1E8, 0x1EB}, {0x1EC, 0x1EF}, {0x2A0, 0x330}}
		if r.Version >= 3 {
			exact = append(exact, [2]int{0x188, 0x18B})
		}
		if r.Version >= 5 {
			exact = append(exact, [2]int{0x1F8, 0x208})
		}
		tcbUsed := []int{0, 1, 6, 7}
		if isTurin(in) {
			tcbUsed = []int{0, 1, 2, 3, 7}
		}
		for _, off := range []int{0x38, 0x180, 0x1E0, 0x1F0} {
			for _, i := range tcbUsed {
				exact = append(exact, [2]int{off + i, off + i + 1})
			}
		}
		kept := make([]bool, abi.ReportSize)
		for _, e := range exact {
			for i := e[0]; i < e[1]; i++ {
				kept[i] = true
			}
		}
		for i := range out {
			if kept[i] && out[i] != in[i] || !kept[i] && out[i] != 0 {
				t.Fatalf("encoding byte 0x%x is 0x%02x, input 0x%02x (kept %v)", i, out[i], in[i], kept[i])
			}
		}

		back, err := SNPReportFromABI(out)
		if err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("re-encoded report decodes differently (err %v)", err)
		}
		js, err := json.Marshal(&SNPEvidence{AttestationReport: *r})
		if err != nil {
			t.Fatal(err)
		}
		ev, err := ParseSNPEvidence(js)
		if err != nil || !reflect.DeepEqual(&ev.AttestationReport, r) || ev.CertChain != nil {
			t.Fatalf("JSON evidence of an accepted report decodes differently (err %v)", err)
		}

		if p, err := abi.ReportToProto(in); err == nil {
			if p.Version != r.Version || p.GuestSvn != r.GuestSVN || p.Policy != r.Policy || p.Vmpl != r.VMPL ||
				p.PlatformInfo != r.PlatInfo || !bytes.Equal(p.FamilyId, r.FamilyID) || !bytes.Equal(p.ImageId, r.ImageID) ||
				!bytes.Equal(p.ReportData, r.ReportData) || !bytes.Equal(p.Measurement, r.Measurement) ||
				!bytes.Equal(p.HostData, r.HostData) || !bytes.Equal(p.IdKeyDigest, r.IDKeyDigest) ||
				!bytes.Equal(p.AuthorKeyDigest, r.AuthorKeyDigest) || !bytes.Equal(p.ReportId, r.ReportID) ||
				!bytes.Equal(p.ReportIdMa, r.ReportIDMA) || !bytes.Equal(p.ChipId, r.ChipID) ||
				p.CurrentMajor != uint32(r.Current.Major) || p.CommittedBuild != uint32(r.Committed.Build) ||
				p.ReportedTcb != le.Uint64(in[0x180:]) {
				t.Fatalf("differs from go-sev-guest's decoding:\n%+v\n%+v", r, p)
			}
		}
	})
}

// guidOf is the GHCB GUID of a certificate type (the inverse of
// certTypeFromGUID).
func guidOf(t testing.TB, ct SNPCertType) uuid.UUID {
	switch ct {
	case SNPCertARK:
		return uuid.MustParse(abi.ArkGUID)
	case SNPCertASK:
		return uuid.MustParse(abi.AskGUID)
	case SNPCertVCEK:
		return uuid.MustParse(abi.VcekGUID)
	case SNPCertVLEK:
		return uuid.MustParse(abi.VlekGUID)
	case SNPCertCRL:
		return uuid.MustParse(crlGUID)
	case SNPCertEmpty:
		return uuid.UUID{}
	}
	g, err := uuid.Parse(string(ct))
	if err != nil {
		t.Fatalf("certificate type %q is neither a name nor a GUID", ct)
	}
	return g
}

// certTableEntry is a GHCB certificate table header entry.
func certTableEntry(guid string, off, n uint32) []byte {
	b := make([]byte, abi.CertTableEntrySize)
	if guid != "" {
		g := uuid.MustParse(guid)
		copy(b, g[:])
	}
	binary.LittleEndian.PutUint32(b[16:], off)
	binary.LittleEndian.PutUint32(b[20:], n)
	return b
}

// FuzzSNPCertTable: NewSNPEvidence's certificate table parsing never
// panics and copies at most MaxSNPCertTableBytes of certificate data; an
// accepted table gives one entry per header entry before the all-zero
// terminator (go-sev-guest's ExtraPlatformInfo annotation aside), each
// holding a copy (not an alias) of the byte range its header entry names,
// typed by its GUID; the certificate chain survives the JSON evidence and
// a re-encoded table.
func FuzzSNPCertTable(f *testing.F) {
	reports := simReports(f)
	f.Add(simChip(f).CertTable())
	f.Add((&abi.CertTable{Entries: []abi.CertTableEntry{
		{GUID: mustUUID(abi.VcekGUID), RawCert: []byte{1, 2}},
		{GUID: mustUUID(abi.VlekGUID), RawCert: []byte{}},
		{GUID: mustUUID(crlGUID), RawCert: []byte{3}},
		{GUID: mustUUID(abi.ExtraPlatformInfoGUID), RawCert: []byte{5}},
		{GUID: uuid.UUID{}, RawCert: []byte{7}},
		{GUID: mustUUID("11111111-2222-3333-4444-555555555555"), RawCert: []byte{6}},
	}}).Marshal())
	term := certTableEntry("", 0, 0)
	f.Add(term)                                                 // no entries
	f.Add([]byte{})                                             // no table
	f.Add([]byte{1, 2, 3})                                      // shorter than an entry
	f.Add(certTableEntry(abi.VcekGUID, 48, 0))                  // no terminator
	f.Add(append(certTableEntry(abi.VcekGUID, 0, 4), term...))  // offset inside the header
	f.Add(append(certTableEntry(abi.VcekGUID, 48, 1), term...)) // range past the end
	// An offset + length that wraps around 2^32 (go-sev-guest's
	// CertTable.Unmarshal panicked, or first allocated 4 GiB): the seeds
	// in testdata/fuzz/FuzzSNPCertTable.
	// Every entry naming the same bytes.
	alias := []byte{}
	for range 8 {
		alias = append(alias, certTableEntry(abi.AskGUID, 9*24, 8)...)
	}
	f.Add(append(append(alias, term...), 1, 2, 3, 4, 5, 6, 7, 8))
	f.Fuzz(func(t *testing.T, table []byte) {
		if len(table) > MaxSNPCertTableBytes+64 {
			return
		}
		orig := bytes.Clone(table)
		ev, err := NewSNPEvidence(reports[0], table)
		if err != nil {
			if len(table) == 0 {
				t.Fatalf("no table refused: %v", err)
			}
			return
		}
		if len(table) > MaxSNPCertTableBytes {
			t.Fatalf("a %d byte table accepted", len(table))
		}
		clear(table) // the evidence must not alias the caller's buffer
		total := 0
		for _, c := range ev.CertChain {
			total += len(c.Data)
		}
		if total > MaxSNPCertTableBytes {
			t.Fatalf("%d bytes of certificates from a %d byte table", total, len(orig))
		}
		// The header, read here independently.
		var want []SNPCertEntry
		for i := 0; len(orig) > 0; i += abi.CertTableEntrySize {
			if i+abi.CertTableEntrySize > len(orig) {
				t.Fatalf("accepted a table without a terminator entry")
			}
			e := orig[i : i+abi.CertTableEntrySize]
			if bytes.Equal(e, term) {
				break
			}
			g, _ := uuid.FromBytes(e[:16])
			off, n := uint64(binary.LittleEndian.Uint32(e[16:])), uint64(binary.LittleEndian.Uint32(e[20:]))
			if off < uint64(i+abi.CertTableEntrySize) || off+n > uint64(len(orig)) {
				t.Fatalf("accepted entry %d with offset %d, length %d in a %d byte table", i/abi.CertTableEntrySize, off, n, len(orig))
			}
			if g.String() == abi.ExtraPlatformInfoGUID {
				continue
			}
			want = append(want, SNPCertEntry{CertType: certTypeFromGUID(g), Data: ByteArray(orig[off : off+n])})
		}
		if len(ev.CertChain) != len(want) {
			t.Fatalf("%d certificates, header has %d", len(ev.CertChain), len(want))
		}
		for i, c := range ev.CertChain {
			if c.CertType != want[i].CertType || !bytes.Equal(c.Data, want[i].Data) || guidOf(t, c.CertType) != guidOf(t, want[i].CertType) {
				t.Fatalf("certificate %d: %s %x, header names %s %x", i, c.CertType, c.Data, want[i].CertType, want[i].Data)
			}
		}

		js, err := json.Marshal(ev.CertChain)
		if err != nil {
			t.Fatalf("accepted certificate chain does not encode: %v", err)
		}
		var back []SNPCertEntry
		if err := json.Unmarshal(js, &back); err != nil || !reflect.DeepEqual(back, ev.CertChain) {
			t.Fatalf("JSON certificate chain decodes differently (err %v)", err)
		}
		var re abi.CertTable
		for _, c := range ev.CertChain {
			re.Entries = append(re.Entries, abi.CertTableEntry{GUID: guidOf(t, c.CertType), RawCert: c.Data})
		}
		ev2, err := NewSNPEvidence(reports[0], re.Marshal())
		if err != nil || !reflect.DeepEqual(ev2.CertChain, ev.CertChain) {
			t.Fatalf("re-encoded table decodes differently (err %v)", err)
		}
	})
}

package attestation

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/coffer-project/coffer/internal/tee"
)

func TestSampleVerifier(t *testing.T) {
	v := NewSampleVerifier()
	if v.Tee() != "sample" || v.Class() != ClassCPU {
		t.Fatal(v.Tee(), v.Class())
	}
	rd := sha384Of("runtime")
	ev, err := tee.NewSample().Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(rd)
	got, _ := json.Marshal(claims)
	want := `{"debug":false,"launch_digest":"abcde","platform_version":{"major":1,"minor":4},"report_data":"` + b64 + `","svn":"1"}`
	if string(got) != want {
		t.Fatalf("claims\n got %s\nwant %s", got, want)
	}
	// init_data claim: base64 of the digest, not checked (as Trustee).
	initDigest := sha384Of("init")
	claims, err = v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd, InitDataDigest: initDigest})
	if err != nil {
		t.Fatal(err)
	}
	if claims["init_data"] != base64.StdEncoding.EncodeToString(initDigest) {
		t.Fatalf("init_data %v", claims["init_data"])
	}
	// Other svn values are reported as given.
	claims, err = v.Verify(context.Background(), VerifyInput{Evidence: json.RawMessage(`{"svn":"2","report_data":"` + b64 + `"}`), ReportData: rd})
	if err != nil || claims["svn"] != "2" {
		t.Fatalf("%v %v", claims, err)
	}
}

func TestSampleVerifierRejects(t *testing.T) {
	v := NewSampleVerifier()
	rd := sha384Of("runtime")
	b64 := base64.StdEncoding.EncodeToString(rd)
	cases := []struct {
		name, ev string
		rd       []byte
		check    string
	}{
		{"other session", `{"svn":"1","report_data":"` + base64.StdEncoding.EncodeToString(sha384Of("other")) + `"}`, rd, "report-data-binding"},
		{"padded to 64", `{"svn":"1","report_data":"` + base64.StdEncoding.EncodeToString(append(bytes.Clone(rd), make([]byte, 16)...)) + `"}`, rd, "report-data-binding"},
		{"missing report_data", `{"svn":"1"}`, rd, "report-data-binding"},
		{"no expected data", `{"svn":"1","report_data":"` + b64 + `"}`, nil, "report-data-binding"},
		{"unpadded base64", `{"svn":"1","report_data":"` + strings.TrimRight(base64.StdEncoding.EncodeToString(rd[:47]), "=") + `"}`, rd[:47], "evidence-format"},
		{"url base64", `{"svn":"1","report_data":"-_-_"}`, rd, "evidence-format"},
		{"missing svn", `{"report_data":"` + b64 + `"}`, rd, "evidence-format"},
		{"numeric svn", `{"svn":1,"report_data":"` + b64 + `"}`, rd, "evidence-format"},
		{"not JSON", `{"svn":`, rd, "evidence-format"},
		{"array", `[]`, rd, "evidence-format"},
		{"trailing", `{"svn":"1","report_data":"` + b64 + `"}{}`, rd, "evidence-format"},
		{"trailing brace", `{"svn":"1","report_data":"` + b64 + `"}}`, rd, "evidence-format"},
		{"oversized", `{"svn":"1","report_data":"` + b64 + `","x":"` + strings.Repeat("a", MaxSampleEvidenceBytes) + `"}`, rd, "evidence-format"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), VerifyInput{Evidence: json.RawMessage(c.ev), ReportData: c.rd})
			wantCheckError(t, err, c.check)
		})
	}
}

func FuzzSampleEvidence(f *testing.F) {
	rd := sha384Of("fuzz")
	ev, _ := tee.NewSample().Evidence(context.Background(), rd)
	f.Add([]byte(ev))
	f.Add([]byte(`{"svn":"1"}`))
	f.Add([]byte(`{"svn":null,"report_data":""}`))
	f.Add([]byte(fmt.Sprintf(`{"svn":"1","report_data":%q}`, "AA==")))
	v := NewSampleVerifier()
	f.Fuzz(func(t *testing.T, data []byte) {
		claims, err := v.Verify(context.Background(), VerifyInput{Evidence: data, ReportData: rd})
		if err != nil {
			if _, ok := err.(*CheckError); !ok {
				t.Fatalf("error is not a CheckError: %v", err)
			}
			return
		}
		got, _ := base64.StdEncoding.DecodeString(claims["report_data"].(string))
		if !bytes.Equal(got, rd) {
			t.Fatalf("accepted evidence bound to other data: %v", claims)
		}
	})
}

func BenchmarkSampleVerify(b *testing.B) {
	rd := sha384Of("bench")
	ev, _ := tee.NewSample().Evidence(context.Background(), rd)
	v := NewSampleVerifier()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(context.Background(), VerifyInput{Evidence: ev, ReportData: rd}); err != nil {
			b.Fatal(err)
		}
	}
}

package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkAttestationUnmarshal decodes an /attest body shaped like a
// simulated SNP one: ~18 KB, the evidence an object of byte arrays written
// as JSON numbers.
func BenchmarkAttestationUnmarshal(b *testing.B) {
	jwk, _ := validECJWK(b)
	var ev strings.Builder
	ev.WriteString(`{"attestation_report":{`)
	for i := range 8 {
		if i > 0 {
			ev.WriteString(",")
		}
		fmt.Fprintf(&ev, `"field%d":[`, i)
		for j := range 512 {
			if j > 0 {
				ev.WriteString(",")
			}
			fmt.Fprintf(&ev, "%d", (i*31+j*7)%256)
		}
		ev.WriteString("]")
	}
	ev.WriteString(`},"cert_chain":null}`)
	body := []byte(`{"init-data":null,"runtime-data":{"nonce":"bm9uY2U=","tee-pubkey":` + jwk + `},"tee-evidence":{"primary_evidence":` + ev.String() + `,"additional_evidence":""}}`)
	b.Run("UnmarshalJSON", func(b *testing.B) { // as the server decodes it
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var a Attestation
			if err := a.UnmarshalJSON(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var a Attestation
			if err := json.Unmarshal(body, &a); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package policy

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// FuzzJSONToValue checks the one-pass converter against OPA's own
// ast.ValueFromReader on every valid JSON text.
func FuzzJSONToValue(f *testing.F) {
	for _, s := range []string{
		`{"a":[1,-2.5e+3,0,true,false,null],"b":{"c":"d\u00e9\n\"","a":1},"a":2}`,
		` [ "x" , {} , [] , "\ud800" , "caf` + "\xc3\xa9" + `" ] `,
		`"\\"`, `12345678901234567890`, `{"":{"":""}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			if _, err := jsonToValue(data); err == nil {
				t.Fatalf("accepted invalid JSON %q", data)
			}
			return
		}
		want, err := ast.ValueFromReader(bytes.NewReader(data))
		if err != nil {
			t.Skip(err)
		}
		got, err := jsonToValue(data)
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if got.Compare(want) != 0 {
			t.Fatalf("%q: got %v, want %v", data, got, want)
		}
	})
}

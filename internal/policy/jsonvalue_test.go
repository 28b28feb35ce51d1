package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/coffer-project/coffer/internal/jsonstrict"
)

// FuzzJSONToValue checks the one-pass converter against OPA's own
// ast.ValueFromReader on every valid JSON text.
func FuzzJSONToValue(f *testing.F) {
	for _, s := range []string{
		`{"a":[1,-2.5e+3,0,true,false,null],"b":{"c":"d\u00e9\n\"","a":1},"a":2}`,
		` [ "x" , {} , [] , "\ud800" , "caf` + "\xc3\xa9" + `" ] `,
		`"\\"`, `12345678901234567890`, `{"":{"":""}}`, `{"a":1,"b":{"c":2}}`,
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
		dup := hasDuplicateMember(t, data)
		if dup != errors.Is(err, errDuplicateMember) {
			t.Fatalf("%q: duplicate members %v, error %v", data, dup, err)
		}
		if dup {
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if got.Compare(want) != 0 {
			t.Fatalf("%q: got %v, want %v", data, got, want)
		}
	})
}

// hasDuplicateMember reports whether some object of the valid JSON text
// data names a member twice (an independent check with encoding/json's
// tokenizer, which decodes names as the converter does).
func hasDuplicateMember(t testing.TB, data []byte) bool {
	t.Helper()
	err := jsonstrict.UniqueMembers(data)
	if err != nil && !errors.Is(err, jsonstrict.ErrDuplicateMember) {
		t.Fatalf("%q: %v", data, err)
	}
	return err != nil
}

// Duplicate member names are refused wherever they are: projected
// members, skipped members, nested objects, and objects with many
// members (the map path of memberNames).
func TestDuplicateMembers(t *testing.T) {
	many := `{`
	for i := range 40 {
		many += `"k` + strconv.Itoa(i) + `":` + strconv.Itoa(i) + `,`
	}
	for _, tc := range []struct {
		json string
		dup  bool
	}{
		{`{"a":1,"a":2}`, true},
		{`{"a":1,"b":{"c":1,"c":1}}`, true},
		{`{"skipped":{"x":1},"skipped":{"x":1}}`, true},
		{`[{"a":1},{"a":1}]`, false},
		{`{"a":{"a":{"a":1}}}`, false},
		{`{"\u0061":1,"a":2}`, true}, // the same name once decoded
		{many + `"k39":0}`, true},
		{many + `"k40":0}`, false},
	} {
		_, err := jsonToValue([]byte(tc.json))
		_, perr := projectJSON([]byte(tc.json), nativeClaims)
		if errors.Is(err, errDuplicateMember) != tc.dup || errors.Is(perr, errDuplicateMember) != tc.dup {
			t.Errorf("%.60s: full %v, projected %v; want duplicate %v", tc.json, err, perr, tc.dup)
		}
		if hasDuplicateMember(t, []byte(tc.json)) != tc.dup {
			t.Errorf("%.60s: the test's checker disagrees", tc.json)
		}
	}
}

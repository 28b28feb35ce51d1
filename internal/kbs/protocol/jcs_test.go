package protocol

import (
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
)

// Trustee attestation-service/src/lib.rs test vector.
func TestCanonicalizeTrusteeVector(t *testing.T) {
	in := json.RawMessage(`{"b":1,"a":"test","c":{"d":"e"}}`)
	got, err := Canonicalize(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"test","b":1,"c":{"d":"e"}}`; string(got) != want {
		t.Fatalf("canonical = %s, want %s", got, want)
	}
	sum := sha512.Sum384(got)
	const want = "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
	if hex.EncodeToString(sum[:]) != want {
		t.Fatalf("sha384 = %x, want %s", sum, want)
	}
}

// RFC 8785 §3.2.2 example.
func TestCanonicalizeRFC8785Example(t *testing.T) {
	in := `{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`
	want := `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`
	got, err := CanonicalizeJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// RFC 8785 §3.2.3 sorting example: UTF-16 code unit order puts the emoji
// (U+1F600 = D83D DE00) before U+FB33, unlike code point order.
func TestCanonicalizeUTF16Sort(t *testing.T) {
	in := `{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`
	want := "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}"
	got, err := CanonicalizeJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// RFC 8785 Appendix B number serialization samples.
func TestFormatES6Number(t *testing.T) {
	cases := []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"},
		{0x8000000000000000, "0"},
		{0x0000000000000001, "5e-324"},
		{0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"},
		{0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"},
		{0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"},
		{0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"},
		{0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
		{0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"},
		{0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"},
		{0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"},
	}
	for _, c := range cases {
		f := math.Float64frombits(c.bits)
		got, err := formatES6Number(f)
		if err != nil {
			t.Fatalf("%016x: %v", c.bits, err)
		}
		if got != c.want {
			t.Errorf("%016x (%v): got %s, want %s", c.bits, f, got, c.want)
		}
		// The canonical form must round-trip to the same double.
		back, err := strconv.ParseFloat(got, 64)
		if err != nil || back != f && !(f == 0 && back == 0) {
			t.Errorf("%s does not round-trip to %v", got, f)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := formatES6Number(f); err == nil {
			t.Errorf("%v: expected an error", f)
		}
	}
}

func TestCanonicalizeNumbersInDocument(t *testing.T) {
	got, err := CanonicalizeJSON([]byte(`[1.0, -0, 1e2, 100e-2, 123456789012345678901234, 1e-400]`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `[1,0,100,1,1.2345678901234569e+23,0]`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	bad := map[string]string{
		"duplicate member":   `{"a":1,"a":2}`,
		"lone high":          `["\ud800"]`,
		"lone low":           `["\udc00x"]`,
		"high then non-low":  `["\ud800\u0041"]`,
		"invalid utf8":       "[\"\xff\"]",
		"utf8 surrogate":     "[\"\xed\xa0\x80\"]",
		"number too big":     `[1e400]`,
		"trailing data":      `{} {}`,
		"trailing comma":     `[1,]`,
		"leading zero":       `[01]`,
		"bare dot":           `[1.]`,
		"control char":       "[\"a\x01\"]",
		"bad escape":         `["\x"]`,
		"single quotes":      `['a']`,
		"empty":              ``,
		"unterminated":       `{"a":`,
		"plus sign":          `[+1]`,
		"NaN literal":        `[NaN]`,
		"truncated literal":  `[tru]`,
		"missing colon":      `{"a" 1}`,
		"non-string key":     `{1:2}`,
		"truncated \\u":      `["\u12"]`,
		"exponent no digits": `[1e]`,
	}
	for name, in := range bad {
		if out, err := CanonicalizeJSON([]byte(in)); err == nil {
			t.Errorf("%s: %q accepted as %s", name, in, out)
		}
	}
	deep := strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1)
	if _, err := CanonicalizeJSON([]byte(deep)); err == nil {
		t.Errorf("nesting deeper than %d accepted", maxJSONDepth)
	}
	ok := strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth)
	if _, err := CanonicalizeJSON([]byte(ok)); err != nil {
		t.Errorf("nesting of exactly %d rejected: %v", maxJSONDepth, err)
	}
}

func TestCanonicalizeStringsAndGoValues(t *testing.T) {
	// Go values go through encoding/json first; HTML escaping must not leak.
	got, err := Canonicalize(map[string]any{
		"z": "<&>\u2028/",
		"a": []any{true, nil, 1.5, "\x7f\x1f\t"},
		"m": map[string]int{"b": 2, "a": 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "{\"a\":[true,null,1.5,\"\x7f\\u001f\\t\"],\"m\":{\"a\":1,\"b\":2},\"z\":\"<&>\u2028/\"}"
	if string(got) != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if _, err := Canonicalize(math.NaN()); err == nil {
		t.Fatal("NaN accepted")
	}
	// Idempotence.
	again, err := CanonicalizeJSON(got)
	if err != nil || string(again) != string(got) {
		t.Fatalf("not idempotent: %s vs %s (%v)", again, got, err)
	}
}

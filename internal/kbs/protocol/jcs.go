package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
)

// Canonicalize returns the RFC 8785 JSON Canonicalization Scheme (JCS) form
// of v: object members sorted by the UTF-16 code units of their names at
// every level, no insignificant whitespace, numbers in ECMAScript
// Number.prototype.toString form and strings escaped as ECMAScript
// JSON.stringify does.
//
// A json.RawMessage is taken as JSON text; any other value is first
// marshalled with encoding/json (so TeePubKey contributes only its
// canonical members). Input that is not I-JSON — duplicate member names,
// invalid UTF-8, lone surrogates, numbers outside the IEEE 754 double
// range — is rejected, as RFC 8785 requires.
func Canonicalize(v any) ([]byte, error) {
	var text []byte
	switch t := v.(type) {
	case json.RawMessage:
		text = t
	case *json.RawMessage:
		if t == nil {
			return nil, fmt.Errorf("canonicalize JSON: nil *json.RawMessage")
		}
		text = *t
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("canonicalize JSON: marshal %T: %w", v, err)
		}
		text = b
	}
	return CanonicalizeJSON(text)
}

// CanonicalizeJSON returns the RFC 8785 canonical form of the JSON text data.
func CanonicalizeJSON(data []byte) ([]byte, error) {
	root, err := parseJSONText(data)
	if err != nil {
		return nil, fmt.Errorf("canonicalize JSON: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(len(data))
	if err := writeCanonical(&buf, root); err != nil {
		return nil, fmt.Errorf("canonicalize JSON: %w", err)
	}
	return buf.Bytes(), nil
}

func writeCanonical(buf *bytes.Buffer, v *jsonValue) error {
	switch v.kind {
	case jsonNull:
		buf.WriteString("null")
	case jsonBool:
		if v.boolean {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case jsonNumber:
		f, err := strconv.ParseFloat(v.str, 64)
		if err != nil {
			return fmt.Errorf("number %s is not an IEEE 754 double (RFC 8785 §3.2.2.3)", truncateForError(v.str))
		}
		s, err := formatES6Number(f)
		if err != nil {
			return err
		}
		buf.WriteString(s)
	case jsonString:
		writeJSONString(buf, v.str)
	case jsonArray:
		buf.WriteByte('[')
		for i, el := range v.arr {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeCanonical(buf, el); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case jsonObject:
		type keyed struct {
			units []uint16
			m     jsonMember
		}
		members := make([]keyed, len(v.obj))
		for i, m := range v.obj {
			members[i] = keyed{units: utf16.Encode([]rune(m.key)), m: m}
		}
		slices.SortFunc(members, func(a, b keyed) int { return slices.Compare(a.units, b.units) })
		buf.WriteByte('{')
		for i, k := range members {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeJSONString(buf, k.m.key)
			buf.WriteByte(':')
			if err := writeCanonical(buf, k.m.val); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("internal error: unknown JSON value kind %d", v.kind)
	}
	return nil
}

const lowerHex = "0123456789abcdef"

// writeJSONString writes s (valid UTF-8) as a JSON string the way both
// RFC 8785 and serde_json do: '"' and '\\' escaped, the five control
// characters with short escapes as \b \t \n \f \r, other C0 controls as
// \u00xx with lowercase hex, everything else (including '/', '<', U+2028)
// written literally.
func writeJSONString(buf *bytes.Buffer, s string) {
	buf.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf.WriteString(s[start:i])
		switch c {
		case '"':
			buf.WriteString(`\"`)
		case '\\':
			buf.WriteString(`\\`)
		case '\b':
			buf.WriteString(`\b`)
		case '\t':
			buf.WriteString(`\t`)
		case '\n':
			buf.WriteString(`\n`)
		case '\f':
			buf.WriteString(`\f`)
		case '\r':
			buf.WriteString(`\r`)
		default:
			buf.WriteString(`\u00`)
			buf.WriteByte(lowerHex[c>>4])
			buf.WriteByte(lowerHex[c&0xF])
		}
		start = i + 1
	}
	buf.WriteString(s[start:])
	buf.WriteByte('"')
}

// shortestDigits returns the shortest decimal digit string d and exponent
// n such that f (finite, > 0) round-trips as 0.d × 10^n — the (k, n)
// decomposition of ECMAScript's Number::toString.
func shortestDigits(f float64) (digits string, n int) {
	s := strconv.FormatFloat(f, 'e', -1, 64) // d[.ddd]e±XX
	mant, exp, _ := strings.Cut(s, "e")
	e, _ := strconv.Atoi(exp)
	return strings.Replace(mant, ".", "", 1), e + 1
}

// formatES6Number formats f like ECMAScript Number.prototype.toString
// (ECMA-262 Number::toString, radix 10), as RFC 8785 §3.2.2.3 requires.
func formatES6Number(f float64) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("number %v cannot be represented in JSON", f)
	}
	if f == 0 {
		return "0", nil // also -0
	}
	var sb strings.Builder
	if f < 0 {
		sb.WriteByte('-')
		f = -f
	}
	d, n := shortestDigits(f)
	k := len(d)
	switch {
	case k <= n && n <= 21:
		sb.WriteString(d)
		sb.WriteString(strings.Repeat("0", n-k))
	case 0 < n && n <= 21:
		sb.WriteString(d[:n])
		sb.WriteByte('.')
		sb.WriteString(d[n:])
	case -6 < n && n <= 0:
		sb.WriteString("0.")
		sb.WriteString(strings.Repeat("0", -n))
		sb.WriteString(d)
	default:
		sb.WriteByte(d[0])
		if k > 1 {
			sb.WriteByte('.')
			sb.WriteString(d[1:])
		}
		sb.WriteByte('e')
		if n-1 >= 0 {
			sb.WriteByte('+')
		}
		sb.WriteString(strconv.Itoa(n - 1))
	}
	return sb.String(), nil
}

func truncateForError(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

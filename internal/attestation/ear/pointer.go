package ear

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// TeePubKeyPointers are the JSON pointers (RFC 6901) Trustee's KBS tries,
// in order, to find the TEE public key in verified token claims: Intel
// Trust Authority, ITA vTPM, the legacy CoCo token, the EAR token, and a
// top-level member.
func TeePubKeyPointers() []string {
	return []string{
		"/tdx/attester_runtime_data/tee-pubkey",
		"/tdx/attester_user_data/tee-pubkey",
		"/customized_claims/runtime_data/tee-pubkey",
		"/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey",
		"/tee-pubkey",
	}
}

// ErrNoTeePubKey: none of the pointers resolves in the claims.
var ErrNoTeePubKey = errors.New("no TEE public key in the token claims")

// FindTeePubKey returns the raw JSON of the TEE public key in rawClaims,
// trying the extra pointers (Trustee's extra_teekey_paths) first and then
// TeePubKeyPointers. Parse the result with protocol.TeePubKey.
func FindTeePubKey(rawClaims json.RawMessage, extra ...string) (json.RawMessage, error) {
	ptrs := append(append([]string(nil), extra...), TeePubKeyPointers()...)
	for _, ptr := range ptrs {
		v, err := LookupPointer(rawClaims, ptr)
		if err == nil && !bytes.Equal(v, []byte("null")) {
			return v, nil
		}
	}
	return nil, fmt.Errorf("%w (looked at %s)", ErrNoTeePubKey, strings.Join(ptrs, ", "))
}

// LookupPointer resolves an RFC 6901 JSON pointer in the JSON document doc
// and returns the raw JSON value there.
func LookupPointer(doc json.RawMessage, ptr string) (json.RawMessage, error) {
	if ptr == "" {
		return doc, nil
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, fmt.Errorf("JSON pointer %q must start with '/'", ptr)
	}
	cur := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		trimmed := bytes.TrimLeft(cur, " \t\r\n")
		if len(trimmed) == 0 {
			return nil, fmt.Errorf("JSON pointer %q: empty document", ptr)
		}
		switch trimmed[0] {
		case '{':
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(cur, &obj); err != nil {
				return nil, fmt.Errorf("JSON pointer %q: %w", ptr, err)
			}
			next, ok := obj[tok]
			if !ok {
				return nil, fmt.Errorf("JSON pointer %q: member %q not found", ptr, tok)
			}
			cur = next
		case '[':
			var arr []json.RawMessage
			if err := json.Unmarshal(cur, &arr); err != nil {
				return nil, fmt.Errorf("JSON pointer %q: %w", ptr, err)
			}
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(arr) || (len(tok) > 1 && tok[0] == '0') {
				return nil, fmt.Errorf("JSON pointer %q: bad array index %q", ptr, tok)
			}
			cur = arr[i]
		default:
			return nil, fmt.Errorf("JSON pointer %q: %q is not inside an object or array", ptr, tok)
		}
	}
	return cur, nil
}

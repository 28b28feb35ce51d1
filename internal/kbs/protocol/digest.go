package protocol

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"slices"
	"strings"
	"unicode/utf8"
)

// hashFor returns a constructor for a runtime-data hash algorithm name.
func hashFor(name string) (func() hash.Hash, error) {
	switch name {
	case HashSHA256:
		return sha256.New, nil
	case HashSHA384:
		return sha512.New384, nil
	case HashSHA512:
		return sha512.New, nil
	}
	return nil, fmt.Errorf("%w: hash algorithm %q (want %s, %s or %s)", ErrUnsupportedAlgorithm, truncateForError(name), HashSHA256, HashSHA384, HashSHA512)
}

// CanonicalRuntimeData returns the RFC 8785 canonical JSON of the runtime
// data the KBS binds into the evidence:
//
//	{"additional-evidence": <string>, "nonce": <nonce>, "tee-pubkey": <JWK>}
//
// With additionalEvidence nil the "additional-evidence" member is omitted —
// the form used for each additional device's evidence. The JWK contributes
// only its canonical members (see TeePubKey.MarshalJSON); it is not
// validated here.
func CanonicalRuntimeData(nonce string, pub TeePubKey, additionalEvidence *string) ([]byte, error) {
	if out, ok := canonicalRuntimeDataDirect(nonce, pub, additionalEvidence); ok {
		return out, nil
	}
	return canonicalRuntimeDataGeneric(nonce, pub, additionalEvidence)
}

// canonicalRuntimeDataGeneric canonicalizes the runtime data through
// encoding/json and the general RFC 8785 writer.
func canonicalRuntimeDataGeneric(nonce string, pub TeePubKey, additionalEvidence *string) ([]byte, error) {
	rd := map[string]any{
		"nonce":      nonce,
		"tee-pubkey": pub,
	}
	if additionalEvidence != nil {
		rd["additional-evidence"] = *additionalEvidence
	}
	out, err := Canonicalize(rd)
	if err != nil {
		return nil, fmt.Errorf("canonicalize runtime data: %w", err)
	}
	return out, nil
}

// canonicalRuntimeDataDirect writes the canonical runtime data without a
// round trip through encoding/json and a parse: the members are known, so
// their RFC 8785 order is fixed ("additional-evidence" < "nonce" <
// "tee-pubkey"; the key's members sorted by name).
// It declines (ok false) whatever the generic path treats differently:
// strings that are not valid UTF-8 (encoding/json replaces the bad bytes)
// and key types other than EC and RSA (refused there).
// FuzzCanonicalRuntimeData checks that both give the same bytes.
func canonicalRuntimeDataDirect(nonce string, pub TeePubKey, additionalEvidence *string) (out []byte, ok bool) {
	members, ok := pub.members()
	if !ok {
		return nil, false
	}
	// RFC 8785 orders the members by name.
	slices.SortFunc(members, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	size := len(nonce) + 64
	for _, m := range members {
		if !utf8.ValidString(m[1]) {
			return nil, false
		}
		size += len(m[1]) + 8
	}
	if !utf8.ValidString(nonce) || additionalEvidence != nil && !utf8.ValidString(*additionalEvidence) {
		return nil, false
	}
	var buf bytes.Buffer
	if additionalEvidence != nil {
		size += len(*additionalEvidence) + 24
	}
	buf.Grow(size)
	buf.WriteByte('{')
	if additionalEvidence != nil {
		buf.WriteString(`"additional-evidence":`)
		writeJSONString(&buf, *additionalEvidence)
		buf.WriteByte(',')
	}
	buf.WriteString(`"nonce":`)
	writeJSONString(&buf, nonce)
	buf.WriteString(`,"tee-pubkey":`)
	writeMembers(&buf, members)
	buf.WriteByte('}')
	return buf.Bytes(), true
}

// RuntimeDataDigest returns HASH(JCS(runtime data)) — the value a TEE's
// report-data field must carry (see CanonicalRuntimeData for the object).
// hashAlg is HashSHA256, HashSHA384 (Trustee's choice for every TEE but
// se) or HashSHA512 (se). Verifiers zero-pad or truncate the digest to
// their report-data field; the sample TEE compares it unpadded.
func RuntimeDataDigest(hashAlg, nonce string, pub TeePubKey, additionalEvidence *string) ([]byte, error) {
	newHash, err := hashFor(hashAlg)
	if err != nil {
		return nil, err
	}
	canon, err := CanonicalRuntimeData(nonce, pub, additionalEvidence)
	if err != nil {
		return nil, err
	}
	h := newHash()
	h.Write(canon)
	return h.Sum(nil), nil
}

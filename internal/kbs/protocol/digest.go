package protocol

import (
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
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

// Package protocol owns the wire format of the Confidential Containers
// "Trustee" KBS attestation protocol (RCAR), version 0.4.0, shared by the
// coffer-kbs server and the guest-side client. It has no HTTP server and no
// storage; it is pure data and crypto.
//
// It provides:
//
//   - the JSON messages with their exact member names: Request (POST /auth),
//     Challenge, Attestation (POST /attest) with InitData, RuntimeData and
//     TeeEvidence, AttestResponse, ErrorInformation, and the JWE Response.
//     Decoding is strict where Trustee's serde is (exact, case-sensitive
//     member names, required members, no duplicate members, valid UTF-8,
//     size limits) and lenient where forward compatibility needs it
//     (unknown members are ignored). DecodeRequest and DecodeAttestation
//     read a bounded request body.
//   - CheckVersion (exact "0.4.0"), the TEE names (Tees, ValidTee) and
//     Trustee-style nonces (NewNonce).
//   - TeePubKey, the tee-pubkey JWK (EC P-256/P-521 with ECDH-ES+A256KW, RSA
//     ≥ 2048 bits with RSA-OAEP-256 or RSA1_5): strict validation, and
//     re-serialization with only the canonical members, as Trustee does
//     before hashing. NewTeeKey generates a client key pair.
//   - RFC 8785 JSON canonicalization (Canonicalize, CanonicalizeJSON) and
//     the runtime-data binding RuntimeDataDigest =
//     HASH(JCS({"additional-evidence"?, "nonce", "tee-pubkey"})), the value a
//     TEE's report data must carry.
//   - JWE (RFC 7516 flattened JSON, A256GCM) for resources:
//     EncryptResponse on the server with ECDH-ES+A256KW, RSA-OAEP-256 or
//     RSA1_5 key management, byte-compatible with Trustee; DecryptResponse on
//     the client, which recomputes the AAD from the re-serialized protected
//     header exactly as the Rust guest does.
//
// References: Trustee kbs/docs/kbs_attestation_protocol.md and the
// kbs-types crate (confidential-containers/trustee, guest-components);
// RFC 7516/7518 (JWE/JWA), RFC 8785 (JCS).
package protocol

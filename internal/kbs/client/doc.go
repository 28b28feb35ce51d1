// Package client is the KBS client: the guest side of the RCAR handshake
// (auth → attest with TEE evidence → token → resources, with token caching
// and re-attestation on 401, and JWE decryption of resources), and the
// admin client that `coffer kbs` uses. It speaks the Trustee KBS protocol
// v0.4.0, so it also works against Trustee itself.
//
// This package is linked into the guest agent: it must not import host-only
// packages.
package client

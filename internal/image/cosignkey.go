package image

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// PEM block types of the encrypted private keys `cosign generate-key-pair`
// and `skopeo generate-sigstore-key` write.
const (
	pemEncryptedCosignKey   = "ENCRYPTED COSIGN PRIVATE KEY"
	pemEncryptedSigstoreKey = "ENCRYPTED SIGSTORE PRIVATE KEY"
)

// Bounds on the scrypt parameters an encrypted key may ask for: cosign
// writes N=65536, r=8, p=1 (64 MiB, 128·N·r bytes); anything far above is
// refused rather than spending minutes and gigabytes on a malformed file.
const (
	maxScryptN      = 1 << 20
	maxScryptR      = 32
	maxScryptP      = 4
	maxScryptMemory = 256 << 20 // bytes: 128·N·r
)

// encryptedKey is the JSON body of an encrypted cosign/sigstore key
// (go-securesystemslib's "encrypted" format: scrypt + nacl/secretbox).
type encryptedKey struct {
	KDF struct {
		Name   string `json:"name"`
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

// errPassphrase is returned when the passphrase does not open the key.
var errPassphrase = errors.New("wrong passphrase for the encrypted private key (or the key file is corrupt)")

// decryptCosignKey opens an encrypted cosign/sigstore private key and
// returns the PKCS#8 DER inside.
func decryptCosignKey(body, passphrase []byte) ([]byte, error) {
	var k encryptedKey
	if err := json.Unmarshal(body, &k); err != nil {
		return nil, fmt.Errorf("encrypted private key: %w", err)
	}
	if k.KDF.Name != "scrypt" || k.Cipher.Name != "nacl/secretbox" {
		return nil, fmt.Errorf("encrypted private key: unsupported kdf %q / cipher %q (want scrypt / nacl/secretbox)", k.KDF.Name, k.Cipher.Name)
	}
	p := k.KDF.Params
	if p.N < 2 || p.N > maxScryptN || p.N&(p.N-1) != 0 || p.R < 1 || p.R > maxScryptR || p.P < 1 || p.P > maxScryptP ||
		128*p.N*p.R > maxScryptMemory {
		return nil, fmt.Errorf("encrypted private key: scrypt parameters N=%d r=%d p=%d out of bounds", p.N, p.R, p.P)
	}
	if len(k.Cipher.Nonce) != 24 || len(k.KDF.Salt) == 0 {
		return nil, errors.New("encrypted private key: nonce must be 24 bytes and the salt non-empty")
	}
	dk, err := scrypt.Key(passphrase, k.KDF.Salt, p.N, p.R, p.P, 32)
	if err != nil {
		return nil, fmt.Errorf("encrypted private key: scrypt: %w", err)
	}
	var key [32]byte
	var nonce [24]byte
	copy(key[:], dk)
	copy(nonce[:], k.Cipher.Nonce)
	der, ok := secretbox.Open(nil, k.Ciphertext, &nonce, &key)
	if !ok {
		return nil, errPassphrase
	}
	return der, nil
}

package image

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// sealCosignKey writes der as an encrypted cosign key, the way cosign and
// skopeo do (scrypt N=n, r=8, p=1; nacl/secretbox).
func sealCosignKey(t *testing.T, der, pass []byte, n int) []byte {
	t.Helper()
	var k encryptedKey
	k.KDF.Name, k.Cipher.Name = "scrypt", "nacl/secretbox"
	k.KDF.Params.N, k.KDF.Params.R, k.KDF.Params.P = n, 8, 1
	k.KDF.Salt = make([]byte, 32)
	k.Cipher.Nonce = make([]byte, 24)
	rand.Read(k.KDF.Salt)
	rand.Read(k.Cipher.Nonce)
	dk, err := scrypt.Key(pass, k.KDF.Salt, n, 8, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	var nonce [24]byte
	copy(key[:], dk)
	copy(nonce[:], k.Cipher.Nonce)
	k.Ciphertext = secretbox.Seal(nil, der, &nonce, &key)
	body, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemEncryptedSigstoreKey, Bytes: body})
}

func TestParseEncryptedPrivateKey(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	enc := sealCosignKey(t, der, []byte("s3cret"), 1024)
	k, err := ParsePrivateKey(enc, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if !k.(*ecdsa.PrivateKey).Equal(priv) {
		t.Fatal("decrypted key differs")
	}
	for _, tc := range []struct {
		name string
		key  []byte
		pass []byte
		want string
	}{
		{"no passphrase", enc, nil, "is encrypted: give its passphrase"},
		{"wrong passphrase", enc, []byte("guess"), "wrong passphrase"},
		{"not json", pem.EncodeToMemory(&pem.Block{Type: pemEncryptedCosignKey, Bytes: []byte("{")}), []byte(""), "encrypted private key"},
		{"bad kdf", pem.EncodeToMemory(&pem.Block{Type: pemEncryptedCosignKey, Bytes: []byte(`{"kdf":{"name":"argon2"},"cipher":{"name":"nacl/secretbox"}}`)}), []byte(""), "unsupported kdf"},
		{"N out of bounds", pem.EncodeToMemory(&pem.Block{Type: pemEncryptedCosignKey, Bytes: []byte(`{"kdf":{"name":"scrypt","params":{"N":2097152,"r":8,"p":1},"salt":"AA=="},"cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`)}), []byte(""), "out of bounds"},
		{"memory out of bounds", pem.EncodeToMemory(&pem.Block{Type: pemEncryptedCosignKey, Bytes: []byte(`{"kdf":{"name":"scrypt","params":{"N":1048576,"r":8,"p":1},"salt":"AA=="},"cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`)}), []byte(""), "out of bounds"},
		{"N not a power of two", pem.EncodeToMemory(&pem.Block{Type: pemEncryptedCosignKey, Bytes: []byte(`{"kdf":{"name":"scrypt","params":{"N":1000,"r":8,"p":1},"salt":"AA=="},"cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`)}), []byte(""), "out of bounds"},
		{"short nonce", pem.EncodeToMemory(&pem.Block{Type: pemEncryptedCosignKey, Bytes: []byte(`{"kdf":{"name":"scrypt","params":{"N":1024,"r":8,"p":1},"salt":"AA=="},"cipher":{"name":"nacl/secretbox","nonce":"AAAA"}}`)}), []byte(""), "nonce must be 24 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParsePrivateKey(tc.key, tc.pass); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

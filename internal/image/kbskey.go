package image

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containers/ocicrypt/blockcipher"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The Confidential Containers key-provider scheme: the layer's ocicrypt
// options (its symmetric key) are wrapped with AES-256-GCM under a key
// encryption key (KEK) that lives in a KBS, named by a kbs:/// URI.
const (
	annotationAA      = "org.opencontainers.image.enc.keys.provider.attestation-agent"
	annotationPubOpts = "org.opencontainers.image.enc.pubopts"
	wrapA256GCM       = "A256GCM"
	wrapA256CTR       = "A256CTR" // unauthenticated: the layer's own HMAC and the options' parse catch a wrong key
)

// KeyFetcher returns the key a key id (kbs:///repo/type/tag) names, e.g.
// from a KBS after attestation.
type KeyFetcher func(ctx context.Context, kid string) ([]byte, error)

// annotationPacket is the JSON in the attestation-agent annotation
// (version 1 fields; version 2 adds provider fields).
type annotationPacket struct {
	Version     string `json:"version,omitempty"`
	Kid         string `json:"kid"`
	WrappedData string `json:"wrapped_data"` // base64(ciphertext ‖ GCM tag)
	IV          string `json:"iv"`           // base64(12-byte nonce)
	WrapType    string `json:"wrap_type"`
	Provider    string `json:"provider,omitempty"`
}

// kbsKeyIDs lists the key ids in a layer's attestation-agent annotation.
func kbsKeyIDs(d v1.Descriptor) ([]annotationPacket, error) {
	v := d.Annotations[annotationAA]
	if v == "" {
		return nil, nil
	}
	var out []annotationPacket
	for _, b64 := range strings.Split(v, ",") {
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("%s annotation is not base64", annotationAA)
		}
		var p annotationPacket
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("%s annotation: %w", annotationAA, err)
		}
		if p.Provider != "" && p.Provider != "kbs" {
			return nil, fmt.Errorf("layer key %s: provider %q is not supported (only kbs)", p.Kid, p.Provider)
		}
		if !strings.HasPrefix(p.Kid, "kbs://") {
			return nil, fmt.Errorf("layer key id %q is not a kbs:/// URI", p.Kid)
		}
		out = append(out, p)
	}
	return out, nil
}

// unwrapKBS fetches the KEK and unwraps the layer's private options.
func unwrapKBS(ctx context.Context, fetch KeyFetcher, packets []annotationPacket) ([]byte, error) {
	var errs []error
	for _, p := range packets {
		if p.WrapType != wrapA256GCM && p.WrapType != wrapA256CTR {
			errs = append(errs, fmt.Errorf("layer key %s: wrap type %q is not supported (only %s and %s)", p.Kid, p.WrapType, wrapA256GCM, wrapA256CTR))
			continue
		}
		kek, err := fetch(ctx, p.Kid)
		if err != nil {
			errs = append(errs, fmt.Errorf("layer key %s: %w", p.Kid, err))
			continue
		}
		opts, err := unwrapKey(kek, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("layer key %s: %w", p.Kid, err))
			continue
		}
		return opts, nil
	}
	return nil, errors.Join(errs...)
}

// errWrongKEK is unwrapKey's answer for a key that does not unwrap.
var errWrongKEK = errors.New("the key does not unwrap the layer key (wrong key, or the annotation was tampered with)")

// unwrapKey unwraps a packet's layer options with kek: AES-256-GCM, or
// AES-256-CTR as coco_keyprovider's algorithm=A256CTR writes (no tag: a
// result that is not a JSON object counts as a wrong key, and the layer's
// HMAC checks the rest).
func unwrapKey(kek []byte, p annotationPacket) ([]byte, error) {
	if len(kek) != 32 {
		return nil, fmt.Errorf("the key is %d bytes, not 32 (AES-256)", len(kek))
	}
	iv, err1 := base64.StdEncoding.DecodeString(p.IV)
	ct, err2 := base64.StdEncoding.DecodeString(p.WrappedData)
	if err1 != nil || err2 != nil {
		return nil, errors.New("wrapped key or iv is not base64")
	}
	if p.WrapType == wrapA256CTR {
		b, err := aes.NewCipher(kek)
		if err != nil {
			return nil, err
		}
		if len(iv) != aes.BlockSize {
			return nil, fmt.Errorf("iv is %d bytes, not %d", len(iv), aes.BlockSize)
		}
		pt := make([]byte, len(ct))
		cipher.NewCTR(b, iv).XORKeyStream(pt, ct)
		if !json.Valid(pt) || len(bytes.TrimSpace(pt)) == 0 || bytes.TrimSpace(pt)[0] != '{' {
			return nil, errWrongKEK
		}
		return pt, nil
	}
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(iv) != gcm.NonceSize() {
		return nil, fmt.Errorf("iv is %d bytes, not %d", len(iv), gcm.NonceSize())
	}
	pt, err := gcm.Open(nil, iv, ct, nil)
	if err != nil {
		return nil, errWrongKEK
	}
	return pt, nil
}

func newGCM(kek []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// decryptWithOpts decrypts an ocicrypt layer given its unwrapped private
// options and its descriptor's public options.
func decryptWithOpts(r io.Reader, privOpts []byte, d v1.Descriptor) (io.Reader, error) {
	var opts blockcipher.LayerBlockCipherOptions
	if err := json.Unmarshal(privOpts, &opts.Private); err != nil {
		return nil, fmt.Errorf("unwrapped layer options: %w", err)
	}
	if s := d.Annotations[annotationPubOpts]; s != "" {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%s annotation is not base64", annotationPubOpts)
		}
		if err := json.Unmarshal(b, &opts.Public); err != nil {
			return nil, fmt.Errorf("%s annotation: %w", annotationPubOpts, err)
		}
	}
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return nil, err
	}
	pr, _, err := h.Decrypt(r, opts)
	return pr, err
}

// kbsEncryptor encrypts layers for the key-provider scheme: a fresh layer
// key per layer, wrapped under kek and named kid.
type kbsEncryptor struct {
	kid string
	kek []byte
}

// encrypt returns the ciphertext stream and a finalizer giving the layer's
// annotations once the stream was read to its end.
func (k *kbsEncryptor) encrypt(plain io.Reader, d ocispec.Descriptor) (io.Reader, func() (map[string]string, error), error) {
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return nil, nil, err
	}
	er, fin, err := h.Encrypt(plain, blockcipher.AES256CTR)
	if err != nil {
		return nil, nil, err
	}
	return er, func() (map[string]string, error) {
		opts, err := fin()
		if err != nil {
			return nil, err
		}
		opts.Private.Digest = d.Digest
		priv, err := json.Marshal(opts.Private)
		if err != nil {
			return nil, err
		}
		pub, err := json.Marshal(opts.Public)
		if err != nil {
			return nil, err
		}
		gcm, err := newGCM(k.kek)
		if err != nil {
			return nil, err
		}
		iv := make([]byte, gcm.NonceSize())
		if _, err := rand.Read(iv); err != nil {
			return nil, err
		}
		packet, err := json.Marshal(annotationPacket{Kid: k.kid, WrappedData: base64.StdEncoding.EncodeToString(gcm.Seal(nil, iv, priv, nil)),
			IV: base64.StdEncoding.EncodeToString(iv), WrapType: wrapA256GCM})
		if err != nil {
			return nil, err
		}
		return map[string]string{annotationAA: base64.StdEncoding.EncodeToString(packet), annotationPubOpts: base64.StdEncoding.EncodeToString(pub)}, nil
	}, nil
}

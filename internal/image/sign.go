package image

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// SignOptions configure Sign.
type SignOptions struct {
	CAFile, AuthFile string
	Transport        http.RoundTripper
	Limits           Limits
}

// ParsePrivateKey reads a PEM ECDSA private key: PKCS#8 or SEC 1, or an
// encrypted cosign/sigstore key (as `cosign generate-key-pair` and `skopeo
// generate-sigstore-key` write), opened with passphrase.
func ParsePrivateKey(b, passphrase []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("private key is not PEM")
	}
	der := blk.Bytes
	switch blk.Type {
	case pemEncryptedCosignKey, pemEncryptedSigstoreKey:
		if passphrase == nil {
			return nil, errors.New("the private key is encrypted: give its passphrase (--passphrase-file, or COSIGN_PASSWORD in the environment)")
		}
		var err error
		if der, err = decryptCosignKey(blk.Bytes, passphrase); err != nil {
			return nil, err
		}
	}
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if s, ok := k.(*ecdsa.PrivateKey); ok {
			return s, nil
		}
		return nil, errors.New("only ECDSA signing keys are supported")
	}
	k, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	return k, nil
}

// Sign makes a sigstore (cosign-style, key-based) signature of the image
// ref names and stores it in the registry at tag sha256-<hex>.sig, next to
// any signatures already there. The signed identity is the reference as
// given (repository and tag, or repository alone for a digest), as
// containers/image does. It returns the signed digest.
func Sign(ctx context.Context, ref Reference, key crypto.Signer, o SignOptions) (v1.Hash, error) {
	if ref.IsLayout() {
		return v1.Hash{}, errors.New("signatures are stored in registries: sign a registry reference")
	}
	rt, kc, err := registryAccess(ref, o.CAFile, o.AuthFile, o.Transport)
	if err != nil {
		return v1.Hash{}, err
	}
	l := o.Limits.withDefaults()
	rs := &registrySource{ref: ref.Registry, base: rt, kc: kc, limit: l.MaxManifestBytes}
	raw, _, want, err := rs.top(ctx)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: %w", ref, err)
	}
	d := digestOf(raw)
	if want != nil && *want != d {
		return v1.Hash{}, fmt.Errorf("%s: %w: manifest is %s", ref, ErrDigestMismatch, d)
	}
	var ss simpleSigning
	ss.Critical.Type = cosignSigType
	ss.Critical.Image.DockerManifestDigest = d.String()
	ss.Critical.Identity.DockerReference = dockerName(ref.Registry.Context().Name())
	if !strings.HasPrefix(ref.Registry.Identifier(), "sha256:") {
		ss.Critical.Identity.DockerReference += ":" + ref.Registry.Identifier()
	}
	payload, err := json.Marshal(ss)
	if err != nil {
		return v1.Hash{}, err
	}
	sum := sha256.Sum256(payload)
	sig, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("sign: %w", err)
	}
	// Keep the signatures already attached.
	var m v1.Manifest
	if old, _, err := rs.fetchManifest(ctx, sigTag(d)); err == nil {
		if err := json.Unmarshal(old, &m); err != nil {
			return v1.Hash{}, fmt.Errorf("existing signature manifest: %w", err)
		}
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc), remote.WithTransport(rt)}
	repo := ref.Registry.Context()
	pl := static.NewLayer(payload, types.MediaType(cosignPayloadType))
	if err := remote.WriteLayer(repo, pl, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("upload signature: %w", err)
	}
	m.SchemaVersion, m.MediaType = 2, types.OCIManifestSchema1
	m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.MediaType(cosignPayloadType), Digest: digestOf(payload), Size: int64(len(payload)),
		Annotations: map[string]string{cosignSigAnnotation: base64.StdEncoding.EncodeToString(sig)}})
	var diffIDs []v1.Hash
	for _, l := range m.Layers {
		diffIDs = append(diffIDs, l.Digest)
	}
	cfg, err := json.Marshal(v1.ConfigFile{RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}})
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.WriteLayer(repo, static.NewLayer(cfg, types.OCIConfigJSON), opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("upload signature config: %w", err)
	}
	m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: digestOf(cfg), Size: int64(len(cfg))}
	mraw, err := json.Marshal(m)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Put(repo.Tag(sigTag(d)), rawManifest{raw: mraw, mt: types.OCIManifestSchema1}, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("upload signature manifest: %w", err)
	}
	return d, nil
}

// rawManifest lets remote.Put upload manifest bytes as they are.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

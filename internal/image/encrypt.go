package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/containers/ocicrypt"
	encconfig "github.com/containers/ocicrypt/config"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// EncryptOptions configure Encrypt.
type EncryptOptions struct {
	// Recipients are JWE public keys (PEM or DER PKIX, or JWK): each can
	// decrypt the layers with its private key.
	Recipients [][]byte
	// KBSKeyID and KBSKey encrypt for the Confidential Containers
	// key-provider scheme instead: each layer key is wrapped with KBSKey
	// (32 bytes, AES-256-GCM), which a KBS releases under KBSKeyID
	// (kbs:///repo/type/tag) to attested guests.
	KBSKeyID  string
	KBSKey    []byte
	Platform  v1.Platform // from a multi-arch source (default: this process's)
	CAFile    string
	AuthFile  string
	Transport http.RoundTripper
}

// Encrypt copies the image src to dst with every layer encrypted the way
// ocicrypt (skopeo, containerd imgcrypt) does: AES-256-CTR with HMAC, the
// layer key wrapped for each JWE recipient in the layer's annotations. The
// config (and so the diff_ids) stays as it was. dst is an OCI layout
// (oci:DIR[:TAG], created if missing) or a registry reference. It returns
// the digest of the new manifest.
func Encrypt(ctx context.Context, src, dst Reference, o EncryptOptions) (v1.Hash, error) {
	var enc layerEncryptor
	switch {
	case o.KBSKeyID != "" && len(o.Recipients) > 0:
		return v1.Hash{}, errors.New("give either JWE recipients or a KBS key, not both")
	case o.KBSKeyID != "":
		if !strings.HasPrefix(o.KBSKeyID, "kbs:///") || len(o.KBSKey) != 32 {
			return v1.Hash{}, errors.New("a KBS key needs a kbs:///repo/type/tag id and a 32-byte key")
		}
		k := &kbsEncryptor{kid: o.KBSKeyID, kek: o.KBSKey}
		enc = k.encrypt
	case len(o.Recipients) > 0:
		cc, err := encconfig.EncryptWithJwe(o.Recipients)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("recipients: %w", err)
		}
		enc = func(r io.Reader, d ocispec.Descriptor) (io.Reader, func() (map[string]string, error), error) {
			er, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, r, d)
			return er, fin, err
		}
	default:
		return v1.Hash{}, errors.New("no recipient: give a public key (--recipient jwe:PUB.pem) or a KBS key (--kbs-key kbs:///… --key-file K)")
	}
	img, err := openImage(ctx, src, o)
	if err != nil {
		return v1.Hash{}, err
	}
	dir, tag := dst.LayoutDir, dst.LayoutTag
	if !dst.IsLayout() {
		if dir, err = os.MkdirTemp("", "coffer-encrypt-"); err != nil {
			return v1.Hash{}, err
		}
		defer os.RemoveAll(dir)
		tag = "encrypted"
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		if lp, err = layout.Write(dir, empty.Index); err != nil {
			return v1.Hash{}, fmt.Errorf("OCI layout %s: %w", dir, err)
		}
	}
	m, err := img.Manifest()
	if err != nil {
		return v1.Hash{}, err
	}
	m = m.DeepCopy()
	cfgRaw, err := img.RawConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := lp.WriteBlob(m.Config.Digest, io.NopCloser(bytesReader(cfgRaw))); err != nil {
		return v1.Hash{}, err
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, err
	}
	for i, l := range layers {
		d, err := encryptLayer(enc, dir, l, m.Layers[i])
		if err != nil {
			return v1.Hash{}, fmt.Errorf("layer %d (%s): %w", i+1, m.Layers[i].Digest, err)
		}
		m.Layers[i] = d
	}
	m.MediaType = types.OCIManifestSchema1
	if m.Config.MediaType == types.DockerConfigJSON {
		m.Config.MediaType = types.OCIConfigJSON
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return v1.Hash{}, err
	}
	md := digestOf(raw)
	if err := lp.WriteBlob(md, io.NopCloser(bytesReader(raw))); err != nil {
		return v1.Hash{}, err
	}
	desc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: md, Size: int64(len(raw))}
	if cf, err := img.ConfigFile(); err == nil && cf.OS != "" {
		desc.Platform = &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	}
	if tag != "" {
		desc.Annotations = map[string]string{refNameAnnotation: tag}
	}
	if err := lp.AppendDescriptor(desc); err != nil {
		return v1.Hash{}, err
	}
	if !dst.IsLayout() {
		if _, err := Push(ctx, "oci:"+dir+":"+tag, dst, PushOptions{CAFile: o.CAFile, AuthFile: o.AuthFile, Transport: o.Transport}); err != nil {
			return v1.Hash{}, err
		}
	}
	return md, nil
}

// layerEncryptor encrypts one layer stream; the finalizer, called after
// the stream was read whole, gives the annotations to add.
type layerEncryptor func(plain io.Reader, d ocispec.Descriptor) (io.Reader, func() (map[string]string, error), error)

// encryptLayer writes the encrypted blob of l into the layout at dir.
func encryptLayer(enc layerEncryptor, dir string, l v1.Layer, d v1.Descriptor) (v1.Descriptor, error) {
	mt := string(d.MediaType)
	switch d.MediaType {
	case types.DockerLayer:
		mt = string(types.OCILayer)
	case types.DockerUncompressedLayer:
		mt = string(types.OCIUncompressedLayer)
	}
	if _, enc, err := layerCompression(mt); err != nil {
		return d, err
	} else if enc {
		return d, errors.New("the layer is already encrypted")
	}
	rc, err := l.Compressed()
	if err != nil {
		return d, err
	}
	defer rc.Close()
	od := ocispec.Descriptor{MediaType: mt, Digest: digest.Digest(d.Digest.String()), Size: d.Size, Annotations: d.Annotations}
	er, fin, err := enc(rc, od)
	if err != nil {
		return d, fmt.Errorf("encrypt: %w", err)
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return d, err
	}
	f, err := os.CreateTemp(blobs, ".encrypting-")
	if err != nil {
		return d, err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), er)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return d, fmt.Errorf("encrypt: %w", err)
	}
	ann, err := fin()
	if err != nil {
		return d, fmt.Errorf("encrypt: %w", err)
	}
	sum := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	if err := os.Rename(f.Name(), filepath.Join(blobs, sum.Hex)); err != nil {
		return d, err
	}
	out := v1.Descriptor{MediaType: types.MediaType(mt + encryptedSuffix), Digest: sum, Size: n, Annotations: map[string]string{}}
	for k, v := range d.Annotations {
		out.Annotations[k] = v
	}
	for k, v := range ann {
		out.Annotations[k] = v
	}
	return out, nil
}

// openImage opens src (layout or registry) as a go-containerregistry image.
func openImage(ctx context.Context, src Reference, o EncryptOptions) (v1.Image, error) {
	if src.IsLayout() {
		img, idx, err := fromLayout(src)
		if err != nil {
			return nil, err
		}
		if img != nil {
			return img, nil
		}
		return imageFromIndex(idx, o.Platform)
	}
	rt, kc, err := registryAccess(src, o.CAFile, o.AuthFile, o.Transport)
	if err != nil {
		return nil, err
	}
	p := o.Platform
	if p.OS == "" {
		p = DefaultPlatform()
	}
	img, err := remote.Image(src.Registry, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc), remote.WithTransport(rt), remote.WithPlatform(p))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return img, nil
}

// imageFromIndex picks the platform's image from a layout's index.
func imageFromIndex(idx v1.ImageIndex, p v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if p.OS == "" {
		p = DefaultPlatform()
	}
	d, err := selectPlatform(im, p)
	if err != nil {
		return nil, err
	}
	return idx.Image(d.Digest)
}

package image

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-project/coffer/internal/image/imagetest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
)

func writeImageLayout(t *testing.T, img v1.Image, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: tag})); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestEncryptDecrypt(t *testing.T) {
	priv, pub := imagetest.RSAKeyPEM(t)
	other, _ := imagetest.RSAKeyPEM(t)
	img := buildTestImage(t, CompressionGzip, "amd64",
		map[string]string{"etc/secret": strings.Repeat("s", 3000), "bin/sh": "->busybox"},
		map[string]string{"etc/more": "m"})
	src := writeImageLayout(t, img, "v1")
	dst := filepath.Join(t.TempDir(), "enc")
	srcRef, _ := ParseReference("oci:"+src+":v1", false)
	dstRef, _ := ParseReference("oci:"+dst+":enc", false)
	if _, err := Encrypt(context.Background(), srcRef, dstRef, EncryptOptions{Recipients: [][]byte{pub}}); err != nil {
		t.Fatal(err)
	}
	res, err := newPuller(t, Options{}).Resolve(context.Background(), dstRef)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range res.Manifest.Layers {
		if !strings.HasSuffix(string(l.MediaType), "+encrypted") || l.Annotations["org.opencontainers.image.enc.keys.jwe"] == "" {
			t.Fatalf("layer not encrypted: %+v", l)
		}
	}
	// The ciphertext does not hold the plaintext.
	blobs, _ := os.ReadDir(filepath.Join(dst, "blobs/sha256"))
	for _, b := range blobs {
		data, _ := os.ReadFile(filepath.Join(dst, "blobs/sha256", b.Name()))
		if strings.Contains(string(data), "sssssssss") {
			t.Fatal("plaintext in the encrypted layout")
		}
	}
	dest := filepath.Join(t.TempDir(), "img")
	if _, err := newPuller(t, Options{DecryptKeys: [][]byte{other, priv}}).Pull(context.Background(), dstRef, dest); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(dest, "rootfs/etc/secret")) != strings.Repeat("s", 3000) || readFile(t, filepath.Join(dest, "rootfs/etc/more")) != "m" {
		t.Fatal("decrypted content")
	}
	for name, tc := range map[string]struct {
		keys [][]byte
		want string
	}{
		"no key":    {nil, "is encrypted: give the private key"},
		"wrong key": {[][]byte{other}, "decrypt layer"},
	} {
		parent := t.TempDir()
		_, err := newPuller(t, Options{DecryptKeys: tc.keys}).Pull(context.Background(), dstRef, filepath.Join(parent, "img"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: err = %v, want %q", name, err, tc.want)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Fatalf("%s: failed pull left %v", name, ents)
		}
	}
}

func TestEncryptKBSKeyProvider(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, 32)
	const kid = "kbs:///default/image-key/k1"
	img := buildTestImage(t, CompressionZstd, "amd64", map[string]string{"etc/secret": strings.Repeat("q", 5000)})
	srcRef, _ := ParseReference("oci:"+writeImageLayout(t, img, "v1")+":v1", false)
	dstRef, _ := ParseReference("oci:"+filepath.Join(t.TempDir(), "enc")+":v1", false)
	if _, err := Encrypt(context.Background(), srcRef, dstRef, EncryptOptions{KBSKeyID: kid, KBSKey: kek}); err != nil {
		t.Fatal(err)
	}
	var asked []string
	fetch := func(keys map[string][]byte) KeyFetcher {
		return func(_ context.Context, id string) ([]byte, error) {
			asked = append(asked, id)
			if k, ok := keys[id]; ok {
				return k, nil
			}
			return nil, errors.New("404 Not Found: resource not found")
		}
	}
	dest := filepath.Join(t.TempDir(), "img")
	if _, err := newPuller(t, Options{KeyFetcher: fetch(map[string][]byte{kid: kek})}).Pull(context.Background(), dstRef, dest); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(dest, "rootfs/etc/secret")) != strings.Repeat("q", 5000) || len(asked) != 1 || asked[0] != kid {
		t.Fatalf("content or key requests %v", asked)
	}
	for name, tc := range map[string]struct {
		o    Options
		want string
	}{
		"no kbs":      {Options{}, "held by a KBS: give the KBS with --kbs"},
		"key missing": {Options{KeyFetcher: fetch(nil)}, kid + ": 404 Not Found"},
		"wrong key":   {Options{KeyFetcher: fetch(map[string][]byte{kid: bytes.Repeat([]byte{8}, 32)})}, "does not unwrap"},
		"short key":   {Options{KeyFetcher: fetch(map[string][]byte{kid: []byte("short")})}, "not 32"},
	} {
		parent := t.TempDir()
		_, err := newPuller(t, tc.o).Pull(context.Background(), dstRef, filepath.Join(parent, "img"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: err = %v, want %q", name, err, tc.want)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Fatalf("%s: failed pull left %v", name, ents)
		}
	}
}

// TestEncryptedLayerTampered: a registry (or layout) that rewrites an
// encrypted layer and every digest above it consistently still cannot
// forge the layer's MAC; a manifest changed under its digest is refused.
func TestEncryptedLayerTampered(t *testing.T) {
	priv, pub := imagetest.RSAKeyPEM(t)
	img := buildTestImage(t, CompressionGzip, "amd64", map[string]string{"etc/secret": strings.Repeat("s", 3000)})
	src := writeImageLayout(t, img, "v1")
	dst := filepath.Join(t.TempDir(), "enc")
	srcRef, _ := ParseReference("oci:"+src+":v1", false)
	dstRef, _ := ParseReference("oci:"+dst+":enc", false)
	if _, err := Encrypt(context.Background(), srcRef, dstRef, EncryptOptions{Recipients: [][]byte{pub}}); err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(dst)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := enc.Manifest()
	cfg, _ := enc.ConfigFile()
	layers, _ := enc.Layers()
	ct, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(ct)
	ct.Close()
	b[len(b)/2] ^= 1
	forged, err := mutate.Append(mutate.MediaType(empty.Image, m.MediaType), mutate.Addendum{
		Layer: static.NewLayer(b, m.Layers[0].MediaType), Annotations: m.Layers[0].Annotations, MediaType: m.Layers[0].MediaType,
	})
	if err != nil {
		t.Fatal(err)
	}
	if forged, err = mutate.ConfigFile(forged, cfg); err != nil { // the plaintext's diff_ids, as before
		t.Fatal(err)
	}
	forgedDir := writeImageLayout(t, forged, "enc")
	ref, _ := ParseReference("oci:"+forgedDir+":enc", false)
	parent := t.TempDir()
	_, err = newPuller(t, Options{DecryptKeys: [][]byte{priv}}).Pull(context.Background(), ref, filepath.Join(parent, "img"))
	if !errors.Is(err, ErrLayerAuth) || strings.Contains(err.Error(), "hmac") {
		t.Fatalf("tampered ciphertext: err = %q, want ErrLayerAuth without raw MAC bytes", err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Fatalf("failed pull left %v", ents)
	}

	// A manifest rewritten in place: its digest no longer matches the index.
	mb, _ := enc.RawManifest()
	md, _ := enc.Digest()
	tampered := bytes.Replace(mb, []byte(`"schemaVersion": 2`), []byte(`"schemaVersion":2`), 1)
	if bytes.Equal(tampered, mb) {
		tampered = append(append([]byte{}, mb...), ' ')
	}
	if err := os.WriteFile(filepath.Join(dst, "blobs", md.Algorithm, md.Hex), tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = newPuller(t, Options{DecryptKeys: [][]byte{priv}}).Pull(context.Background(), dstRef, filepath.Join(t.TempDir(), "img"))
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "manifest") {
		t.Fatalf("tampered manifest: err = %v, want a digest mismatch naming the manifest", err)
	}
}

// Layer options wrapped with AES-256-CTR (coco_keyprovider's
// algorithm=A256CTR) unwrap too; a wrong key is refused as for GCM.
func TestUnwrapA256CTR(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, 32)
	opts := []byte(`{"symkey":"c2VjcmV0","cipheroptions":{"nonce":"bm9uY2U="},"digest":"sha256:00"}`)
	iv := bytes.Repeat([]byte{1}, aes.BlockSize)
	b, _ := aes.NewCipher(kek)
	ct := make([]byte, len(opts))
	cipher.NewCTR(b, iv).XORKeyStream(ct, opts)
	p := annotationPacket{Kid: "kbs:///default/image-key/k1", WrapType: wrapA256CTR,
		WrappedData: base64.StdEncoding.EncodeToString(ct), IV: base64.StdEncoding.EncodeToString(iv)}
	got, err := unwrapKey(kek, p)
	if err != nil || !bytes.Equal(got, opts) {
		t.Fatalf("unwrap = %q, %v", got, err)
	}
	if _, err := unwrapKey(bytes.Repeat([]byte{8}, 32), p); !errors.Is(err, errWrongKEK) {
		t.Errorf("wrong key: %v", err)
	}
	p.IV = base64.StdEncoding.EncodeToString(iv[:12])
	if _, err := unwrapKey(kek, p); err == nil || !strings.Contains(err.Error(), "iv is 12 bytes") {
		t.Errorf("short iv: %v", err)
	}
	p.WrapType = "A128KW"
	if _, err := unwrapKBS(context.Background(), func(context.Context, string) ([]byte, error) { return kek, nil }, []annotationPacket{p}); err == nil ||
		!strings.Contains(err.Error(), "only A256GCM and A256CTR") {
		t.Errorf("unknown wrap type: %v", err)
	}
}

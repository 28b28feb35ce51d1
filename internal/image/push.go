package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BuildOptions describe an image made from a directory.
type BuildOptions struct {
	Compression Compression // default gzip
	Platform    v1.Platform // default this process's
	Config      v1.Config   // entrypoint, cmd, env, workdir, user…
}

// BuildImage makes a one-layer OCI image of dir (its files become the
// image's root filesystem, owners and modes kept).
func BuildImage(dir string, o BuildOptions) (v1.Image, error) {
	var buf bytes.Buffer
	if err := WriteTar(&buf, dir); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	var layer v1.Layer
	var err error
	opener := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	switch o.Compression {
	case CompressionNone:
		layer = static.NewLayer(data, types.OCIUncompressedLayer)
	case CompressionZstd:
		layer, err = tarball.LayerFromOpener(opener, tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	case CompressionGzip, "":
		layer, err = tarball.LayerFromOpener(opener, tarball.WithMediaType(types.OCILayer))
	default:
		return nil, fmt.Errorf("unknown compression %q: use gzip, zstd or none", o.Compression)
	}
	if err != nil {
		return nil, err
	}
	p := o.Platform
	if p.OS == "" {
		p = DefaultPlatform()
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, Config: o.Config,
		RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(img, layer)
}

// WriteTar archives dir as a layer: sorted entries, hardlinks kept,
// owners and modes as on disk, no xattrs.
func WriteTar(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	inodes := map[uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		h.Name, h.Uname, h.Gname, h.Format = filepath.ToSlash(rel), "", "", tar.FormatPAX
		if fi.IsDir() {
			h.Name += "/"
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := inodes[st.Ino]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				inodes[st.Ino] = h.Name
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	return tw.Close()
}

// PushOptions configure Push.
type PushOptions struct {
	CAFile    string
	AuthFile  string
	Transport http.RoundTripper // tests
	Build     BuildOptions      // when the source is a directory
}

// Push copies src — "oci:DIR[:TAG]" or a directory made into a one-layer
// image — to the registry reference dst. It returns the pushed manifest's
// (or index's) digest.
func Push(ctx context.Context, src string, dst Reference, o PushOptions) (v1.Hash, error) {
	if dst.IsLayout() {
		return v1.Hash{}, fmt.Errorf("push destination %s must be a registry reference", dst)
	}
	rt, kc, err := registryAccess(dst, o.CAFile, o.AuthFile, o.Transport)
	if err != nil {
		return v1.Hash{}, err
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc), remote.WithTransport(rt)}
	var w interface{ Digest() (v1.Hash, error) }
	if strings.HasPrefix(src, "oci:") {
		ref, err := ParseReference(src, false)
		if err != nil {
			return v1.Hash{}, err
		}
		img, idx, err := fromLayout(ref)
		if err != nil {
			return v1.Hash{}, err
		}
		if img != nil {
			err, w = remote.Write(dst.Registry, img, opts...), img
		} else {
			err, w = remote.WriteIndex(dst.Registry, idx, opts...), idx
		}
		if err != nil {
			return v1.Hash{}, fmt.Errorf("push %s to %s: %w", src, dst, err)
		}
	} else {
		img, err := BuildImage(src, o.Build)
		if err != nil {
			return v1.Hash{}, err
		}
		if err := remote.Write(dst.Registry, img, opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("push %s to %s: %w", src, dst, err)
		}
		w = img
	}
	return w.Digest()
}

// fromLayout opens the image or index a layout reference names.
func fromLayout(ref Reference) (v1.Image, v1.ImageIndex, error) {
	idx, err := layout.ImageIndexFromPath(ref.LayoutDir)
	if err != nil {
		return nil, nil, fmt.Errorf("OCI layout %s: %w", ref.LayoutDir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	var pick *v1.Descriptor
	for i, d := range im.Manifests {
		if ref.LayoutTag == "" && len(im.Manifests) == 1 || ref.LayoutTag != "" && d.Annotations[refNameAnnotation] == ref.LayoutTag {
			pick = &im.Manifests[i]
		}
	}
	if pick == nil {
		if ref.LayoutTag != "" {
			return nil, nil, fmt.Errorf("OCI layout %s has no image named %q", ref.LayoutDir, ref.LayoutTag)
		}
		return nil, idx, nil // several images: push index.json as an index
	}
	if isIndex(string(pick.MediaType)) {
		ii, err := idx.ImageIndex(pick.Digest)
		return nil, ii, err
	}
	img, err := idx.Image(pick.Digest)
	return img, nil, err
}

// registryAccess is the guarded transport and keychain for ref's registry.
func registryAccess(ref Reference, caFile, authFile string, tr http.RoundTripper) (http.RoundTripper, *fileKeychain, error) {
	required := authFile != ""
	if authFile == "" {
		authFile = DefaultAuthFile()
	}
	kc, err := loadKeychain(authFile, required)
	if err != nil {
		return nil, nil, err
	}
	rt, err := baseTransport(ref, caFile, tr)
	return rt, kc, err
}

// baseTransport is the HTTP transport for ref's registry: tr (tests) or
// one trusting caFile, always behind the plain-HTTP guard.
func baseTransport(ref Reference, caFile string, tr http.RoundTripper) (http.RoundTripper, error) {
	insecureHost := ""
	if ref.Insecure {
		insecureHost = ref.Registry.Context().RegistryStr()
	}
	if tr != nil {
		return &guardTransport{inner: tr, insecure: insecureHost}, nil
	}
	return newBaseTransport(caFile, insecureHost)
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

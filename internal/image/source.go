package image

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// source serves an image's manifests and blobs, unverified: the Puller
// checks everything it gets.
type source interface {
	// top returns the manifest the reference names, its served media type
	// and, when the reference pins one, the digest it must have.
	top(ctx context.Context) (raw []byte, mediaType string, want *v1.Hash, err error)
	// manifest fetches a manifest by digest.
	manifest(ctx context.Context, d v1.Descriptor) ([]byte, string, error)
	// blob opens a blob by digest.
	blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error)
}

// readLimited reads at most max bytes and fails beyond.
func readLimited(r io.Reader, max int64, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", what, max)
	}
	return b, nil
}

// ---- registry ----

// guardTransport refuses plain HTTP except to loopback hosts and the one
// registry named insecure. Redirects and token realms pass through it too.
type guardTransport struct {
	inner    http.RoundTripper
	insecure string // host[:port] allowed over HTTP, or ""
}

func (g *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !g.allowHTTP(req.URL.Host) {
		return nil, fmt.Errorf("refusing plain HTTP to %s: only loopback registries or a registry named with --insecure may use HTTP", req.URL.Host)
	}
	return g.inner.RoundTrip(req)
}

func (g *guardTransport) allowHTTP(hostport string) bool {
	if g.insecure != "" && strings.EqualFold(hostport, g.insecure) {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newBaseTransport builds the HTTP transport: a custom CA when given.
func newBaseTransport(caFile string, insecureHost string) (http.RoundTripper, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("registry CA: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry CA %s holds no PEM certificate", caFile)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	return &guardTransport{inner: t, insecure: insecureHost}, nil
}

type registrySource struct {
	ref   name.Reference
	base  http.RoundTripper
	kc    authn.Keychain
	limit int64 // manifest bytes

	mu     sync.Mutex
	client *http.Client
	scheme string
}

// connect pings the registry and negotiates auth, once, on first use (a
// pull served from the cache never connects).
func (s *registrySource) connect(ctx context.Context) (*http.Client, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, s.scheme, nil
	}
	repo := s.ref.Context()
	reg := repo.Registry
	scheme := "https"
	if reg.Scheme() == "http" {
		// HTTP allowed (loopback or --insecure): which one does it speak?
		ch, err := transport.Ping(ctx, reg, s.base)
		if err != nil {
			return nil, "", fmt.Errorf("registry %s: %w", reg.RegistryStr(), err)
		}
		if ch.Insecure {
			scheme = "http"
		}
	}
	auth, err := s.kc.Resolve(reg)
	if err != nil {
		return nil, "", fmt.Errorf("registry %s credentials: %w", reg.RegistryStr(), err)
	}
	rt, err := transport.NewWithContext(ctx, reg, auth, s.base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, "", fmt.Errorf("registry %s: %w (is the address right? use --insecure for a plain-HTTP registry)", reg.RegistryStr(), err)
	}
	s.client, s.scheme = &http.Client{Transport: rt}, scheme
	return s.client, s.scheme, nil
}

func (s *registrySource) get(ctx context.Context, kind, ref, accept string) (*http.Response, error) {
	c, scheme, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	repo := s.ref.Context()
	u := fmt.Sprintf("%s://%s/v2/%s/%s/%s", scheme, repo.RegistryStr(), repo.RepositoryStr(), kind, ref)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
			return nil, fmt.Errorf("%w (log in: put credentials for %s in the Docker config file)", err, repo.RegistryStr())
		}
		return nil, err
	}
	return resp, nil
}

func (s *registrySource) fetchManifest(ctx context.Context, ref string) ([]byte, string, error) {
	resp, err := s.get(ctx, "manifests", ref, acceptManifests)
	if err != nil {
		return nil, "", fmt.Errorf("fetch manifest %s: %w", ref, err)
	}
	defer resp.Body.Close()
	b, err := readLimited(resp.Body, s.limit, "manifest "+ref)
	if err != nil {
		return nil, "", err
	}
	// A registry names the digest of what it serves; a body that does not
	// match was changed on the way or in the registry's storage. (A pull
	// by digest checks the body against the reference anyway; this also
	// catches it for a pull by tag.)
	if hd := resp.Header.Get("Docker-Content-Digest"); hd != "" {
		if h, herr := v1.NewHash(hd); herr == nil && checkDigest(h) == nil {
			if got := digestOf(b); got != h {
				return nil, "", fmt.Errorf("%w: manifest %s: the registry names %s, the body it sent is %s (corrupt or tampered with)", ErrDigestMismatch, ref, h, got)
			}
		}
	}
	return b, resp.Header.Get("Content-Type"), nil
}

// pinned is the digest the reference names, if it is a digest reference.
func (s *registrySource) pinned() *v1.Hash {
	d, ok := s.ref.(name.Digest)
	if !ok {
		return nil
	}
	h, err := v1.NewHash(d.DigestStr())
	if err != nil || checkDigest(h) != nil {
		return nil
	}
	return &h
}

func (s *registrySource) top(ctx context.Context) ([]byte, string, *v1.Hash, error) {
	if d, ok := s.ref.(name.Digest); ok && s.pinned() == nil {
		return nil, "", nil, fmt.Errorf("digest %q: only sha256 digests of 64 lowercase hex digits are accepted", d.DigestStr())
	}
	b, mt, err := s.fetchManifest(ctx, s.ref.Identifier())
	return b, mt, s.pinned(), err
}

func (s *registrySource) manifest(ctx context.Context, d v1.Descriptor) ([]byte, string, error) {
	return s.fetchManifest(ctx, d.Digest.String())
}

func (s *registrySource) blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	resp, err := s.get(ctx, "blobs", d.Digest.String(), "")
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", d.Digest, err)
	}
	return resp.Body, nil
}

// ---- OCI image layout ----

type layoutSource struct {
	dir, tag string
	limit    int64
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

func (s *layoutSource) top(context.Context) ([]byte, string, *v1.Hash, error) {
	f, err := os.Open(filepath.Join(s.dir, "index.json"))
	if err != nil {
		return nil, "", nil, fmt.Errorf("OCI layout %s: %w (is it an OCI image layout directory?)", s.dir, err)
	}
	defer f.Close()
	raw, err := readLimited(f, s.limit, "index.json")
	if err != nil {
		return nil, "", nil, fmt.Errorf("OCI layout %s: %w", s.dir, err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, "", nil, fmt.Errorf("OCI layout %s: index.json: %w", s.dir, err)
	}
	var pick *v1.Descriptor
	switch {
	case s.tag != "":
		var names []string
		for i, d := range idx.Manifests {
			n := d.Annotations[refNameAnnotation]
			if n == s.tag {
				pick = &idx.Manifests[i]
				break
			}
			if n != "" {
				names = append(names, n)
			}
		}
		if pick == nil {
			return nil, "", nil, fmt.Errorf("OCI layout %s has no image named %q (it has: %s)", s.dir, s.tag, strings.Join(names, ", "))
		}
	case len(idx.Manifests) == 1:
		pick = &idx.Manifests[0]
	default:
		// Several images without a name: index.json is a platform index.
		return raw, mtOCIIndex, nil, nil
	}
	if err := checkDigest(pick.Digest); err != nil {
		return nil, "", nil, fmt.Errorf("OCI layout %s: %w", s.dir, err)
	}
	b, mt, err := s.manifest(context.Background(), *pick)
	return b, mt, &pick.Digest, err
}

func (s *layoutSource) manifest(ctx context.Context, d v1.Descriptor) ([]byte, string, error) {
	rc, err := s.blob(ctx, d)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	b, err := readLimited(rc, s.limit, "manifest "+d.Digest.String())
	return b, string(d.MediaType), err
}

func (s *layoutSource) blob(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	if err := checkDigest(d.Digest); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(s.dir, "blobs", "sha256", d.Digest.Hex))
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: blob %s: %w", s.dir, d.Digest, err)
	}
	return f, nil
}

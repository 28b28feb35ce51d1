package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/image/unpack"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is an in-process registry that counts requests and can
// corrupt chosen blobs.
type testRegistry struct {
	*httptest.Server
	host     string
	requests atomic.Int64
	blobs    atomic.Int64
	mu       sync.Mutex
	corrupt  map[string]bool // digest → flip a byte when served
	auth     func(w http.ResponseWriter, r *http.Request) bool
}

func newTestRegistry(t *testing.T) *testRegistry {
	tr := &testRegistry{corrupt: map[string]bool{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tr.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tr.auth != nil && !tr.auth(w, r) {
			return
		}
		tr.requests.Add(1)
		if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet {
			tr.blobs.Add(1)
			tr.mu.Lock()
			bad := tr.corrupt[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]
			tr.mu.Unlock()
			if bad {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				b := rec.Body.Bytes()
				b[len(b)/2] ^= 0xff
				w.WriteHeader(rec.Code)
				_, _ = w.Write(b)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.Close)
	tr.host = strings.TrimPrefix(tr.URL, "http://")
	return tr
}

func (tr *testRegistry) ref(t *testing.T, repo string) Reference {
	t.Helper()
	r, err := ParseReference(tr.host+"/"+repo, false)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tarOf builds a layer tar.
func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range sortedKeys(files) {
		body := files[name]
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if strings.HasPrefix(body, "->") {
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, body[2:], 0
			body = ""
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	_ = tw.Close()
	return buf.Bytes()
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

// buildTestImage makes an image of layer dirs (each a map of files).
func buildTestImage(t *testing.T, comp Compression, arch string, layers ...map[string]string) v1.Image {
	t.Helper()
	var img v1.Image
	for i, files := range layers {
		dir := t.TempDir()
		for name, body := range files {
			p := filepath.Join(dir, name)
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			if strings.HasPrefix(body, "->") {
				if err := os.Symlink(body[2:], p); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if i == 0 {
			var err error
			img, err = BuildImage(dir, BuildOptions{Compression: comp, Platform: v1.Platform{OS: "linux", Architecture: arch},
				Config: v1.Config{Cmd: []string{"sh"}, Env: []string{"A=1"}}})
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		more, err := BuildImage(dir, BuildOptions{Compression: comp})
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := more.Layers()
		if img, err = mutate.AppendLayers(img, ls...); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func push(t *testing.T, tr *testRegistry, repo string, img v1.Image) v1.Hash {
	t.Helper()
	ref, _ := name.ParseReference(tr.host + "/" + repo)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d
}

func newPuller(t *testing.T, o Options) *Puller {
	t.Helper()
	if o.AuthFile == "" {
		o.AuthFile = filepath.Join(t.TempDir(), "none.json")
		_ = os.WriteFile(o.AuthFile, []byte(`{}`), 0o600)
	}
	if o.Platform.OS == "" {
		o.Platform = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	p, err := NewPuller(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPullTagDigestGzipZstdAndCache(t *testing.T) {
	tr := newTestRegistry(t)
	for _, comp := range []Compression{CompressionGzip, CompressionZstd, CompressionNone} {
		t.Run(string(comp), func(t *testing.T) {
			img := buildTestImage(t, comp, "amd64",
				map[string]string{"etc/os": "one", "bin/sh": "->busybox", "bin/busybox": "bb", "gone/x": "x"},
				map[string]string{"etc/os": "two", ".wh.gone": ""},
				map[string]string{"etc/extra": "3"})
			dig := push(t, tr, "test/"+string(comp)+":v1", img)
			cache := t.TempDir()
			p := newPuller(t, Options{CacheDir: cache})
			dest := filepath.Join(t.TempDir(), "img")
			res, err := p.Pull(context.Background(), tr.ref(t, "test/"+string(comp)+":v1"), dest)
			if err != nil {
				t.Fatal(err)
			}
			if res.Digest != dig || res.Downloaded == 0 || len(res.Layers) != 3 {
				t.Fatalf("digest %s (want %s), downloaded %d, layers %d", res.Digest, dig, res.Downloaded, len(res.Layers))
			}
			root := filepath.Join(dest, "rootfs")
			if readFile(t, filepath.Join(root, "etc/os")) != "two" || readFile(t, filepath.Join(root, "etc/extra")) != "3" {
				t.Fatal("layer contents")
			}
			if _, err := os.Stat(filepath.Join(root, "gone")); !os.IsNotExist(err) {
				t.Fatal("whiteout not applied")
			}
			var cfg v1.ConfigFile
			if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dest, "config.json"))), &cfg); err != nil || cfg.Config.Cmd[0] != "sh" {
				t.Fatalf("config.json: %v %v", cfg, err)
			}
			// Second pull by tag: the manifest only, no blob.
			tr.blobs.Store(0)
			res, err = p.Pull(context.Background(), tr.ref(t, "test/"+string(comp)+":v1"), filepath.Join(t.TempDir(), "img"))
			if err != nil {
				t.Fatal(err)
			}
			if n := tr.blobs.Load(); n != 0 || res.Downloaded != 0 {
				t.Fatalf("second pull fetched %d blobs (%d bytes)", n, res.Downloaded)
			}
			// By digest: no request at all.
			tr.requests.Store(0)
			byDigest := tr.ref(t, "test/"+string(comp)+"@"+dig.String())
			if _, err := p.Pull(context.Background(), byDigest, filepath.Join(t.TempDir(), "img")); err != nil {
				t.Fatal(err)
			}
			if n := tr.requests.Load(); n != 0 {
				t.Fatalf("pull by digest with a warm cache made %d requests", n)
			}
			// Cold, no cache, by digest.
			if _, err := newPuller(t, Options{Concurrency: 1}).Pull(context.Background(), byDigest, filepath.Join(t.TempDir(), "img")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPullMultiArch(t *testing.T) {
	tr := newTestRegistry(t)
	amd := buildTestImage(t, CompressionGzip, "amd64", map[string]string{"arch": "amd64"})
	arm := buildTestImage(t, CompressionZstd, "arm64", map[string]string{"arch": "arm64"})
	idx := mutate.AppendManifests(mutate.IndexMediaType(emptyIndex(), types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}})
	ref, _ := name.ParseReference(tr.host + "/multi:latest")
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		dest := filepath.Join(t.TempDir(), "img")
		p := newPuller(t, Options{Platform: v1.Platform{OS: "linux", Architecture: arch}})
		res, err := p.Pull(context.Background(), tr.ref(t, "multi:latest"), dest)
		if err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(dest, "rootfs/arch")); got != arch || res.IndexDigest == nil || len(res.Platforms) != 2 {
			t.Fatalf("%s: got %q, index %v, platforms %v", arch, got, res.IndexDigest, res.Platforms)
		}
	}
	_, err := newPuller(t, Options{Platform: v1.Platform{OS: "linux", Architecture: "s390x"}}).Resolve(context.Background(), tr.ref(t, "multi:latest"))
	if err == nil || !strings.Contains(err.Error(), "linux/amd64, linux/arm64/v8") {
		t.Fatalf("missing platform: %v", err)
	}
}

func TestPullTamperedBlob(t *testing.T) {
	tr := newTestRegistry(t)
	img := buildTestImage(t, CompressionGzip, "amd64", map[string]string{"a": strings.Repeat("data", 1000)}, map[string]string{"b": "b"})
	push(t, tr, "bad:v1", img)
	ls, _ := img.Layers()
	for _, l := range ls {
		d, _ := l.Digest()
		tr.corrupt[d.String()] = true
	}
	parent := t.TempDir()
	dest := filepath.Join(parent, "img")
	_ = os.Mkdir(dest, 0o755)
	cache := t.TempDir()
	_, err := newPuller(t, Options{CacheDir: cache}).Pull(context.Background(), tr.ref(t, "bad:v1"), dest)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "tampered") {
		t.Fatalf("tampered blob: %v", err)
	}
	ents, _ := os.ReadDir(parent)
	inDest, _ := os.ReadDir(dest)
	if len(ents) != 1 || len(inDest) != 0 {
		t.Fatalf("failed pull left %v / %v", ents, inDest)
	}
	blobs, _ := os.ReadDir(filepath.Join(cache, "blobs/sha256"))
	tmp, _ := os.ReadDir(filepath.Join(cache, "tmp"))
	for _, b := range blobs {
		for _, l := range ls {
			if d, _ := l.Digest(); d.Hex == b.Name() {
				t.Fatalf("corrupt layer %s entered the cache", b.Name())
			}
		}
	}
	if len(tmp) != 0 {
		t.Fatalf("cache temp files left: %v", tmp)
	}
}

// writeLayout writes an OCI layout by hand (so tests can make it wrong).
type layoutBuilder struct {
	t   *testing.T
	dir string
}

func (l *layoutBuilder) blob(b []byte) v1.Descriptor {
	d := digestOf(b)
	p := filepath.Join(l.dir, "blobs/sha256", d.Hex)
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		l.t.Fatal(err)
	}
	return v1.Descriptor{Digest: d, Size: int64(len(b))}
}

// image writes a manifest of uncompressed layers; diffIDs may be forced.
func (l *layoutBuilder) image(tag string, layers [][]byte, diffIDs []v1.Hash) {
	var descs []v1.Descriptor
	for i, b := range layers {
		d := l.blob(b)
		d.MediaType = types.OCIUncompressedLayer
		descs = append(descs, d)
		if len(diffIDs) <= i {
			diffIDs = append(diffIDs, d.Digest)
		}
	}
	cfg, _ := json.Marshal(v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cd := l.blob(cfg)
	cd.MediaType = types.OCIConfigJSON
	m, _ := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: cd, Layers: descs})
	md := l.blob(m)
	md.MediaType = types.OCIManifestSchema1
	md.Annotations = map[string]string{refNameAnnotation: tag}
	idx, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{md}})
	_ = os.WriteFile(filepath.Join(l.dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	if err := os.WriteFile(filepath.Join(l.dir, "index.json"), idx, 0o644); err != nil {
		l.t.Fatal(err)
	}
}

func TestPullLayoutRefusals(t *testing.T) {
	good := tarOf(t, map[string]string{"ok": "1"})
	for name, tc := range map[string]struct {
		layers  [][]byte
		diffIDs []v1.Hash
		want    error
		msg     string
	}{
		"hostile ..":  {layers: [][]byte{good, tarOf(t, map[string]string{"../../escape": "x"})}, want: unpack.ErrUnsafe, msg: `".." in path`},
		"hostile abs": {layers: [][]byte{tarOf(t, map[string]string{"/etc/passwd": "x"})}, want: unpack.ErrUnsafe},
		"hostile symlink": {layers: [][]byte{good, tarOf(t, map[string]string{"x": "->../../../etc"}), tarOf(t, map[string]string{"x/passwd": "pwn"})},
			want: unpack.ErrUnsafe, msg: `entry "x/passwd": unsafe layer: the path resolves through symlink "x" -> "../../../etc", which points outside the rootfs`},
		"wrong diff_id": {layers: [][]byte{good}, diffIDs: []v1.Hash{digestOf([]byte("other"))}, want: ErrDigestMismatch, msg: "diff_id"},
	} {
		t.Run(name, func(t *testing.T) {
			lb := &layoutBuilder{t: t, dir: t.TempDir()}
			lb.image("v1", tc.layers, tc.diffIDs)
			parent := t.TempDir()
			ref, _ := ParseReference("oci:"+lb.dir+":v1", false)
			_, err := newPuller(t, Options{}).Pull(context.Background(), ref, filepath.Join(parent, "img"))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v (%q)", err, tc.want, tc.msg)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Fatalf("failed pull left %v", ents)
			}
			if _, err := os.Stat(filepath.Join(parent, "..", "escape")); err == nil {
				t.Fatal("escaped")
			}
		})
	}
	// A layout whose blob was modified after the fact.
	lb := &layoutBuilder{t: t, dir: t.TempDir()}
	lb.image("v1", [][]byte{good}, nil)
	p := filepath.Join(lb.dir, "blobs/sha256", digestOf(good).Hex)
	b := append([]byte{}, good...)
	b[10] ^= 1
	_ = os.WriteFile(p, b, 0o644)
	ref, _ := ParseReference("oci:"+lb.dir+":v1", false)
	if _, err := newPuller(t, Options{}).Pull(context.Background(), ref, filepath.Join(t.TempDir(), "img")); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("modified layout blob: %v", err)
	}
	if _, err := newPuller(t, Options{}).Resolve(context.Background(), Reference{LayoutDir: lb.dir, LayoutTag: "nope"}); err == nil || !strings.Contains(err.Error(), `has: v1`) {
		t.Fatalf("unknown tag: %v", err)
	}
}

func TestDestMustBeEmpty(t *testing.T) {
	dest := t.TempDir()
	_ = os.WriteFile(filepath.Join(dest, "x"), nil, 0o644)
	_, err := newPuller(t, Options{}).Pull(context.Background(), Reference{LayoutDir: "/nonexistent"}, dest)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("err = %v", err)
	}
}

func TestPlainHTTPGuard(t *testing.T) {
	g := &guardTransport{inner: http.DefaultTransport, insecure: "reg.example:5000"}
	for host, ok := range map[string]bool{"127.0.0.1:5000": true, "localhost:80": true, "[::1]:5000": true, "reg.example:5000": true,
		"10.1.2.3:5000": false, "192.168.1.1": false, "reg.example:5001": false, "evil.example": false} {
		if g.allowHTTP(host) != ok {
			t.Errorf("allowHTTP(%s) = %v", host, !ok)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://10.0.0.1:5000/v2/", nil)
	if _, err := g.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "refusing plain HTTP") {
		t.Fatalf("err = %v", err)
	}
}

func TestAuthBasicAndToken(t *testing.T) {
	tr := newTestRegistry(t)
	push(t, tr, "private:v1", buildTestImage(t, CompressionGzip, "amd64", map[string]string{"f": "secret"}))
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	tr.auth = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/token" {
			if r.Header.Get("Authorization") != basic {
				w.WriteHeader(http.StatusUnauthorized)
				return false
			}
			_, _ = w.Write([]byte(`{"token":"tok123"}`))
			return false
		}
		if r.Header.Get("Authorization") != "Bearer tok123" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+tr.URL+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return false
		}
		return true
	}
	authFile := filepath.Join(t.TempDir(), "config.json")
	_ = os.WriteFile(authFile, []byte(`{"auths":{"http://`+tr.host+`":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))+`"}}}`), 0o600)
	dest := filepath.Join(t.TempDir(), "img")
	if _, err := newPuller(t, Options{AuthFile: authFile}).Pull(context.Background(), tr.ref(t, "private:v1"), dest); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(dest, "rootfs/f")) != "secret" {
		t.Fatal("content")
	}
	_, err := newPuller(t, Options{}).Resolve(context.Background(), tr.ref(t, "private:v1"))
	if err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
		t.Fatalf("anonymous pull of a private image: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":10,"platform":{"os":"linux","architecture":"amd64"}}]}`))
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":5},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:` + strings.Repeat("c", 64) + `","size":7}]}`))
	f.Add([]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("d", 64) + `"]}}`))
	l := DefaultLimits()
	f.Add([]byte(`{"default":[{"type":"reject"}],"transports":{"docker":{"a.example/x":[{"type":"insecureAcceptAnything"}]}}}`))
	f.Add([]byte(`{"default":[{"type":"reject"}],"transports":{"docker":{"":[{"type":"insecureAcceptAnything"}]},"oci":{"/a":[{"type":"reject"}],"":[{"type":"reject"}]}}}`))
	f.Add([]byte(`{"default":[{"type":"sigstoreSigned","keyData":"","signedIdentity":{"type":"remapIdentity","prefix":"m.example/x","signedPrefix":"docker.io/library"}}]}`))
	refs := []string{"a.example/x:v1", "busybox", "oci:/a/b:t"}
	f.Fuzz(func(t *testing.T, data []byte) {
		if pol, err := ParsePolicy(data); err == nil {
			for _, s := range refs {
				ref, _ := ParseReference(s, false)
				if scope, reqs := pol.requirementsFor(ref); len(reqs) == 0 {
					t.Fatalf("scope %s of %s has no requirement", scope, s)
				}
			}
		}
		if mt, err := kindOf("", data); err == nil && isIndex(mt) {
			if idx, err := ParseIndex(data, l); err == nil {
				_, _ = selectPlatform(idx, v1.Platform{OS: "linux", Architecture: "arm64"})
			}
		}
		if m, err := ParseManifest(data, l); err == nil {
			_, _ = ParseConfig(data, m)
			for _, d := range m.Layers {
				if _, _, err := layerCompression(string(d.MediaType)); err != nil {
					t.Fatalf("accepted manifest with unusable layer: %v", err)
				}
			}
		}
	})
}

func emptyIndex() v1.ImageIndex { return empty.Index }

func TestDamagedCacheEntryIsRefetched(t *testing.T) {
	tr := newTestRegistry(t)
	img := buildTestImage(t, CompressionGzip, "amd64", map[string]string{"f": strings.Repeat("z", 4000)})
	push(t, tr, "c:v1", img)
	cache := t.TempDir()
	p := newPuller(t, Options{CacheDir: cache})
	if _, err := p.Pull(context.Background(), tr.ref(t, "c:v1"), filepath.Join(t.TempDir(), "a")); err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	d, _ := ls[0].Digest()
	f := filepath.Join(cache, "blobs/sha256", d.Hex)
	b, _ := os.ReadFile(f)
	b[len(b)/2] ^= 1
	_ = os.WriteFile(f, b, 0o600)
	if _, err := p.Pull(context.Background(), tr.ref(t, "c:v1"), filepath.Join(t.TempDir(), "b")); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("damaged cache entry: %v", err)
	}
	tr.blobs.Store(0)
	dest := filepath.Join(t.TempDir(), "c")
	if _, err := p.Pull(context.Background(), tr.ref(t, "c:v1"), dest); err != nil || tr.blobs.Load() != 1 {
		t.Fatalf("refetch after a damaged entry: %v, %d blob requests", err, tr.blobs.Load())
	}
	if readFile(t, filepath.Join(dest, "rootfs/f")) != strings.Repeat("z", 4000) {
		t.Fatal("content")
	}
}

func TestCustomCA(t *testing.T) {
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	ref, _ := name.ParseReference(host + "/tls:v1")
	img := buildTestImage(t, CompressionGzip, "amd64", map[string]string{"f": "tls"})
	if err := remote.Write(ref, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pemCert(srv.Certificate().Raw), 0o644); err != nil {
		t.Fatal(err)
	}
	r, _ := ParseReference(host+"/tls:v1", false)
	dest := filepath.Join(t.TempDir(), "img")
	if _, err := newPuller(t, Options{CAFile: ca}).Pull(context.Background(), r, dest); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(dest, "rootfs/f")) != "tls" {
		t.Fatal("content")
	}
	if _, err := newPuller(t, Options{}).Resolve(context.Background(), r); err == nil {
		t.Fatal("an unknown CA was trusted")
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestDecompressionBomb(t *testing.T) {
	for _, comp := range []Compression{CompressionGzip, CompressionZstd} {
		img := buildTestImage(t, comp, "amd64", map[string]string{"zeros": strings.Repeat("\x00", 4<<20)})
		ref, _ := ParseReference("oci:"+writeImageLayout(t, img, "v1")+":v1", false)
		parent := t.TempDir()
		_, err := newPuller(t, Options{Limits: Limits{Unpack: unpack.Limits{MaxLayerBytes: 1 << 20}}}).Pull(context.Background(), ref, filepath.Join(parent, "img"))
		if !errors.Is(err, unpack.ErrLimit) {
			t.Fatalf("%s bomb: %v", comp, err)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Fatalf("failed pull left %v", ents)
		}
	}
}

// A pull removes the staging directories that killed pulls into the same
// destination left (their lock files unlocked), and no other.
func TestStaleStagingSwept(t *testing.T) {
	lb := &layoutBuilder{t: t, dir: t.TempDir()}
	lb.image("v1", [][]byte{tarOf(t, map[string]string{"ok": "1"})}, nil)
	parent := t.TempDir()
	old := time.Now().Add(-2 * time.Hour)
	mk := func(name string, age time.Time, lockFile bool) string {
		dir := filepath.Join(parent, name)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "rootfs", "secret"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if lockFile {
			if err := os.WriteFile(dir+".lock", nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(dir, age, age); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	stale := mk(".img.partial-111", old, true)
	busy := mk(".img.partial-222", old, true)
	young := mk(".img.partial-333", time.Now(), false) // no lock file: not a pull's
	other := mk(".other.partial-444", old, true)
	named := mk(".img.partial-mine", old, false) // the user's
	f, err := os.Open(busy + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	ref, _ := ParseReference("oci:"+lb.dir+":v1", false)
	if _, err := newPuller(t, Options{}).Pull(context.Background(), ref, filepath.Join(parent, "img")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed pull's staging directory is still there (%v)", err)
	}
	for _, dir := range []string{busy, young, other, named} {
		if _, err := os.Stat(filepath.Join(dir, "rootfs", "secret")); err != nil {
			t.Errorf("%s was removed: %v", filepath.Base(dir), err)
		}
	}
	if _, err := os.Stat(filepath.Join(parent, "img", "rootfs", "ok")); err != nil {
		t.Errorf("the pull itself: %v", err)
	}
}

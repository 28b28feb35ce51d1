package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coffer-project/coffer/internal/image/unpack"
	"github.com/containers/ocicrypt"
	encconfig "github.com/containers/ocicrypt/config"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// Limits bound what a pull accepts. Zero fields take DefaultLimits values.
type Limits struct {
	MaxManifestBytes  int64 // one manifest or index
	MaxConfigBytes    int64 // the image config
	MaxLayerBlobBytes int64 // one compressed layer
	MaxLayers         int
	Unpack            unpack.Limits
}

// DefaultLimits fit real images and bound hostile ones.
func DefaultLimits() Limits {
	return Limits{MaxManifestBytes: 4 << 20, MaxConfigBytes: 8 << 20, MaxLayerBlobBytes: 16 << 30, MaxLayers: 128}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	unpack.OrDefault(&l.MaxManifestBytes, d.MaxManifestBytes)
	unpack.OrDefault(&l.MaxConfigBytes, d.MaxConfigBytes)
	unpack.OrDefault(&l.MaxLayerBlobBytes, d.MaxLayerBlobBytes)
	unpack.OrDefault(&l.MaxLayers, d.MaxLayers)
	return l
}

// Options configure a Puller.
type Options struct {
	Platform v1.Platform // zero: this process's platform
	CAFile   string      // extra trusted CA (PEM) for registries
	// AuthFile is a Docker config file with registry credentials; ""
	// reads DefaultAuthFile if it exists.
	AuthFile    string
	CacheDir    string // content cache; "" keeps no cache between pulls
	Concurrency int    // layers fetched at once (default 3)
	Limits      Limits
	Progress    func(Event) // called from several goroutines
	Logger      *slog.Logger
	// Transport replaces the HTTP transport (tests); the plain-HTTP guard
	// still applies on top of it.
	Transport http.RoundTripper
	// DecryptKeys are private keys (PEM or DER: PKCS#1, PKCS#8, EC; or
	// JWK) for ocicrypt JWE-encrypted layers.
	DecryptKeys [][]byte
	// KeyFetcher fetches key encryption keys of layers encrypted with the
	// Confidential Containers key-provider scheme (kbs:/// key ids).
	KeyFetcher KeyFetcher
	// Policy, when set, is checked by Pull after the manifests are
	// resolved and before any layer is fetched.
	Policy *Policy
	// Lookaside locates GPG simple signatures for signedBy requirements.
	Lookaside *Lookaside
}

// State of a layer in a pull.
type State string

// Layer states reported to Options.Progress.
const (
	StateWaiting     State = "waiting"
	StateDownloading State = "downloading" // to the cache, ahead of unpacking
	StateStreaming   State = "streaming"   // download → verify → unpack in one pass
	StateUnpacking   State = "unpacking"   // from the cache
	StateDone        State = "done"
)

// Event reports a layer's progress.
type Event struct {
	Layer, Layers int // 0-based index and count
	Digest        v1.Hash
	Size          int64 // compressed bytes
	Done          int64 // compressed bytes read so far
	State         State
	Cached        bool // served from the cache, nothing downloaded
}

// Puller pulls images. Safe for concurrent use.
type Puller struct {
	o     Options
	cache *Cache
	kc    *fileKeychain
	log   *slog.Logger
	dc    *encconfig.DecryptConfig // nil without keys
}

// NewPuller checks the options and opens the cache.
func NewPuller(o Options) (*Puller, error) {
	o.Limits = o.Limits.withDefaults()
	if o.Concurrency <= 0 {
		o.Concurrency = 3
	}
	if o.Platform.OS == "" {
		o.Platform = DefaultPlatform()
	}
	p := &Puller{o: o, log: o.Logger}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	authFile, required := o.AuthFile, o.AuthFile != ""
	if authFile == "" {
		authFile = DefaultAuthFile()
	}
	kc, err := loadKeychain(authFile, required)
	if err != nil {
		return nil, err
	}
	p.kc = kc
	if len(o.DecryptKeys) > 0 {
		cc, err := encconfig.DecryptWithPrivKeys(o.DecryptKeys, make([][]byte, len(o.DecryptKeys)))
		if err != nil {
			return nil, fmt.Errorf("decryption keys: %w", err)
		}
		p.dc = cc.DecryptConfig
	}
	if o.CacheDir != "" {
		if p.cache, err = OpenCache(o.CacheDir); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Cache is the puller's content cache (nil without Options.CacheDir).
func (p *Puller) Cache() *Cache { return p.cache }

// shared holds the cache lock shared for one operation (see Cache.Prune).
func (p *Puller) shared(ctx context.Context) (func(), error) {
	if p.cache == nil {
		return func() {}, nil
	}
	return p.cache.Shared(ctx)
}

func (p *Puller) source(ref Reference) (source, error) {
	if ref.IsLayout() {
		return &layoutSource{dir: ref.LayoutDir, tag: ref.LayoutTag, limit: p.o.Limits.MaxManifestBytes}, nil
	}
	base, err := baseTransport(ref, p.o.CAFile, p.o.Transport)
	if err != nil {
		return nil, err
	}
	return &registrySource{ref: ref.Registry, base: base, kc: p.kc, limit: p.o.Limits.MaxManifestBytes}, nil
}

// Image is a resolved image: its manifest and config, checked.
type Image struct {
	Ref         Reference
	Digest      v1.Hash  // of the image manifest
	IndexDigest *v1.Hash // of the index it was selected from, if any
	Platforms   []string // what the index offered
	MediaType   string
	Manifest    *v1.Manifest
	RawManifest []byte
	Config      *v1.ConfigFile
	RawConfig   []byte
	src         source
}

// Encrypted reports whether any layer of the image is encrypted (its
// plaintext then needs a key, and should not be kept where a caller without
// the key could reuse it).
func (img *Image) Encrypted() bool {
	for _, d := range img.Manifest.Layers {
		if _, enc, _ := layerCompression(string(d.MediaType)); enc {
			return true
		}
	}
	return false
}

// small fetches a manifest or config by digest through the cache.
func (p *Puller) small(ctx context.Context, src source, d v1.Descriptor, what string, manifest bool) ([]byte, string, error) {
	if p.cache != nil {
		b, ok, err := p.cache.Bytes(d, what)
		if err != nil {
			p.log.Warn("cache entry dropped", "err", err)
		}
		if ok {
			return b, string(d.MediaType), nil
		}
	}
	var raw []byte
	mt := string(d.MediaType)
	var err error
	if manifest {
		raw, mt, err = src.manifest(ctx, d)
	} else {
		var rc io.ReadCloser
		if rc, err = src.blob(ctx, d); err == nil {
			raw, err = readVerified(rc, d, what)
			rc.Close()
		}
	}
	if err != nil {
		return nil, "", err
	}
	if manifest {
		if _, err := readVerified(bytes.NewReader(raw), d, what); err != nil {
			return nil, "", err
		}
	}
	if p.cache != nil {
		if err := p.cache.Put(d.Digest, raw); err != nil {
			p.log.Warn("cache write failed", "err", err)
		}
	}
	return raw, mt, nil
}

// Resolve fetches and checks the manifest chain and the config.
func (p *Puller) Resolve(ctx context.Context, ref Reference) (*Image, error) {
	src, err := p.source(ref)
	if err != nil {
		return nil, err
	}
	unlock, err := p.shared(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	img := &Image{Ref: ref, src: src}
	var raw []byte
	var mt string
	var want *v1.Hash
	if rs, ok := src.(*registrySource); ok && p.cache != nil {
		// A digest reference with a warm cache needs no network at all.
		if w := rs.pinned(); w != nil {
			if size := p.cachedSize(*w); size > 0 {
				if b, ok, _ := p.cache.Bytes(v1.Descriptor{Digest: *w, Size: size}, "manifest"); ok {
					raw, want = b, w
				}
			}
		}
	}
	if raw == nil {
		if raw, mt, want, err = src.top(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
	}
	d := digestOf(raw)
	if want != nil && d != *want {
		return nil, fmt.Errorf("%s: %w: manifest should be %s but is %s", ref, ErrDigestMismatch, want, d)
	}
	if p.cache != nil {
		_ = p.cache.Put(d, raw)
	}
	for depth := 0; ; depth++ {
		if mt, err = kindOf(mt, raw); err != nil {
			return nil, fmt.Errorf("%s: manifest %s: %w", ref, d, err)
		}
		if !isIndex(mt) {
			break
		}
		if depth >= 3 {
			return nil, fmt.Errorf("%s: image indexes nested deeper than 3 levels", ref)
		}
		idx, err := ParseIndex(raw, p.o.Limits)
		if err != nil {
			return nil, fmt.Errorf("%s: index %s: %w", ref, d, err)
		}
		if img.IndexDigest == nil {
			img.IndexDigest = &d
			for _, e := range idx.Manifests {
				if e.Platform != nil && e.Platform.OS != "unknown" {
					img.Platforms = append(img.Platforms, e.Platform.String())
				}
			}
		}
		sel, err := selectPlatform(idx, p.o.Platform)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		if raw, mt, err = p.small(ctx, src, sel, "manifest", true); err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		if sel.MediaType != "" {
			mt = string(sel.MediaType)
		}
		d = sel.Digest
	}
	img.Digest, img.MediaType, img.RawManifest = d, mt, raw
	if img.Manifest, err = ParseManifest(raw, p.o.Limits); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", ref, d, err)
	}
	if img.RawConfig, _, err = p.small(ctx, src, img.Manifest.Config, "image config", false); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if img.Config, err = ParseConfig(img.RawConfig, img.Manifest); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if c := img.Config; c.OS != "" && c.Architecture != "" &&
		!platformMatches(v1.Platform{OS: p.o.Platform.OS, Architecture: p.o.Platform.Architecture}, &v1.Platform{OS: c.OS, Architecture: c.Architecture}) {
		return nil, fmt.Errorf("%s: the image is for %s/%s, not %s (choose the platform with --platform)", ref, c.OS, c.Architecture, p.o.Platform.String())
	}
	return img, nil
}

// cachedSize is the size of a cached blob (manifests pinned by digest have
// no descriptor size before they are read).
func (p *Puller) cachedSize(h v1.Hash) int64 {
	fi, err := os.Lstat(p.cache.path(h))
	if err != nil || fi.Size() > p.o.Limits.MaxManifestBytes {
		return -1
	}
	return fi.Size()
}

// Result describes a finished pull.
type Result struct {
	*Image
	Downloaded int64 // compressed layer bytes fetched from the source
	Layers     []unpack.Stats
	Duration   time.Duration
}

// Pull resolves ref and unpacks it into dest, which must not exist or be
// an empty directory: dest/rootfs, dest/config.json (the image config as
// digested), dest/manifest.json. On failure dest is left as it was.
func (p *Puller) Pull(ctx context.Context, ref Reference, dest string) (*Result, error) {
	start := time.Now()
	if err := checkDest(dest); err != nil {
		return nil, err
	}
	img, err := p.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := p.CheckPolicy(ctx, img); err != nil {
		return nil, err
	}
	res, err := p.Unpack(ctx, img, dest)
	if res != nil {
		res.Duration = time.Since(start)
	}
	return res, err
}

// CheckPolicy verifies a resolved image against Options.Policy, if any.
func (p *Puller) CheckPolicy(ctx context.Context, img *Image) error {
	if p.o.Policy == nil {
		return nil
	}
	return p.Verify(ctx, p.o.Policy, img)
}

// Unpack fetches and unpacks the layers of a resolved image into dest, as
// Pull does (without the policy check: callers CheckPolicy first).
func (p *Puller) Unpack(ctx context.Context, img *Image, dest string) (*Result, error) {
	start := time.Now()
	if err := checkDest(dest); err != nil {
		return nil, err
	}
	ref := img.Ref
	for i, d := range img.Manifest.Layers {
		if err := p.canDecrypt(d); err != nil {
			return nil, fmt.Errorf("%s: layer %d (%s): %w", ref, i+1, d.Digest, err)
		}
	}
	unlock, err := p.shared(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	dest = filepath.Clean(dest)
	// A pull that was killed left its staging directory (its lock is free
	// now): the next pull into the same destination removes it.
	if n, err := sweepOwnedDirs(filepath.Dir(dest), stagingPrefix(dest)); err != nil {
		p.log.Warn("remove the staging directory of a killed pull", "dest", dest, "err", err)
	} else if n > 0 {
		p.log.Info("removed the staging directories of killed pulls", "dest", dest, "count", n)
	}
	staging, release, err := ownedDir(filepath.Dir(dest), stagingPrefix(dest), 0o755)
	if err != nil {
		return nil, fmt.Errorf("make staging directory next to %s: %w", dest, err)
	}
	// After the rename into dest this removes only the lock file.
	defer func() {
		if err := release(); err != nil {
			p.log.Warn("remove staging directory", "dir", staging, "err", err)
		}
	}()
	rootfs := filepath.Join(staging, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return nil, err
	}
	res := &Result{Image: img}
	if err := p.layers(ctx, img, staging, rootfs, res); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if err := os.WriteFile(filepath.Join(staging, "config.json"), img.RawConfig, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(staging, "manifest.json"), img.RawManifest, 0o644); err != nil {
		return nil, err
	}
	if err := os.Remove(dest); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("replace empty %s: %w", dest, err)
	}
	if err := os.Rename(staging, dest); err != nil {
		return nil, fmt.Errorf("move the unpacked image into %s: %w", dest, err)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// stagingPrefix is the name prefix of dest's staging directories, made
// next to it.
func stagingPrefix(dest string) string { return "." + filepath.Base(dest) + ".partial-" }

func checkDest(dest string) error {
	if dest == "" {
		return fmt.Errorf("no destination directory given")
	}
	ents, err := os.ReadDir(dest)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Dir(filepath.Clean(dest))); err != nil {
			return fmt.Errorf("destination %s: parent directory: %w", dest, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("destination %s exists and is not empty: choose a new directory or remove it", dest)
	}
	return nil
}

// canDecrypt checks, before anything is fetched, that an encrypted layer
// has a key source.
func (p *Puller) canDecrypt(d v1.Descriptor) error {
	if _, enc, _ := layerCompression(string(d.MediaType)); !enc {
		return nil
	}
	packets, err := kbsKeyIDs(d)
	if err != nil {
		return err
	}
	switch {
	case len(packets) > 0 && p.o.KeyFetcher != nil, p.dc != nil && hasWrappedKeys(d):
		return nil
	case len(packets) > 0:
		return fmt.Errorf("the layer is encrypted with key %s held by a KBS: give the KBS with --kbs URL", packets[0].Kid)
	}
	return fmt.Errorf("the layer is encrypted: give the private key with --decryption-key")
}

// hasWrappedKeys is true when the layer key is wrapped for a scheme other
// than the KBS key provider (JWE, PKCS#7, OpenPGP…).
func hasWrappedKeys(d v1.Descriptor) bool {
	for k := range d.Annotations {
		if strings.HasPrefix(k, "org.opencontainers.image.enc.keys.") && k != annotationAA {
			return true
		}
	}
	return false
}

// layerJob tracks one layer: who fetches it, and when it is in the store.
type layerJob struct {
	mu      sync.Mutex
	started bool
	done    chan struct{}
	err     error
	cached  bool // was in the persistent cache before this pull
}

// pullRun is one pull's layer pipeline.
type pullRun struct {
	p          *Puller
	img        *Image
	store      *Cache // persistent cache, or a scratch one inside staging
	persistent bool
	jobs       []*layerJob
	u          *unpack.Unpacker
	mu         sync.Mutex
	downloaded int64
}

// layers applies every layer in order: the applier streams the next layer
// itself when nobody fetched it yet; Concurrency-1 prefetchers download
// later layers into the store meanwhile.
func (p *Puller) layers(ctx context.Context, img *Image, staging, rootfs string, res *Result) error {
	r := &pullRun{p: p, img: img, store: p.cache, persistent: p.cache != nil}
	if r.store == nil {
		scratch, err := OpenCache(filepath.Join(staging, ".blobs"))
		if err != nil {
			return err
		}
		r.store = scratch
		defer os.RemoveAll(scratch.Dir())
	}
	u, err := unpack.Open(rootfs, unpack.Options{Limits: p.o.Limits.Unpack, Logger: p.log})
	if err != nil {
		return err
	}
	defer u.Close()
	r.u = u
	n := len(img.Manifest.Layers)
	for i, d := range img.Manifest.Layers {
		j := &layerJob{done: make(chan struct{})}
		if r.persistent && r.store.Has(d) {
			j.started, j.cached = true, true
			close(j.done)
		}
		r.jobs = append(r.jobs, j)
		r.event(i, 0, StateWaiting, j.cached)
	}
	g, gctx := errgroup.WithContext(ctx)
	for w := 1; w < p.o.Concurrency && w < n; w++ {
		g.Go(func() error {
			for i := 1; i < n; i++ {
				if err := r.prefetch(gctx, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		for i := range n {
			st, err := r.apply(gctx, i)
			if err != nil {
				return fmt.Errorf("layer %d/%d (%s): %w", i+1, n, img.Manifest.Layers[i].Digest, err)
			}
			res.Layers = append(res.Layers, st)
		}
		return nil
	})
	err = g.Wait()
	res.Downloaded = r.downloaded
	return err
}

func (r *pullRun) event(i int, done int64, s State, cached bool) {
	if r.p.o.Progress == nil {
		return
	}
	d := r.img.Manifest.Layers[i]
	r.p.o.Progress(Event{Layer: i, Layers: len(r.img.Manifest.Layers), Digest: d.Digest, Size: d.Size, Done: done, State: s, Cached: cached})
}

// claim marks layer i as taken by the caller; false if someone has it.
func (r *pullRun) claim(i int) bool {
	j := r.jobs[i]
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.started {
		return false
	}
	j.started = true
	return true
}

func (r *pullRun) finish(i int, err error) {
	r.jobs[i].err = err
	close(r.jobs[i].done)
}

// prefetch downloads layer i into the store, verified.
func (r *pullRun) prefetch(ctx context.Context, i int) error {
	if !r.claim(i) {
		return nil
	}
	err := r.download(ctx, i)
	r.finish(i, err)
	if err != nil {
		return fmt.Errorf("layer %d/%d (%s): %w", i+1, len(r.jobs), r.img.Manifest.Layers[i].Digest, err)
	}
	return nil
}

func (r *pullRun) download(ctx context.Context, i int) error {
	d := r.img.Manifest.Layers[i]
	rc, err := r.img.src.blob(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	w, err := r.store.create(d.Digest)
	if err != nil {
		return err
	}
	v := newVerifier(r.progress(i, rc, StateDownloading), d, "layer")
	if _, err := io.Copy(w, v); err != nil {
		w.abort()
		return err
	}
	if err := v.check(); err != nil {
		w.abort()
		return err
	}
	r.event(i, d.Size, StateDownloading, false)
	return w.commit()
}

// apply unpacks layer i: streamed if nobody fetched it, else from the store.
func (r *pullRun) apply(ctx context.Context, i int) (unpack.Stats, error) {
	d := r.img.Manifest.Layers[i]
	j := r.jobs[i]
	var src io.Reader
	var tee *cacheWriter
	state := StateUnpacking
	if r.claim(i) {
		rc, err := r.img.src.blob(ctx, d)
		if err != nil {
			r.finish(i, err)
			return unpack.Stats{}, err
		}
		defer rc.Close()
		src, state = r.progress(i, rc, StateStreaming), StateStreaming
		if r.persistent {
			if tee, err = r.store.create(d.Digest); err != nil {
				r.finish(i, err)
				return unpack.Stats{}, err
			}
			src = io.TeeReader(src, tee)
		}
	} else {
		select {
		case <-j.done:
		case <-ctx.Done():
			return unpack.Stats{}, ctx.Err()
		}
		if j.err != nil {
			return unpack.Stats{}, j.err
		}
		f, err := r.store.Open(d)
		if err != nil {
			return unpack.Stats{}, err
		}
		defer f.Close()
		src = f
		if !j.cached {
			src = r.progress(i, f, StateUnpacking)
		}
		r.event(i, 0, StateUnpacking, j.cached)
	}
	st, err := r.unpackLayer(ctx, i, src)
	if state == StateUnpacking && errors.Is(err, ErrDigestMismatch) {
		// A damaged store entry: drop it so the next pull fetches it again.
		_ = os.Remove(r.store.path(d.Digest))
	}
	if tee != nil {
		if err == nil {
			err = tee.commit()
		} else {
			tee.abort()
		}
	}
	if state == StateStreaming {
		r.finish(i, err)
	}
	if err == nil {
		r.event(i, d.Size, StateDone, j.cached)
	}
	return st, err
}

// decrypter opens the plaintext of an encrypted layer: with a key from
// the KBS when the layer names one and a fetcher is set, else with the
// private keys (ocicrypt JWE and the other ocicrypt schemes).
func (r *pullRun) decrypter(ctx context.Context, ct io.Reader, d v1.Descriptor) (io.Reader, error) {
	packets, err := kbsKeyIDs(d)
	if err != nil {
		return nil, err
	}
	var kbsErr error
	if len(packets) > 0 && r.p.o.KeyFetcher != nil {
		opts, err := unwrapKBS(ctx, r.p.o.KeyFetcher, packets)
		if err == nil {
			pr, err := decryptWithOpts(ct, opts, d)
			if err != nil {
				return nil, err
			}
			return authReader{pr}, nil
		}
		if r.p.dc == nil {
			return nil, fmt.Errorf("decrypt layer: %w", err)
		}
		kbsErr = err
	}
	od := ocispec.Descriptor{MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size, Annotations: d.Annotations}
	pr, _, err := ocicrypt.DecryptLayer(r.p.dc, ct, od, false)
	if err != nil {
		return nil, fmt.Errorf("decrypt layer: %w (is it the right private key?)", errors.Join(kbsErr, err))
	}
	return authReader{pr}, nil
}

// ErrLayerAuth means an encrypted layer's ciphertext failed its HMAC.
var ErrLayerAuth = errors.New("the encrypted layer failed authentication: its ciphertext was changed after it was encrypted")

// authReader turns ocicrypt's HMAC failure (whose text quotes raw MAC
// bytes) into ErrLayerAuth.
type authReader struct{ r io.Reader }

func (a authReader) Read(b []byte) (int, error) {
	n, err := a.r.Read(b)
	if err != nil && err != io.EOF && strings.Contains(err.Error(), "could not properly decrypt byte stream") {
		err = ErrLayerAuth
	}
	return n, err
}

// progress counts bytes read from a layer source.
func (r *pullRun) progress(i int, rd io.Reader, s State) io.Reader {
	return &progressReader{r: rd, fn: func(n, total int64) {
		if s != StateUnpacking {
			r.mu.Lock()
			r.downloaded += n
			r.mu.Unlock()
		}
		r.event(i, total, s, false)
	}}
}

type progressReader struct {
	r     io.Reader
	total int64
	fn    func(n, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.total += int64(n)
		p.fn(int64(n), p.total)
	}
	return n, err
}

// unpackLayer verifies, decompresses and unpacks one compressed layer,
// then checks its diff_id.
func (r *pullRun) unpackLayer(ctx context.Context, i int, compressed io.Reader) (unpack.Stats, error) {
	d := r.img.Manifest.Layers[i]
	v := newVerifier(compressed, d, "layer")
	comp, encrypted, _ := layerCompression(string(d.MediaType)) // checked by ParseManifest
	var plain io.Reader = v
	if encrypted {
		pr, err := r.decrypter(ctx, v, d)
		if err != nil {
			return unpack.Stats{}, err
		}
		plain = pr
	}
	dec, err := decompressor(comp, plain)
	if err != nil {
		return unpack.Stats{}, r.blame(v, err)
	}
	defer dec.Close()
	dh := sha256.New()
	tarStream := io.TeeReader(dec, dh)
	st, err := r.u.Apply(ctx, tarStream)
	if err != nil {
		return st, r.blame(v, err)
	}
	// The tar end marker may leave padding: it counts for the diff_id.
	limit := r.p.o.Limits.Unpack.MaxLayerBytes
	unpack.OrDefault(&limit, unpack.DefaultLimits().MaxLayerBytes)
	if n, err := io.Copy(io.Discard, io.LimitReader(tarStream, limit-st.Bytes+1)); err != nil {
		return st, r.blame(v, fmt.Errorf("decompress layer: %w", err))
	} else if st.Bytes+n > limit {
		return st, fmt.Errorf("%w: layer is larger than %d bytes uncompressed", unpack.ErrLimit, limit)
	}
	if encrypted {
		// Read the ciphertext to its end: that is where its MAC is checked.
		if _, err := io.Copy(io.Discard, plain); err != nil {
			return st, r.blame(v, fmt.Errorf("decrypt layer: %w", err))
		}
	}
	if err := v.finish(); err != nil {
		return st, err
	}
	if got, want := sumOf(dh), r.img.Config.RootFS.DiffIDs[i]; got != want.String() {
		return st, fmt.Errorf("%w: uncompressed layer should be %s (the config's diff_id) but is %s", ErrDigestMismatch, want, got)
	}
	return st, nil
}

// blame turns an unpack or decompression error into a digest error when
// the blob itself is bad (the likelier cause), reading at most 64 MiB more.
func (r *pullRun) blame(v *verifier, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrDigestMismatch) {
		return err
	}
	if v.size-v.n <= 64<<20 {
		if verr := v.finish(); verr != nil && errors.Is(verr, ErrDigestMismatch) {
			return verr
		}
	}
	return err
}

func sumOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// decompressor opens the layer's decompression stream.
func decompressor(c Compression, r io.Reader) (io.ReadCloser, error) {
	switch c {
	case CompressionGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip layer: %w", err)
		}
		return zr, nil
	case CompressionZstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, fmt.Errorf("zstd layer: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(r), nil
}

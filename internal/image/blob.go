package image

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrDigestMismatch marks content that does not match its digest or size:
// corrupt, truncated or tampered with.
var ErrDigestMismatch = errors.New("digest mismatch")

// verifier passes through a blob and checks its size and digest: reading
// more than the size fails at once, and EOF fails if the size or digest
// differs.
type verifier struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	want v1.Hash
	size int64
	what string
	err  error
}

func newVerifier(r io.Reader, d v1.Descriptor, what string) *verifier {
	return &verifier{r: r, h: sha256.New(), want: d.Digest, size: d.Size, what: what}
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if rem := v.size + 1 - v.n; int64(len(p)) > rem {
		p = p[:rem] // one byte past the size is enough to see an overrun
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n > v.size {
		v.err = fmt.Errorf("%w: %s %s is larger than its descriptor's %d bytes", ErrDigestMismatch, v.what, v.want, v.size)
		return 0, v.err
	}
	if err == io.EOF {
		if e := v.check(); e != nil {
			v.err = e
			return n, e
		}
	}
	return n, err
}

func (v *verifier) check() error {
	if v.n != v.size {
		return fmt.Errorf("%w: %s %s has %d bytes, its descriptor says %d (truncated or corrupt)", ErrDigestMismatch, v.what, v.want, v.n, v.size)
	}
	if got := "sha256:" + hex.EncodeToString(v.h.Sum(nil)); got != v.want.String() {
		return fmt.Errorf("%w: %s should be %s but the content is %s (corrupt or tampered with)", ErrDigestMismatch, v.what, v.want, got)
	}
	return nil
}

// finish reads what is left (at most the descriptor size) and checks.
func (v *verifier) finish() error {
	if v.err != nil {
		return v.err
	}
	if _, err := io.Copy(io.Discard, v); err != nil {
		return err
	}
	return v.check()
}

// readVerified reads a whole small blob and checks it.
func readVerified(r io.Reader, d v1.Descriptor, what string) ([]byte, error) {
	v := newVerifier(r, d, what)
	b, err := io.ReadAll(v)
	if err != nil {
		return nil, err
	}
	if err := v.check(); err != nil {
		return nil, err
	}
	return b, nil
}

func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// Cache is a content-addressed blob store: DIR/blobs/sha256/<hex>. Blobs
// enter it only after their digest was checked, and are checked again
// when read. Safe for concurrent use by several pulls and processes.
type Cache struct {
	dir string
}

// OpenCache creates (if needed) and opens a cache directory.
func OpenCache(dir string) (*Cache, error) {
	for _, d := range []string{filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image cache %s: %w", dir, err)
		}
	}
	return &Cache{dir: dir}, nil
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

func (c *Cache) path(h v1.Hash) string {
	return filepath.Join(c.dir, "blobs", "sha256", h.Hex) // Hex checked by checkDigest
}

// Has reports whether a blob of the descriptor's size is present.
func (c *Cache) Has(d v1.Descriptor) bool {
	fi, err := os.Lstat(c.path(d.Digest))
	return err == nil && fi.Mode().IsRegular() && fi.Size() == d.Size
}

// Open returns the raw cached blob; callers verify it as they read.
func (c *Cache) Open(d v1.Descriptor) (io.ReadCloser, error) {
	f, err := os.Open(c.path(d.Digest))
	if err == nil {
		touch(f.Name())
	}
	return f, err
}

// Bytes reads and verifies a small cached blob (ok false if absent).
func (c *Cache) Bytes(d v1.Descriptor, what string) ([]byte, bool, error) {
	if !c.Has(d) {
		return nil, false, nil
	}
	f, err := c.Open(d)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	b, err := readVerified(f, d, what)
	if err != nil {
		_ = os.Remove(c.path(d.Digest)) // corrupt entry: drop it
		return nil, false, fmt.Errorf("image cache: %w", err)
	}
	return b, true, nil
}

// Put stores already verified bytes.
func (c *Cache) Put(h v1.Hash, b []byte) error {
	w, err := c.create(h)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		w.abort()
		return err
	}
	return w.commit()
}

// cacheWriter is a blob being written; commit only after verifying.
type cacheWriter struct {
	*os.File
	final string
}

func (c *Cache) create(h v1.Hash) (*cacheWriter, error) {
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), h.Hex+".*")
	if err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	return &cacheWriter{File: f, final: c.path(h)}, nil
}

func (w *cacheWriter) commit() error {
	if err := w.Close(); err != nil {
		_ = os.Remove(w.Name())
		return fmt.Errorf("image cache: %w", err)
	}
	if err := os.Rename(w.Name(), w.final); err != nil {
		_ = os.Remove(w.Name())
		return fmt.Errorf("image cache: %w", err)
	}
	return nil
}

func (w *cacheWriter) abort() {
	_ = w.Close()
	_ = os.Remove(w.Name())
}

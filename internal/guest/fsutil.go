package guest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// countingHashWriter writes through to w while hashing (SHA-256) and
// counting what passes.
type countingHashWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newCountingHashWriter(w io.Writer) *countingHashWriter {
	return &countingHashWriter{w: w, h: sha256.New()}
}

func (c *countingHashWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

func (c *countingHashWriter) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// sha256File returns the hex SHA-256 and size of a file.
func sha256File(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hashing %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// writeFileAtomic creates dir/name with the content fill writes: the data
// goes to a temporary file in dir, is synced, then renamed over name, so a
// reader sees either the old or the new file, never a partial one. It
// returns the SHA-256 and size of what was written.
func writeFileAtomic(dir, name string, perm os.FileMode, fill func(w *countingHashWriter) error) (sum string, size int64, err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-")
	if err != nil {
		return "", 0, fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := newCountingHashWriter(f)
	if err = fill(w); err != nil {
		return "", 0, err
	}
	if err = f.Chmod(perm); err != nil {
		return "", 0, fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	if err = f.Sync(); err != nil {
		return "", 0, fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	if err = f.Close(); err != nil {
		return "", 0, fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return "", 0, fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync() // best effort: make the rename durable
		d.Close()
	}
	return w.sum(), w.n, nil
}

// lockFile takes an exclusive flock on p (creating it), waiting until it is
// free or ctx ends. The returned func releases it.
func lockFile(ctx context.Context, p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock file %s: %w", p, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", p, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for %s (is another `coffer guest build` running?): %w", p, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

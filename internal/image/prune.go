package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// UnpackedDir is the cache subdirectory where callers keep unpacked root
// filesystems by manifest digest (`coffer run IMAGE`); Prune manages it.
const UnpackedDir = "unpacked"

// lockFile serialises Prune against users of the cache: every pull holds
// it shared while it reads or writes blobs, Prune holds it exclusively.
const lockFile = "lock"

// Shared takes the cache's lock shared, so Prune waits until unlock; use
// it around work that needs cache entries to stay (Resolve, Unpack and a
// caller's use of an unpacked rootfs). Shared locks never wait for each
// other.
func (c *Cache) Shared(ctx context.Context) (unlock func(), err error) {
	return c.lock(ctx, syscall.LOCK_SH)
}

func (c *Cache) lock(ctx context.Context, how int) (func(), error) {
	f, err := os.OpenFile(filepath.Join(c.dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image cache lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("image cache lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the image cache %s (in use by another pull or prune): %w", c.dir, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// touch marks a cache entry as used now (Prune removes the least recently
// used first); failures only make the entry look older.
func touch(path string) {
	now := time.Now()
	_ = os.Chtimes(path, now, now)
}

// PruneStats says what Prune removed.
type PruneStats struct {
	Blobs, Unpacked, Stale int   // blobs, unpacked root filesystems, leftovers of interrupted pulls and runs
	Bytes                  int64 // blob bytes freed
}

// Prune removes blobs and unpacked root filesystems not used for
// olderThan (all of them for 0), and every leftover of an interrupted pull
// (temporary blobs, partial and per-run unpack directories). It waits for
// running pulls to finish and blocks new ones meanwhile.
func (c *Cache) Prune(ctx context.Context, olderThan time.Duration) (PruneStats, error) {
	var st PruneStats
	if olderThan < 0 {
		return st, fmt.Errorf("prune: negative age %s", olderThan)
	}
	unlock, err := c.lock(ctx, syscall.LOCK_EX)
	if err != nil {
		return st, err
	}
	defer unlock()
	cutoff := time.Now().Add(-olderThan)
	old := func(e os.DirEntry) bool {
		fi, err := e.Info()
		return err == nil && (olderThan == 0 || fi.ModTime().Before(cutoff))
	}
	blobs := filepath.Join(c.dir, "blobs", "sha256")
	ents, err := os.ReadDir(blobs)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("prune %s: %w", blobs, err)
	}
	for _, e := range ents {
		if !old(e) {
			continue
		}
		fi, _ := e.Info()
		if err := os.Remove(filepath.Join(blobs, e.Name())); err != nil {
			return st, fmt.Errorf("prune: %w", err)
		}
		st.Blobs++
		if fi != nil {
			st.Bytes += fi.Size()
		}
	}
	// Nobody writes while the lock is held: every temporary is a leftover.
	tmp := filepath.Join(c.dir, "tmp")
	ents, _ = os.ReadDir(tmp)
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return st, fmt.Errorf("prune: %w", err)
		}
		st.Stale++
	}
	up := filepath.Join(c.dir, UnpackedDir)
	ents, _ = os.ReadDir(up)
	for _, e := range ents {
		stale := strings.HasPrefix(e.Name(), ".")
		if !stale && !old(e) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(up, e.Name())); err != nil {
			return st, fmt.Errorf("prune: %w", err)
		}
		if stale {
			st.Stale++
		} else {
			st.Unpacked++
		}
	}
	return st, nil
}

// runDirPrefix names per-run unpack directories (and, with ".lock"
// appended, their lock files) below UnpackedDir.
const runDirPrefix = ".run-"

// RunDir makes a directory below UnpackedDir for one run's unpacked rootfs
// (an encrypted image's plaintext, which must not outlive the run). A lock
// file next to it stays locked while the calling process lives, so that
// SweepRunDirs can tell a live run's directory from a dead one's. release
// removes both.
func (c *Cache) RunDir() (dir string, release func() error, err error) {
	up := filepath.Join(c.dir, UnpackedDir)
	if err := os.MkdirAll(up, 0o700); err != nil {
		return "", nil, err
	}
	if dir, release, err = ownedDir(up, runDirPrefix, 0o700); err != nil {
		return "", nil, fmt.Errorf("per-run unpack directory: %w", err)
	}
	return dir, release, nil
}

// SweepRunDirs removes the per-run directories of runs that ended without
// removing them (killed, crashed): those whose lock file no process holds.
// Directories without a lock file (older coffer versions) go once they are
// an hour old. It returns how many it removed.
func (c *Cache) SweepRunDirs() (int, error) {
	up := filepath.Join(c.dir, UnpackedDir)
	n, err := sweepOwnedDirs(up, runDirPrefix)
	if err != nil {
		return n, fmt.Errorf("remove a dead run's unpack directory: %w", err)
	}
	ents, _ := os.ReadDir(up)
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, runDirPrefix) || strings.HasSuffix(name, ".lock") {
			continue
		}
		if _, err := os.Stat(filepath.Join(up, name+".lock")); err == nil {
			continue // the lock file decides
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
			if err := os.RemoveAll(filepath.Join(up, name)); err != nil {
				return n, fmt.Errorf("remove a dead run's unpack directory: %w", err)
			}
			n++
		}
	}
	return n, nil
}

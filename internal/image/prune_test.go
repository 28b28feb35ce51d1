package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCachePrune(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	put := func(b string, mtime time.Time) string {
		h := digestOf([]byte(b))
		if err := c.Put(h, []byte(b)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(c.path(h), mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return c.path(h)
	}
	oldBlob, newBlob := put("old blob", old), put("new blob", time.Now())
	mk := func(p string, mtime time.Time) string {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Join(p, "rootfs", "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldUnpacked, newUnpacked := mk("unpacked/aaaa", old), mk("unpacked/bbbb", time.Now())
	leftover := mk("unpacked/.run-123", time.Now())
	if err := os.WriteFile(filepath.Join(dir, "tmp", "x.partial"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	// A shared holder (a pull or run) makes Prune wait.
	unlock, err := c.Shared(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Prune(ctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("prune while the cache is in use: err = %v, want to wait", err)
	}
	if _, err := os.Stat(oldBlob); err != nil {
		t.Fatal("a prune that waited removed something")
	}
	unlock()

	st, err := c.Prune(context.Background(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blobs != 1 || st.Bytes != int64(len("old blob")) || st.Unpacked != 1 || st.Stale != 2 {
		t.Fatalf("prune stats %+v", st)
	}
	for _, p := range []string{oldBlob, oldUnpacked, leftover, filepath.Join(dir, "tmp", "x.partial")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s survived prune", p)
		}
	}
	for _, p := range []string{newBlob, newUnpacked} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("recent %s was pruned", p)
		}
	}
	if st, err = c.Prune(context.Background(), 0); err != nil || st.Blobs != 1 || st.Unpacked != 1 {
		t.Fatalf("prune everything: %+v %v", st, err)
	}
	if _, err := c.Prune(context.Background(), -time.Second); err == nil {
		t.Fatal("negative age accepted")
	}
}

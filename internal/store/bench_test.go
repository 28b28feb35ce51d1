package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
)

func BenchmarkBoltPut(b *testing.B) {
	st, err := OpenBolt(filepath.Join(b.TempDir(), "kbs.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	v := make([]byte, 512)
	i := 0
	for b.Loop() {
		i++
		if _, err := st.Put(ctx, NSResources, fmt.Sprintf("k/%d", i), v, true); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBoltAppendAuditParallel(b *testing.B) {
	st, err := OpenBolt(filepath.Join(b.TempDir(), "kbs.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := AppendAudit(ctx, st, map[string]any{"event": "attest", "n": n.Add(1)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkBoltGet(b *testing.B) {
	st, err := OpenBolt(filepath.Join(b.TempDir(), "kbs.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if _, err := st.Put(ctx, NSResources, "a/b/c", make([]byte, 512), true); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := st.Get(ctx, NSResources, "a/b/c"); err != nil {
			b.Fatal(err)
		}
	}
}

package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// impls runs f against a fresh Bolt and a fresh Memory store.
func impls(t *testing.T, f func(t *testing.T, st Store)) {
	t.Run("bolt", func(t *testing.T) {
		b, err := OpenBolt(filepath.Join(t.TempDir(), "kbs.db"), BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		f(t, b)
	})
	t.Run("memory", func(t *testing.T) {
		m := NewMemory()
		t.Cleanup(func() { m.Close() })
		f(t, m)
	})
}

func TestBasicOps(t *testing.T) {
	impls(t, func(t *testing.T, st Store) {
		ctx := context.Background()
		if _, err := st.Get(ctx, NSResources, "a/b/c"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
		}
		if err := st.Delete(ctx, NSResources, "a/b/c"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Delete missing: err = %v, want ErrNotFound", err)
		}
		w, err := st.Put(ctx, NSResources, "a/b/c", []byte("v1"), false)
		if err != nil || !w {
			t.Fatalf("Put new: written=%v err=%v", w, err)
		}
		// overwrite=false keeps the existing value.
		w, err = st.Put(ctx, NSResources, "a/b/c", []byte("v2"), false)
		if err != nil || w {
			t.Fatalf("Put existing overwrite=false: written=%v err=%v, want false nil", w, err)
		}
		got, err := st.Get(ctx, NSResources, "a/b/c")
		if err != nil || string(got) != "v1" {
			t.Fatalf("Get = %q, %v; want v1", got, err)
		}
		// Returned slices are copies.
		got[0] = 'X'
		got, _ = st.Get(ctx, NSResources, "a/b/c")
		if string(got) != "v1" {
			t.Fatalf("store value aliased caller slice: %q", got)
		}
		w, err = st.Put(ctx, NSResources, "a/b/c", []byte("v3"), true)
		if err != nil || !w {
			t.Fatalf("Put overwrite=true: written=%v err=%v", w, err)
		}
		got, _ = st.Get(ctx, NSResources, "a/b/c")
		if string(got) != "v3" {
			t.Fatalf("after overwrite Get = %q", got)
		}
		// Namespaces are separate.
		if _, err := st.Get(ctx, NSAudit, "a/b/c"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("namespace leak: %v", err)
		}
		// Empty value is a value, not a missing key.
		if _, err := st.Put(ctx, NSResources, "empty", nil, true); err != nil {
			t.Fatal(err)
		}
		got, err = st.Get(ctx, NSResources, "empty")
		if err != nil || len(got) != 0 {
			t.Fatalf("empty value: %q %v", got, err)
		}
		if err := st.Delete(ctx, NSResources, "a/b/c"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Get(ctx, NSResources, "a/b/c"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
	})
}

func TestListPrefixSorted(t *testing.T) {
	impls(t, func(t *testing.T, st Store) {
		ctx := context.Background()
		keys := []string{"repo/key/b", "repo/key/a", "repo/cert/z", "other/x/y", "repo2/a/b", "Repo/a/b"}
		for _, k := range keys {
			if _, err := st.Put(ctx, NSResources, k, []byte(k), true); err != nil {
				t.Fatal(err)
			}
		}
		got, err := st.List(ctx, NSResources, "repo/")
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"repo/cert/z", "repo/key/a", "repo/key/b"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("List repo/ = %v, want %v", got, want)
		}
		all, err := st.List(ctx, NSResources, "")
		if err != nil {
			t.Fatal(err)
		}
		wantAll := []string{"Repo/a/b", "other/x/y", "repo/cert/z", "repo/key/a", "repo/key/b", "repo2/a/b"}
		if fmt.Sprint(all) != fmt.Sprint(wantAll) {
			t.Fatalf("List all = %v, want %v", all, wantAll)
		}
		none, err := st.List(ctx, "never-written", "")
		if err != nil || len(none) != 0 {
			t.Fatalf("List empty namespace = %v, %v", none, err)
		}
		if _, err := st.List(ctx, NSResources, "bad prefix"); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("List bad prefix err = %v", err)
		}
	})
}

func TestBadKeysRejected(t *testing.T) {
	bad := []string{
		"", "..", ".", "a/../b", "../a", "a/..", "a/./b", "/a", "a/", "a//b",
		"a b", "a\x00b", "a\\b", "ä", "a%2e", "a:b", strings.Repeat("a", MaxKeyLen+1),
	}
	good := []string{"a", "a/b/c", "A-Z_0.9", "repo/type/tag.v1", "..a", "a..", ".hidden/x", strings.Repeat("a", MaxKeyLen)}
	for _, k := range bad {
		if err := ValidateKey(k); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
	for _, k := range good {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", k, err)
		}
	}
	for _, ns := range []string{"", "a/b", "..", "a b"} {
		if err := ValidateNamespace(ns); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateNamespace(%q) = %v, want ErrInvalidKey", ns, err)
		}
	}
	impls(t, func(t *testing.T, st Store) {
		ctx := context.Background()
		for _, k := range bad {
			if _, err := st.Put(ctx, NSResources, k, []byte("x"), true); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Put(%q) err = %v, want ErrInvalidKey", k, err)
			}
			if _, err := st.Get(ctx, NSResources, k); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Get(%q) err = %v, want ErrInvalidKey", k, err)
			}
			if err := st.Delete(ctx, NSResources, k); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Delete(%q) err = %v, want ErrInvalidKey", k, err)
			}
		}
		if _, err := st.Put(ctx, "bad/ns", "k", nil, true); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Put bad namespace err = %v", err)
		}
		keys, _ := st.List(ctx, NSResources, "")
		if len(keys) != 0 {
			t.Errorf("bad keys were stored: %q", keys)
		}
	})
}

func TestValueSizeLimit(t *testing.T) {
	ctx := context.Background()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kbs.db"), BoltOptions{MaxValueSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Put(ctx, NSResources, "k", make([]byte, 1024), true); err != nil {
		t.Fatalf("value at limit: %v", err)
	}
	if _, err := b.Put(ctx, NSResources, "k2", make([]byte, 1025), true); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("value over limit err = %v, want ErrTooLarge", err)
	}
	m := NewMemory()
	if _, err := m.Put(ctx, NSResources, "k", make([]byte, DefaultMaxValueSize+1), true); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("memory over default limit err = %v", err)
	}
}

func TestContextAndClosed(t *testing.T) {
	impls(t, func(t *testing.T, st Store) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := st.Put(ctx, NSResources, "k", []byte("v"), true); !errors.Is(err, context.Canceled) {
			t.Errorf("Put cancelled ctx err = %v", err)
		}
		if _, err := st.Get(ctx, NSResources, "k"); !errors.Is(err, context.Canceled) {
			t.Errorf("Get cancelled ctx err = %v", err)
		}
		if _, err := st.List(ctx, NSResources, ""); !errors.Is(err, context.Canceled) {
			t.Errorf("List cancelled ctx err = %v", err)
		}
		if err := st.Delete(ctx, NSResources, "k"); !errors.Is(err, context.Canceled) {
			t.Errorf("Delete cancelled ctx err = %v", err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Get(context.Background(), NSResources, "k"); !errors.Is(err, ErrClosed) {
			t.Errorf("Get after Close err = %v, want ErrClosed", err)
		}
		if _, err := st.Put(context.Background(), NSResources, "k", nil, true); !errors.Is(err, ErrClosed) {
			t.Errorf("Put after Close err = %v, want ErrClosed", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func TestPersistenceAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "kbs.db")
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := b.Put(ctx, NSResources, fmt.Sprintf("r/t/%02d", i), []byte{byte(i)}, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Put(ctx, NSResourcePolicy, "policy", []byte("package policy"), true); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, NSResources, "r/t/07"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("database mode = %v, want 0600", fi.Mode().Perm())
	}
	b, err = OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	keys, err := b.List(ctx, NSResources, "r/t/")
	if err != nil || len(keys) != 49 {
		t.Fatalf("after reopen %d keys (%v), want 49", len(keys), err)
	}
	v, err := b.Get(ctx, NSResources, "r/t/42")
	if err != nil || !bytes.Equal(v, []byte{42}) {
		t.Fatalf("Get r/t/42 = %v %v", v, err)
	}
	if _, err := b.Get(ctx, NSResources, "r/t/07"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key came back: %v", err)
	}
	v, err = b.Get(ctx, NSResourcePolicy, "policy")
	if err != nil || string(v) != "package policy" {
		t.Fatalf("policy = %q %v", v, err)
	}
}

const crashChildEnv = "COFFER_STORE_TEST_CRASH_CHILD"

// TestCrashChild is the child half of TestSurvivesKill: it writes, reports,
// and waits to be SIGKILLed without closing the database.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashChildEnv)
	if path == "" {
		t.Skip("helper process for TestSurvivesKill; runs only when re-executed by it")
	}
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for i := range 20 {
		if _, err := b.Put(context.Background(), NSReferenceValue, fmt.Sprintf("rv%02d", i), []byte("acked"), true); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
	}
	fmt.Println("acked")
	time.Sleep(time.Minute)
	os.Exit(2)
}

// TestSurvivesKill kills a process holding the store right after its Puts
// returned: every acknowledged Put must be there, and the lock must be free.
func TestSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	acked := false
	for sc.Scan() {
		if sc.Text() == "acked" {
			acked = true
			break
		}
		t.Logf("child: %s", sc.Text())
	}
	if !acked {
		t.Fatal("child did not acknowledge its writes")
	}
	// While the child holds the file, opening must fail with ErrLocked.
	if _, err := OpenBolt(path, BoltOptions{LockTimeout: 100 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("open while child holds lock: err = %v, want ErrLocked", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	b, err := OpenBolt(path, BoltOptions{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer b.Close()
	keys, err := b.List(context.Background(), NSReferenceValue, "")
	if err != nil || len(keys) != 20 {
		t.Fatalf("after kill: %d keys, %v; want 20", len(keys), err)
	}
}

func TestLockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = OpenBolt(path, BoltOptions{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open err = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "another coffer-kbs") || !strings.Contains(err.Error(), path) {
		t.Errorf("lock error is not actionable: %v", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Errorf("lock wait took %v, want about 200ms", d)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := OpenBolt(path, BoltOptions{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	b2.Close()
}

func TestOpenErrors(t *testing.T) {
	if _, err := OpenBolt("", BoltOptions{}); err == nil {
		t.Error("empty path accepted")
	}
	bad := filepath.Join(t.TempDir(), "garbage.db")
	if err := os.WriteFile(bad, bytes.Repeat([]byte("not a bolt file "), 512), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := OpenBolt(bad, BoltOptions{LockTimeout: 100 * time.Millisecond}); err == nil {
		b.Close()
		t.Error("garbage file opened as a database")
	}
}

func TestConcurrent(t *testing.T) {
	impls(t, func(t *testing.T, st Store) {
		ctx := context.Background()
		var wg sync.WaitGroup
		errc := make(chan error, 64)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					k := fmt.Sprintf("g%d/k%02d", g, i)
					if _, err := st.Put(ctx, NSResources, k, []byte(k), i%2 == 0); err != nil {
						errc <- err
						return
					}
					v, err := st.Get(ctx, NSResources, k)
					if err != nil || string(v) != k {
						errc <- fmt.Errorf("get %s = %q %v", k, v, err)
						return
					}
					if _, err := st.List(ctx, NSResources, fmt.Sprintf("g%d/", g)); err != nil {
						errc <- err
						return
					}
					if err := AppendAudit(ctx, st, map[string]any{"g": g, "i": i}); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
		keys, _ := st.List(ctx, NSResources, "")
		if len(keys) != 200 {
			t.Errorf("%d keys, want 200", len(keys))
		}
		ents, err := ListAudit(ctx, st, 0)
		if err != nil || len(ents) != 200 {
			t.Errorf("%d audit entries (%v), want 200", len(ents), err)
		}
	})
}

func TestAudit(t *testing.T) {
	impls(t, func(t *testing.T, st Store) {
		ctx := context.Background()
		base := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
		for i := range 5 {
			if err := AppendAuditBatch(ctx, st, []AuditItem{{At: base.Add(time.Duration(i) * time.Millisecond), Event: map[string]int{"n": i}}}); err != nil {
				t.Fatal(err)
			}
		}
		// Same timestamp twice still gives two entries.
		if err := AppendAuditBatch(ctx, st, []AuditItem{{At: base.Add(4 * time.Millisecond), Event: map[string]int{"n": 5}}}); err != nil {
			t.Fatal(err)
		}
		all, err := ListAudit(ctx, st, 0)
		if err != nil || len(all) != 6 {
			t.Fatalf("ListAudit = %d, %v", len(all), err)
		}
		for i := range 4 {
			if got := string(all[i].Event); got != fmt.Sprintf(`{"n":%d}`, i) {
				t.Errorf("entry %d = %s", i, got)
			}
		}
		if !all[0].Time.Equal(base) {
			t.Errorf("entry time = %v, want %v", all[0].Time, base)
		}
		last2, err := ListAudit(ctx, st, 2)
		if err != nil || len(last2) != 2 || last2[0].Key != all[4].Key {
			t.Fatalf("ListAudit(2) = %+v, %v", last2, err)
		}
		if err := AppendAudit(ctx, st, func() {}); err == nil {
			t.Error("unencodable event accepted")
		}
		n, err := PruneAudit(ctx, st, 2)
		if err != nil || n != 4 {
			t.Fatalf("PruneAudit = %d, %v", n, err)
		}
		rest, _ := ListAudit(ctx, st, 0)
		if len(rest) != 2 || rest[1].Key != all[5].Key {
			t.Fatalf("after prune: %+v", rest)
		}
	})
}

// Refused-request records live in their own namespace: ListAudit merges
// both in time order, and each prunes on its own bound, so refusals never
// push other records out.
func TestAuditRefusedApart(t *testing.T) {
	impls(t, func(t *testing.T, st Store) {
		ctx := context.Background()
		base := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
		var items []AuditItem
		for i := range 10 {
			items = append(items, AuditItem{At: base.Add(time.Duration(i) * time.Millisecond), Event: map[string]int{"n": i}, Refused: i%3 != 0})
		}
		if err := AppendAuditBatch(ctx, st, items); err != nil {
			t.Fatal(err)
		}
		main, _ := st.List(ctx, NSAudit, "")
		refused, _ := st.List(ctx, NSAuditRefused, "")
		if len(main) != 4 || len(refused) != 6 {
			t.Fatalf("%d main and %d refused keys, want 4 and 6", len(main), len(refused))
		}
		all, err := ListAudit(ctx, st, 0)
		if err != nil || len(all) != 10 {
			t.Fatalf("ListAudit = %d, %v", len(all), err)
		}
		for i, e := range all {
			if got := string(e.Event); got != fmt.Sprintf(`{"n":%d}`, i) {
				t.Errorf("merged entry %d = %s", i, got)
			}
		}
		if n, err := PruneRefusedAudit(ctx, st, 2); err != nil || n != 4 {
			t.Fatalf("PruneRefusedAudit = %d, %v", n, err)
		}
		rest, _ := ListAudit(ctx, st, 0)
		var got []string
		for _, e := range rest {
			got = append(got, string(e.Event))
		}
		want := []string{`{"n":0}`, `{"n":3}`, `{"n":6}`, `{"n":7}`, `{"n":8}`, `{"n":9}`}
		if !slices.Equal(got, want) {
			t.Fatalf("after pruning the refusals to 2: %v, want %v", got, want)
		}
		// DeleteBatch skips missing keys and refuses bad ones.
		if err := st.DeleteBatch(ctx, NSAudit, []string{main[0], "no-such-key"}); err != nil {
			t.Fatal(err)
		}
		if keys, _ := st.List(ctx, NSAudit, ""); len(keys) != 3 {
			t.Fatalf("%d keys after DeleteBatch, want 3", len(keys))
		}
		if err := st.DeleteBatch(ctx, NSAudit, []string{"../x"}); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("DeleteBatch of a bad key: %v", err)
		}
	})
}

// TestGroupCommitMixed runs concurrent writes where some fail their
// precondition (deleting a missing key): the failures must not affect the
// writes committed in the same transaction.
func TestGroupCommitMixed(t *testing.T) {
	ctx := context.Background()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kbs.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				k := fmt.Sprintf("g%02d/%02d", g, i)
				if err := b.Delete(ctx, NSResources, k); !errors.Is(err, ErrNotFound) {
					t.Errorf("delete missing %s: %v", k, err)
				}
				if w, err := b.Put(ctx, NSResources, k, []byte(k), false); err != nil || !w {
					t.Errorf("put %s: %v %v", k, w, err)
				}
				if w, err := b.Put(ctx, NSResources, k, []byte("again"), false); err != nil || w {
					t.Errorf("put existing %s: %v %v", k, w, err)
				}
			}
		}()
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenBolt(b.Path(), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	keys, err := b.List(ctx, NSResources, "")
	if err != nil || len(keys) != 320 {
		t.Fatalf("%d keys after reopen (%v), want 320", len(keys), err)
	}
	for _, k := range keys {
		if v, _ := b.Get(ctx, NSResources, k); string(v) != k {
			t.Fatalf("%s = %q", k, v)
		}
	}
}

func TestPutBatch(t *testing.T) {
	impls(t, func(t *testing.T, st Store) {
		ctx := context.Background()
		if _, err := st.Put(ctx, NSResources, "a/b/old", []byte("keep"), true); err != nil {
			t.Fatal(err)
		}
		kvs := []KV{{Key: "a/b/old", Value: []byte("new")}, {Key: "a/b/c1", Value: []byte("1")}, {Key: "a/b/c2"}}
		written, err := st.PutBatch(ctx, NSResources, kvs, false)
		if err != nil || !slices.Equal(written, []bool{false, true, true}) {
			t.Fatalf("PutBatch = %v, %v", written, err)
		}
		if v, _ := st.Get(ctx, NSResources, "a/b/old"); string(v) != "keep" {
			t.Errorf("existing value overwritten without overwrite: %q", v)
		}
		if v, err := st.Get(ctx, NSResources, "a/b/c2"); err != nil || len(v) != 0 {
			t.Errorf("nil value: %q, %v", v, err)
		}
		// One bad entry refuses the whole batch: nothing is written.
		bad := []KV{{Key: "a/b/d1", Value: []byte("1")}, {Key: "../x", Value: []byte("2")}}
		if _, err := st.PutBatch(ctx, NSResources, bad, true); err == nil {
			t.Fatal("a batch with a bad key was accepted")
		}
		if _, err := st.Get(ctx, NSResources, "a/b/d1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("part of a refused batch was written: %v", err)
		}
	})
}

func TestAuditBatchKeepsOrder(t *testing.T) {
	impls(t, func(t *testing.T, st Store) {
		ctx := context.Background()
		at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		items := make([]AuditItem, 300)
		for i := range items {
			items[i] = AuditItem{At: at, Event: map[string]int{"n": i}}
		}
		if err := AppendAuditBatch(ctx, st, items); err != nil {
			t.Fatal(err)
		}
		all, err := ListAudit(ctx, st, 0)
		if err != nil || len(all) != len(items) {
			t.Fatalf("ListAudit = %d entries, %v", len(all), err)
		}
		for i, e := range all {
			if got := string(e.Event); got != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("entry %d = %s: the batch's order was lost", i, got)
			}
		}
		if err := AppendAuditBatch(ctx, st, []AuditItem{{At: at, Event: 1}, {At: at, Event: func() {}}}); err == nil {
			t.Error("a batch with an unencodable event was accepted")
		}
		if n, _ := ListAudit(ctx, st, 0); len(n) != len(items) {
			t.Errorf("a refused batch wrote %d entries", len(n)-len(items))
		}
	})
}

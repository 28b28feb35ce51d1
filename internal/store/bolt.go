package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultLockTimeout is how long OpenBolt waits for the file lock.
const DefaultLockTimeout = 3 * time.Second

// BoltOptions configure OpenBolt. The zero value gives the defaults.
type BoltOptions struct {
	// LockTimeout is how long to wait for the exclusive file lock held by
	// another process before failing with ErrLocked
	// (default DefaultLockTimeout).
	LockTimeout time.Duration
	// MaxValueSize is the largest value Put accepts
	// (default DefaultMaxValueSize).
	MaxValueSize int
	// Logger receives open/close messages (default slog.Default()).
	Logger *slog.Logger
}

// Bolt is the embedded, persistent Store: one bbolt file, one bucket per
// namespace. Every Put and Delete is part of a committed, fsync'd
// transaction before it returns: once it returns nil the change survives a
// crash or restart. Safe for concurrent use: reads run in parallel;
// writes go through one writer goroutine that commits whatever writes are
// waiting in a single transaction ("group commit"), so concurrent writers
// share an fsync instead of queueing for one each, and a lone writer waits
// for exactly one.
type Bolt struct {
	db       *bolt.DB
	path     string
	maxValue int
	log      *slog.Logger

	closeMu sync.RWMutex // write lock held by Close; read lock by senders
	closed  bool
	writes  chan *writeReq
	done    chan struct{} // closed when the writer goroutine exits
}

// maxGroup bounds the writes committed in one transaction.
const maxGroup = 256

// writeReq is one write for the writer goroutine. fn must not modify the
// transaction when it returns ErrNotFound (a failed precondition).
type writeReq struct {
	fn  func(tx *bolt.Tx) error
	err chan error
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed, mode 0600) the database file at path.
// The parent directory is created (0700) if missing. If another process
// (another coffer-kbs) holds the file, it fails after opts.LockTimeout with
// an error wrapping ErrLocked.
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.MaxValueSize <= 0 {
		opts.MaxValueSize = DefaultMaxValueSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if path == "" {
		return nil, errors.New("open store: empty database path; set --data-dir")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: create directory for %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: %w (waited %s); is another coffer-kbs running with the same data directory? Stop it or use a different --data-dir", path, ErrLocked, opts.LockTimeout)
		}
		return nil, fmt.Errorf("open store %s: %w; check the file is a coffer-kbs database and is readable and writable", path, err)
	}
	opts.Logger.Debug("store opened", "path", path)
	b := &Bolt{db: db, path: path, maxValue: opts.MaxValueSize, log: opts.Logger,
		writes: make(chan *writeReq, maxGroup), done: make(chan struct{})}
	go b.writer()
	return b, nil
}

// writer commits queued writes, as many as are waiting (up to maxGroup)
// per transaction.
func (b *Bolt) writer() {
	defer close(b.done)
	group := make([]*writeReq, 0, maxGroup)
	for first := range b.writes {
		group = append(group[:0], first)
	drain:
		for len(group) < maxGroup {
			select {
			case r, ok := <-b.writes:
				if !ok {
					break drain
				}
				group = append(group, r)
			default:
				break drain
			}
		}
		b.commit(group)
	}
}

// commit runs a group of writes in one transaction. Writes that fail a
// precondition (ErrNotFound) leave the transaction untouched and get their
// error; any other failure aborts the transaction and every write of the
// group is retried in a transaction of its own, so that one bad write
// cannot fail the others.
func (b *Bolt) commit(group []*writeReq) {
	if len(group) == 1 {
		group[0].err <- b.db.Update(group[0].fn)
		return
	}
	errs := make([]error, len(group))
	err := b.db.Update(func(tx *bolt.Tx) error {
		for i, r := range group {
			errs[i] = r.fn(tx)
			if errs[i] != nil && !errors.Is(errs[i], ErrNotFound) {
				return errs[i]
			}
		}
		return nil
	})
	if err == nil {
		for i, r := range group {
			r.err <- errs[i]
		}
		return
	}
	for _, r := range group {
		r.err <- b.db.Update(r.fn)
	}
}

// write queues fn for the writer goroutine and waits for its commit.
func (b *Bolt) write(fn func(tx *bolt.Tx) error) error {
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		return ErrClosed
	}
	r := &writeReq{fn: fn, err: make(chan error, 1)}
	b.writes <- r
	b.closeMu.RUnlock()
	return <-r.err
}

// Path returns the database file path.
func (b *Bolt) Path() string { return b.path }

func (b *Bolt) wrap(op, ns, key string, err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	return fmt.Errorf("store %s %s/%s: %w", op, ns, key, err)
}

// Get returns a copy of the value at ns/key, or an error wrapping
// ErrNotFound.
func (b *Bolt) Get(ctx context.Context, ns, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, b.wrap("get", ns, key, err)
	}
	if err := checkOp(ns, key); err != nil {
		return nil, b.wrap("get", ns, key, err)
	}
	var out []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(ns))
		if bk == nil {
			return ErrNotFound
		}
		v := bk.Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		out = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, b.wrap("get", ns, key, err)
	}
	return out, nil
}

// Put stores value at ns/key. With overwrite=false an existing value is
// kept and (false, nil) returned. The write is fsync'd before returning.
func (b *Bolt) Put(ctx context.Context, ns, key string, value []byte, overwrite bool) (bool, error) {
	written, err := b.PutBatch(ctx, ns, []KV{{Key: key, Value: value}}, overwrite)
	if err != nil {
		return false, err
	}
	return written[0], nil
}

// PutBatch implements Store: one transaction, one fsync, for all of kvs.
func (b *Bolt) PutBatch(ctx context.Context, ns string, kvs []KV, overwrite bool) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, b.wrap("put", ns, batchKey(kvs), err)
	}
	for _, kv := range kvs {
		if err := checkOp(ns, kv.Key); err != nil {
			return nil, b.wrap("put", ns, kv.Key, err)
		}
		if err := checkValue(kv.Value, b.maxValue); err != nil {
			return nil, b.wrap("put", ns, kv.Key, err)
		}
	}
	written := make([]bool, len(kvs))
	err := b.write(func(tx *bolt.Tx) error {
		clear(written)
		bk, err := tx.CreateBucketIfNotExists([]byte(ns))
		if err != nil {
			return err
		}
		for i, kv := range kvs {
			if !overwrite && bk.Get([]byte(kv.Key)) != nil {
				continue
			}
			v := kv.Value
			if v == nil {
				v = []byte{}
			}
			if err := bk.Put([]byte(kv.Key), v); err != nil {
				return err
			}
			written[i] = true
		}
		return nil
	})
	if err != nil {
		return nil, b.wrap("put", ns, batchKey(kvs), err)
	}
	return written, nil
}

// batchKey names a batch's keys in errors: the key of a single write.
func batchKey(kvs []KV) string {
	if len(kvs) == 1 {
		return kvs[0].Key
	}
	return batchName(len(kvs))
}

// batchName names a batch of n keys in errors.
func batchName(n int) string { return fmt.Sprintf("(batch of %d)", n) }

// Delete removes ns/key; a missing key returns an error wrapping
// ErrNotFound.
func (b *Bolt) Delete(ctx context.Context, ns, key string) error {
	if err := ctx.Err(); err != nil {
		return b.wrap("delete", ns, key, err)
	}
	if err := checkOp(ns, key); err != nil {
		return b.wrap("delete", ns, key, err)
	}
	err := b.write(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(ns))
		if bk == nil || bk.Get([]byte(key)) == nil {
			return ErrNotFound
		}
		return bk.Delete([]byte(key))
	})
	if err != nil {
		return b.wrap("delete", ns, key, err)
	}
	return nil
}

// DeleteBatch implements Store: one transaction, one fsync.
func (b *Bolt) DeleteBatch(ctx context.Context, ns string, keys []string) error {
	if err := ctx.Err(); err != nil {
		return b.wrap("delete", ns, batchName(len(keys)), err)
	}
	for _, k := range keys {
		if err := checkOp(ns, k); err != nil {
			return b.wrap("delete", ns, k, err)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	err := b.write(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(ns))
		if bk == nil {
			return nil
		}
		for _, k := range keys {
			if err := bk.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return b.wrap("delete", ns, batchName(len(keys)), err)
	}
	return nil
}

// List returns the keys of ns starting with prefix, in byte order.
func (b *Bolt) List(ctx context.Context, ns, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, b.wrap("list", ns, prefix+"*", err)
	}
	if err := ValidateNamespace(ns); err != nil {
		return nil, b.wrap("list", ns, prefix+"*", err)
	}
	if err := validatePrefix(prefix); err != nil {
		return nil, b.wrap("list", ns, prefix+"*", err)
	}
	keys := []string{}
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(ns))
		if bk == nil {
			return nil
		}
		p := []byte(prefix)
		c := bk.Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			if len(keys)%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			keys = append(keys, string(k))
		}
		return nil
	})
	if err != nil {
		return nil, b.wrap("list", ns, prefix+"*", err)
	}
	return keys, nil
}

// Close waits for queued writes to commit, then releases the file lock.
// Further operations fail with ErrClosed. Closing twice is harmless.
func (b *Bolt) Close() error {
	b.closeMu.Lock()
	if !b.closed {
		b.closed = true
		close(b.writes)
	}
	b.closeMu.Unlock()
	<-b.done
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", b.path, err)
	}
	b.log.Debug("store closed", "path", b.path)
	return nil
}

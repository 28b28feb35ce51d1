package store

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Memory is an in-memory Store for tests and ephemeral use. Nothing
// persists. It applies the same key and value checks as Bolt.
type Memory struct {
	mu       sync.RWMutex
	data     map[string]map[string][]byte
	closed   bool
	maxValue int
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store with DefaultMaxValueSize.
func NewMemory() *Memory {
	return &Memory{data: map[string]map[string][]byte{}, maxValue: DefaultMaxValueSize}
}

func (m *Memory) check(ctx context.Context, op, ns, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store %s %s/%s: %w", op, ns, key, err)
	}
	if m.closed {
		return fmt.Errorf("store %s %s/%s: %w", op, ns, key, ErrClosed)
	}
	if op == "list" {
		if err := ValidateNamespace(ns); err != nil {
			return fmt.Errorf("store %s %s/%s*: %w", op, ns, key, err)
		}
		if err := validatePrefix(key); err != nil {
			return fmt.Errorf("store %s %s/%s*: %w", op, ns, key, err)
		}
		return nil
	}
	if err := checkOp(ns, key); err != nil {
		return fmt.Errorf("store %s %s/%s: %w", op, ns, key, err)
	}
	return nil
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, ns, key string) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(ctx, "get", ns, key); err != nil {
		return nil, err
	}
	v, ok := m.data[ns][key]
	if !ok {
		return nil, fmt.Errorf("store get %s/%s: %w", ns, key, ErrNotFound)
	}
	return bytes.Clone(v), nil
}

// Put implements Store.
func (m *Memory) Put(ctx context.Context, ns, key string, value []byte, overwrite bool) (bool, error) {
	written, err := m.PutBatch(ctx, ns, []KV{{Key: key, Value: value}}, overwrite)
	if err != nil {
		return false, err
	}
	return written[0], nil
}

// PutBatch implements Store.
func (m *Memory) PutBatch(ctx context.Context, ns string, kvs []KV, overwrite bool) ([]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, kv := range kvs {
		if err := m.check(ctx, "put", ns, kv.Key); err != nil {
			return nil, err
		}
		if err := checkValue(kv.Value, m.maxValue); err != nil {
			return nil, fmt.Errorf("store put %s/%s: %w", ns, kv.Key, err)
		}
	}
	bk := m.data[ns]
	if bk == nil {
		bk = map[string][]byte{}
		m.data[ns] = bk
	}
	written := make([]bool, len(kvs))
	for i, kv := range kvs {
		if _, ok := bk[kv.Key]; ok && !overwrite {
			continue
		}
		v := bytes.Clone(kv.Value)
		if v == nil {
			v = []byte{}
		}
		bk[kv.Key] = v
		written[i] = true
	}
	return written, nil
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, ns, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, "delete", ns, key); err != nil {
		return err
	}
	if _, ok := m.data[ns][key]; !ok {
		return fmt.Errorf("store delete %s/%s: %w", ns, key, ErrNotFound)
	}
	delete(m.data[ns], key)
	return nil
}

// DeleteBatch implements Store.
func (m *Memory) DeleteBatch(ctx context.Context, ns string, keys []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		if err := m.check(ctx, "delete", ns, k); err != nil {
			return err
		}
	}
	for _, k := range keys {
		delete(m.data[ns], k)
	}
	return nil
}

// List implements Store.
func (m *Memory) List(ctx context.Context, ns, prefix string) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(ctx, "list", ns, prefix); err != nil {
		return nil, err
	}
	keys := []string{}
	for k := range m.data[ns] {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Close implements Store; later operations fail with ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

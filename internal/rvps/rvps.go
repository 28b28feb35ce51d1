package rvps

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/coffer-project/coffer/internal/store"
)

// Version is the only accepted message and record version.
const Version = "0.1.0"

// TypeSample is the Trustee "sample" message type.
const TypeSample = "sample"

// ErrNotFound is returned (wrapped) by Get for an unknown name.
var ErrNotFound = errors.New("reference value not found")

// ErrInvalidMessage is returned (wrapped) by Register for a malformed or
// unsupported message.
var ErrInvalidMessage = errors.New("invalid reference value message")

// Message is the RVPS registration message.
type Message struct {
	Version string `json:"version"`
	Type    string `json:"type"`
	Payload string `json:"payload"`
	// Expiration is a Coffer extension: RFC 3339 expiry applied to every
	// entry of the payload. Empty means now + the service's validity.
	Expiration string `json:"expiration,omitempty"`
}

// Record is one stored reference value.
type Record struct {
	Version    string          `json:"version"`
	Name       string          `json:"name"`
	Expiration time.Time       `json:"expiration"`
	Value      json.RawMessage `json:"value"`
	// Expired is computed by Get and List (never stored): the expiration
	// is not after the service's current time.
	Expired bool `json:"expired,omitempty"`
}

// Service stores and serves reference values. Safe for concurrent use.
type Service struct {
	st       store.Store
	now      func() time.Time
	validity time.Duration

	// cache holds decoded values for Query, which runs several times per
	// attestation; every write through this Service invalidates it (the
	// store has no other writer).
	mu    sync.Mutex
	cache map[string]cachedValue
}

type cachedValue struct {
	value      any
	found      bool
	expiration time.Time
}

// maxCached bounds the query cache.
const maxCached = 4096

func (s *Service) invalidate() {
	s.mu.Lock()
	s.cache = nil
	s.mu.Unlock()
}

// Option configures a Service.
type Option func(*Service)

// WithClock sets the clock used for default expirations and expiry checks
// (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithValidity sets how long a registered value stays valid when the
// message has no explicit expiration (default: 12 calendar months).
func WithValidity(d time.Duration) Option { return func(s *Service) { s.validity = d } }

// New returns a Service over st (namespace store.NSReferenceValue).
func New(st store.Store, opts ...Option) *Service {
	s := &Service{st: st, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Service) defaultExpiration() time.Time {
	now := s.now().UTC()
	if s.validity > 0 {
		return now.Add(s.validity)
	}
	return now.AddDate(0, 12, 0)
}

// ParseMessage decodes and checks a registration message and returns the
// records it would store, sorted by name, without storing them.
func (s *Service) ParseMessage(msg []byte) ([]Record, error) {
	var m Message
	dec := json.NewDecoder(bytes.NewReader(msg))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object {\"version\",\"type\",\"payload\"}: %v", ErrInvalidMessage, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidMessage)
	}
	if m.Version != Version {
		return nil, fmt.Errorf("%w: version %q is not supported; use \"version\":%q", ErrInvalidMessage, m.Version, Version)
	}
	switch m.Type {
	case TypeSample:
	case "swid", "corim", "in-toto", "in_toto":
		return nil, fmt.Errorf("%w: type %q is a Trustee format coffer does not implement; register values with type %q", ErrInvalidMessage, m.Type, TypeSample)
	default:
		return nil, fmt.Errorf("%w: unknown type %q; the supported type is %q", ErrInvalidMessage, m.Type, TypeSample)
	}
	raw, err := base64.StdEncoding.DecodeString(m.Payload)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(m.Payload)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not standard base64: %v", ErrInvalidMessage, err)
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("%w: payload must be base64 of a JSON object {\"<name>\": <value>, ...}: %v", ErrInvalidMessage, err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: payload has no reference values", ErrInvalidMessage)
	}
	exp := s.defaultExpiration()
	if m.Expiration != "" {
		exp, err = time.Parse(time.RFC3339, m.Expiration)
		if err != nil {
			return nil, fmt.Errorf("%w: expiration %q is not RFC 3339 (e.g. 2027-01-31T00:00:00Z): %v", ErrInvalidMessage, m.Expiration, err)
		}
		if !exp.After(s.now()) {
			return nil, fmt.Errorf("%w: expiration %s is not in the future", ErrInvalidMessage, m.Expiration)
		}
	}
	exp = exp.UTC().Truncate(time.Second)
	recs := make([]Record, 0, len(entries))
	for name, v := range entries {
		if err := store.ValidateKey(name); err != nil {
			return nil, fmt.Errorf("%w: reference value name: %v", ErrInvalidMessage, err)
		}
		recs = append(recs, Record{Version: Version, Name: name, Expiration: exp, Value: compact(v)})
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	return recs, nil
}

func compact(v json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return v
	}
	return b.Bytes()
}

// Register parses a Trustee RVPS message and stores each entry,
// overwriting previous values of the same names. The message is checked
// completely before anything is stored.
func (s *Service) Register(ctx context.Context, msg []byte) error {
	recs, err := s.ParseMessage(msg)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := s.put(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// Set stores one reference value directly (value is any JSON-encodable
// Go value); a zero expiration means now + the default validity.
func (s *Service) Set(ctx context.Context, name string, value any, expiration time.Time) error {
	if err := store.ValidateKey(name); err != nil {
		return fmt.Errorf("set reference value: %w", err)
	}
	v, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("set reference value %q: encode value: %w", name, err)
	}
	if expiration.IsZero() {
		expiration = s.defaultExpiration()
	}
	return s.put(ctx, Record{Version: Version, Name: name, Expiration: expiration.UTC().Truncate(time.Second), Value: v})
}

func (s *Service) put(ctx context.Context, r Record) error {
	r.Expired = false
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("store reference value %q: %w", r.Name, err)
	}
	defer s.invalidate()
	if _, err := s.st.Put(ctx, store.NSReferenceValue, r.Name, b, true); err != nil {
		return fmt.Errorf("store reference value %q: %w", r.Name, err)
	}
	return nil
}

// Get returns the record for name, expired or not (Expired tells which),
// or an error wrapping ErrNotFound.
func (s *Service) Get(ctx context.Context, name string) (*Record, error) {
	b, err := s.st.Get(ctx, store.NSReferenceValue, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q; register it with a reference-value message", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read reference value %q: %w", name, err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read reference value %q: stored record is corrupt (%v); register it again", name, err)
	}
	r.Expired = !r.Expiration.After(s.now())
	return &r, nil
}

// Query returns the value of name for policy evaluation. An expired or
// unknown value gives (nil, false, nil). Numbers decode as json.Number.
func (s *Service) Query(ctx context.Context, name string) (any, bool, error) {
	if store.ValidateKey(name) != nil {
		return nil, false, nil // cannot exist
	}
	s.mu.Lock()
	c, ok := s.cache[name]
	s.mu.Unlock()
	if !ok {
		var err error
		if c, err = s.load(ctx, name); err != nil {
			return nil, false, err
		}
		s.mu.Lock()
		if s.cache == nil || len(s.cache) >= maxCached {
			s.cache = map[string]cachedValue{}
		}
		s.cache[name] = c
		s.mu.Unlock()
	}
	// Expiry is checked on every query, cached or not.
	if !c.found || !c.expiration.After(s.now()) {
		return nil, false, nil
	}
	return c.value, true, nil
}

// load reads and decodes one value for the query cache. The value is
// shared between callers: treat it as read-only.
func (s *Service) load(ctx context.Context, name string) (cachedValue, error) {
	r, err := s.Get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return cachedValue{}, nil
	}
	if err != nil {
		return cachedValue{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(r.Value))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return cachedValue{}, fmt.Errorf("reference value %q: stored value is not JSON (%v); register it again", name, err)
	}
	return cachedValue{value: v, found: true, expiration: r.Expiration}, nil
}

// Delete removes name, or returns an error wrapping ErrNotFound.
func (s *Service) Delete(ctx context.Context, name string) error {
	defer s.invalidate()
	err := s.st.Delete(ctx, store.NSReferenceValue, name)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("delete reference value %q: %w", name, err)
	}
	return nil
}

// List returns every record (expired ones included, with Expired set),
// sorted by name.
func (s *Service) List(ctx context.Context) ([]Record, error) {
	names, err := s.st.List(ctx, store.NSReferenceValue, "")
	if err != nil {
		return nil, fmt.Errorf("list reference values: %w", err)
	}
	out := make([]Record, 0, len(names))
	for _, n := range names {
		r, err := s.Get(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // deleted concurrently
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
	return out, nil
}

package rvps

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/store"
	"github.com/coffer-project/coffer/internal/testclock"
)

func msg(t *testing.T, payload any, extra ...string) []byte {
	t.Helper()
	p, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	s := `{"version":"0.1.0","type":"sample","payload":"` + base64.StdEncoding.EncodeToString(p) + `"`
	for _, e := range extra {
		s += "," + e
	}
	return []byte(s + "}")
}

func newSvc(t *testing.T) (*Service, *testclock.Clock, store.Store) {
	c := testclock.New(time.Date(2026, 3, 31, 12, 0, 0, 500, time.UTC))
	st := store.NewMemory()
	return New(st, WithClock(c.Now)), c, st
}

func TestRegisterAndQuery(t *testing.T) {
	ctx := context.Background()
	s, _, st := newSvc(t)
	// Exactly what kbs-client set-sample-reference-value sends.
	m := msg(t, map[string]any{"svn": []string{"1"}, "launch_digest": []string{"abcde"}, "major_version": 1, "minimum_minor_version": 1, "snp/tcb": map[string]int{"bl": 3}})
	if err := s.Register(ctx, m); err != nil {
		t.Fatal(err)
	}
	v, ok, err := s.Query(ctx, "svn")
	if err != nil || !ok {
		t.Fatalf("Query svn = %v %v %v", v, ok, err)
	}
	if got, _ := json.Marshal(v); string(got) != `["1"]` {
		t.Errorf("svn = %s", got)
	}
	v, ok, _ = s.Query(ctx, "major_version")
	if n, isNum := v.(json.Number); !ok || !isNum || n.String() != "1" {
		t.Errorf("major_version = %#v %v", v, ok)
	}
	v, ok, _ = s.Query(ctx, "snp/tcb")
	if got, _ := json.Marshal(v); !ok || string(got) != `{"bl":3}` {
		t.Errorf("snp/tcb = %s %v", got, ok)
	}
	if _, ok, err := s.Query(ctx, "nope"); ok || err != nil {
		t.Errorf("unknown name: ok=%v err=%v", ok, err)
	}
	if _, ok, err := s.Query(ctx, "../etc"); ok || err != nil {
		t.Errorf("invalid name: ok=%v err=%v", ok, err)
	}
	// Stored record shape is Trustee's ReferenceValue.
	raw, err := st.Get(ctx, store.NSReferenceValue, "svn")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":"0.1.0","name":"svn","expiration":"2027-03-31T12:00:00Z","value":["1"]}`
	if string(raw) != want {
		t.Errorf("stored record\n got %s\nwant %s", raw, want)
	}
	r, err := s.Get(ctx, "svn")
	if err != nil || r.Expired || r.Name != "svn" || string(r.Value) != `["1"]` {
		t.Errorf("Get = %+v %v", r, err)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get unknown err = %v", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 5 || list[0].Name != "launch_digest" || list[4].Name != "svn" {
		t.Errorf("List = %+v %v", list, err)
	}
}

func TestExpiryEnforced(t *testing.T) {
	ctx := context.Background()
	s, c, _ := newSvc(t)
	if err := s.Register(ctx, msg(t, map[string]any{"a": 1})); err != nil {
		t.Fatal(err)
	}
	c.Advance(364 * 24 * time.Hour)
	if _, ok, _ := s.Query(ctx, "a"); !ok {
		t.Fatal("value expired before 12 months")
	}
	c.Advance(2 * 24 * time.Hour)
	v, ok, err := s.Query(ctx, "a")
	if ok || v != nil || err != nil {
		t.Fatalf("expired value still served: %v %v %v", v, ok, err)
	}
	r, err := s.Get(ctx, "a")
	if err != nil || !r.Expired {
		t.Fatalf("Get expired = %+v %v; want Expired", r, err)
	}
	list, _ := s.List(ctx)
	if len(list) != 1 || !list[0].Expired {
		t.Fatalf("List = %+v", list)
	}
	// Re-registering renews it.
	if err := s.Register(ctx, msg(t, map[string]any{"a": 2})); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := s.Query(ctx, "a"); !ok || fmt.Sprint(v) != "2" {
		t.Fatalf("renewed = %v %v", v, ok)
	}
}

func TestExplicitExpirationAndValidity(t *testing.T) {
	ctx := context.Background()
	s, c, _ := newSvc(t)
	if err := s.Register(ctx, msg(t, map[string]any{"a": 1, "b": 2}, `"expiration":"2026-04-01T00:00:00+02:00"`)); err != nil {
		t.Fatal(err)
	}
	r, _ := s.Get(ctx, "b")
	if !r.Expiration.Equal(time.Date(2026, 3, 31, 22, 0, 0, 0, time.UTC)) {
		t.Fatalf("expiration = %v", r.Expiration)
	}
	c.Advance(10 * time.Hour)
	if _, ok, _ := s.Query(ctx, "a"); ok {
		t.Fatal("explicit expiration not enforced")
	}
	err := s.Register(ctx, msg(t, map[string]any{"a": 1}, `"expiration":"2020-01-01T00:00:00Z"`))
	if !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), "not in the future") {
		t.Fatalf("past expiration err = %v", err)
	}
	err = s.Register(ctx, msg(t, map[string]any{"a": 1}, `"expiration":"tomorrow"`))
	if !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), "RFC 3339") {
		t.Fatalf("bad expiration err = %v", err)
	}

	s2 := New(store.NewMemory(), WithClock(c.Now), WithValidity(time.Hour))
	if err := s2.Register(ctx, msg(t, map[string]any{"x": true})); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Hour)
	if _, ok, _ := s2.Query(ctx, "x"); ok {
		t.Fatal("WithValidity not applied")
	}
}

func TestBadMessages(t *testing.T) {
	ctx := context.Background()
	s, _, st := newSvc(t)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cases := []struct{ name, msg, want string }{
		{"bad version", `{"version":"0.2.0","type":"sample","payload":"` + b64(`{"a":1}`) + `"}`, `version "0.2.0"`},
		{"missing version", `{"type":"sample","payload":"` + b64(`{"a":1}`) + `"}`, `version ""`},
		{"unknown type", `{"version":"0.1.0","type":"magic","payload":"` + b64(`{"a":1}`) + `"}`, `unknown type "magic"`},
		{"unsupported trustee type", `{"version":"0.1.0","type":"swid","payload":""}`, `type "swid"`},
		{"bad base64", `{"version":"0.1.0","type":"sample","payload":"!!!not base64"}`, "base64"},
		{"bad JSON payload", `{"version":"0.1.0","type":"sample","payload":"` + b64(`{"a":`) + `"}`, "JSON object"},
		{"payload not object", `{"version":"0.1.0","type":"sample","payload":"` + b64(`["a"]`) + `"}`, "JSON object"},
		{"empty payload", `{"version":"0.1.0","type":"sample","payload":"` + b64(`{}`) + `"}`, "no reference values"},
		{"bad name", `{"version":"0.1.0","type":"sample","payload":"` + b64(`{"../x":1,"ok":2}`) + `"}`, "name"},
		{"bad message JSON", `{"version":`, "not a JSON object"},
		{"trailing", `{"version":"0.1.0","type":"sample","payload":"` + b64(`{"a":1}`) + `"} {}`, "trailing"},
	}
	for _, c := range cases {
		err := s.Register(ctx, []byte(c.msg))
		if !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want ErrInvalidMessage mentioning %q", c.name, err, c.want)
		}
	}
	if keys, _ := st.List(ctx, store.NSReferenceValue, ""); len(keys) != 0 {
		t.Errorf("invalid messages stored values: %v", keys)
	}
	// Unpadded base64 is tolerated.
	raw := base64.RawStdEncoding.EncodeToString([]byte(`{"a":1}`))
	if err := s.Register(ctx, []byte(`{"version":"0.1.0","type":"sample","payload":"`+raw+`"}`)); err != nil {
		t.Errorf("unpadded payload: %v", err)
	}
}

func TestOverwrite(t *testing.T) {
	ctx := context.Background()
	s, c, _ := newSvc(t)
	if err := s.Register(ctx, msg(t, map[string]any{"svn": []string{"1"}, "keep": "k"})); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Hour)
	if err := s.Register(ctx, msg(t, map[string]any{"svn": []string{"2", "3"}})); err != nil {
		t.Fatal(err)
	}
	v, _, _ := s.Query(ctx, "svn")
	if got, _ := json.Marshal(v); string(got) != `["2","3"]` {
		t.Errorf("overwritten svn = %s", got)
	}
	r, _ := s.Get(ctx, "svn")
	if want := c.Now().AddDate(0, 12, 0).Truncate(time.Second); !r.Expiration.Equal(want) {
		t.Errorf("overwrite expiration = %v, want %v", r.Expiration, want)
	}
	if v, ok, _ := s.Query(ctx, "keep"); !ok || v != "k" {
		t.Errorf("other value lost: %v %v", v, ok)
	}
	if err := s.Set(ctx, "svn", []int{4}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	v, _, _ = s.Query(ctx, "svn")
	if got, _ := json.Marshal(v); string(got) != `[4]` {
		t.Errorf("Set svn = %s", got)
	}
	if err := s.Delete(ctx, "svn"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "svn"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete err = %v", err)
	}
}

func TestPersistsInBolt(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kbs.db")
	b, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := New(b).Register(ctx, msg(t, map[string]any{"launch_digest": []string{"abcde"}})); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b, err = store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	v, ok, err := New(b).Query(ctx, "launch_digest")
	if err != nil || !ok || fmt.Sprint(v) != "[abcde]" {
		t.Fatalf("after reopen = %v %v %v", v, ok, err)
	}
}

func TestCorruptRecord(t *testing.T) {
	ctx := context.Background()
	s, _, st := newSvc(t)
	if _, err := st.Put(ctx, store.NSReferenceValue, "bad", []byte("{"), true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Query(ctx, "bad"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt record err = %v", err)
	}
}

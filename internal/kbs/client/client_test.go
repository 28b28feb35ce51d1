package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The session cookie is kept from answers, sent with requests, and
// dropped when it expires or the KBS deletes it.
func TestSessionCookie(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(sessionCookie)
		if err != nil {
			got = append(got, "")
		} else {
			got = append(got, c.Value)
		}
		switch r.URL.Path {
		case "/set":
			http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: r.URL.Query().Get("v"), MaxAge: 60})
			http.SetCookie(w, &http.Cookie{Name: "other", Value: "x"})
		case "/expires":
			http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "e", Expires: time.Unix(2000, 0)})
		case "/delete":
			http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", MaxAge: -1})
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	var s session
	now := time.Unix(1000, 0)
	step := func(path string) {
		t.Helper()
		if _, err := do(context.Background(), srv.Client(), &s, now, http.MethodGet, srv.URL+path, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	step("/")         // none yet
	step("/set?v=s1") // none sent, s1 kept
	step("/")         // s1
	step("/set?v=s2") // s1 sent, s2 kept
	now = now.Add(59 * time.Second)
	step("/") // s2, still valid
	now = now.Add(2 * time.Second)
	step("/")        // s2 expired: none
	step("/expires") // none; e kept until 2000
	step("/")        // e
	step("/delete")  // e sent, then deleted
	step("/")        // none
	want := []string{"", "", "s1", "s1", "s2", "", "", "e", "e", ""}
	if len(got) != len(want) {
		t.Fatalf("requests %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("cookies sent %q, want %q", got, want)
		}
	}
	// Without a session (admin calls) nothing is sent or kept.
	if _, err := do(context.Background(), srv.Client(), nil, now, http.MethodGet, srv.URL+"/set?v=z", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if s.value != "" {
		t.Errorf("session %q after a call without one", s.value)
	}
}

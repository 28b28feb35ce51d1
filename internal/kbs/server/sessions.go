package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
)

// SessionCookie is the RCAR session cookie name guests expect.
const SessionCookie = "kbs-session-id"

type sessionState int

const (
	stateAuthed sessionState = iota
	stateAttesting
	stateAttested
)

// session is one RCAR handshake: created by /auth, attested by /attest.
type session struct {
	id      string
	tee     string
	nonce   string
	state   sessionState
	grant   grant // set when attested
	expires time.Time
	seq     uint64 // creation order
}

// grant is what an attested session holds for resource requests made with
// its cookie: the token the server issued and its claims, kept on the
// server side only (so, unlike a Bearer token, it needs no signature
// check; its expiry is still checked), and the guest's TEE key.
type grant struct {
	token  string
	claims json.RawMessage
	expiry int64 // the token's exp (Unix seconds)
	pub    protocol.TeePubKey
}

var (
	errNoSession      = errors.New("no such session (expired or never created): call /auth again")
	errNonceUsed      = errors.New("the session's nonce was already used: call /auth again")
	errSessionExpired = errors.New("session expired: call /auth again")
	errNotAttested    = errors.New("the session has not attested: call /attest first")
)

// sessions is a bounded in-memory session table. Sessions are short-lived
// by design; a restart only costs guests a new handshake.
type sessions struct {
	mu      sync.Mutex
	byID    map[string]*session
	max     int
	seq     uint64
	timeout time.Duration
	now     func() time.Time
}

func newSessions(max int, timeout time.Duration, now func() time.Time) *sessions {
	return &sessions{byID: map[string]*session{}, max: max, timeout: timeout, now: now}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// create opens a session in the Authed state.
func (s *sessions) create(tee, nonce string) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.max {
		s.sweepLocked()
		if len(s.byID) >= s.max {
			// Still full of live sessions: drop the oldest (closest to
			// expiry) rather than refuse every new guest until some expire.
			s.evictOldestLocked()
		}
	}
	s.seq++
	ss := &session{id: randomHex(16), tee: tee, nonce: nonce, state: stateAuthed, expires: s.now().Add(s.timeout), seq: s.seq}
	s.byID[ss.id] = ss
	return ss, nil
}

// beginAttest claims the session's nonce for one /attest: the nonce is
// single use, a second /attest with it is refused (unless the session is
// already attested, in which case its token is returned, as Trustee does).
// When the session exists but is refused (expired, nonce taken), the
// returned session carries only its tee, for the audit log.
func (s *sessions) beginAttest(id string) (sess session, alreadyAttested bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.byID[id]
	if !ok {
		return session{}, false, errNoSession
	}
	if s.now().After(ss.expires) {
		delete(s.byID, id)
		return session{tee: ss.tee}, false, errSessionExpired
	}
	switch ss.state {
	case stateAttested:
		return *ss, true, nil
	case stateAttesting:
		return session{tee: ss.tee}, false, errNonceUsed
	}
	ss.state = stateAttesting
	return *ss, false, nil
}

// finishAttest records the outcome: on failure (g == nil) the session is
// dropped (the nonce stays burned).
func (s *sessions) finishAttest(id string, g *grant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, found := s.byID[id]
	if !found {
		return
	}
	if g == nil {
		delete(s.byID, id)
		return
	}
	ss.state = stateAttested
	ss.grant = *g
}

// grant returns the attested session's grant.
func (s *sessions) grant(id string) (grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.byID[id]
	if !ok {
		return grant{}, errNoSession
	}
	if s.now().After(ss.expires) {
		delete(s.byID, id)
		return grant{}, errSessionExpired
	}
	if ss.state != stateAttested {
		return grant{}, errNotAttested
	}
	return ss.grant, nil
}

func (s *sessions) sweepLocked() {
	now := s.now()
	for id, ss := range s.byID {
		if now.After(ss.expires) {
			delete(s.byID, id)
		}
	}
}

// sweep drops expired sessions.
func (s *sessions) sweep() {
	s.mu.Lock()
	s.sweepLocked()
	s.mu.Unlock()
}

func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

func (s *sessions) evictOldestLocked() {
	var oldest *session
	for _, ss := range s.byID {
		if oldest == nil || ss.seq < oldest.seq {
			oldest = ss
		}
	}
	if oldest != nil {
		delete(s.byID, oldest.id)
	}
}

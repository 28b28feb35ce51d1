package server

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coffer-project/coffer/internal/attestation"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/policy"
	"github.com/coffer-project/coffer/internal/store"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AttestationService is the in-process attestation service as the server
// uses it.
type AttestationService interface {
	// Supports reports whether evidence of this TEE can be verified.
	Supports(tee string) bool
	// Attest verifies the evidence bound to nonce and returns a signed
	// attestation token with the appraisal. Verification failures are
	// *attestation.CheckError or policy errors whose text says what failed.
	Attest(ctx context.Context, tee, nonce string, att *protocol.Attestation) (*attestation.Result, error)
	// VerifyToken checks a token's signature and expiry and returns its
	// claims JSON.
	VerifyToken(token string) (json.RawMessage, error)
	// CheckTokenExpiry applies VerifyToken's expiry rule to the exp claim
	// of a token the server issued and kept (attestation.Result.Expiry).
	CheckTokenExpiry(exp int64) error
	// SetPolicy validates and stores an appraisal policy.
	SetPolicy(ctx context.Context, id string, rego []byte) error
}

// ResourcePolicy decides resource releases.
type ResourcePolicy interface {
	// Allow evaluates the policy; a denial comes with the reason (which
	// rule or check failed).
	// claims is the token's claims JSON (the policy's input).
	Allow(ctx context.Context, claims json.RawMessage, data map[string]any) (bool, string, error)
}

// ReferenceValues is the RVPS as the admin API uses it.
type ReferenceValues interface {
	Register(ctx context.Context, msg []byte) error
	// Lookup returns the value of a reference value, or found=false (also
	// when it expired).
	Lookup(ctx context.Context, name string) (value any, found bool, err error)
}

// Deps are the server's collaborators.
type Deps struct {
	Store       store.Store
	Attestation AttestationService
	RVPS        ReferenceValues
	// CompileResourcePolicy validates Rego and returns the policy.
	CompileResourcePolicy func(rego string) (ResourcePolicy, error)
	Log                   *slog.Logger
	Now                   func() time.Time
}

// Server is the coffer-kbs HTTP handler.
type Server struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	now      func() time.Time
	sessions *sessions
	admin    *adminAuth
	metrics  *metrics

	// Audit events are written by background writers, off the request
	// path; a full queue back-pressures requests rather than dropping.
	// The queue holds at most auditQueueLen events of bounded size (see
	// audit), so a flood of refused requests cannot grow memory.
	audits    *auditQueue
	auditDone sync.WaitGroup
	closeOnce sync.Once

	// failures counts failed attestations per remote host and minute,
	// failuresTotal over all hosts (see failureRecordsPerMinute).
	failures, failuresTotal windowCount
	// refusedLog counts the refused requests of each second, to rate-limit
	// their server log lines (anyone can send those; the audit store and
	// a metric count them all).
	refusedLog windowCount

	mu     sync.RWMutex
	policy ResourcePolicy
	// policyWrite serializes resource policy updates so the stored policy
	// and the one in force never differ.
	policyWrite sync.Mutex
}

// New builds the server. The resource policy must already be in the store
// (policy.WriteDefaults writes the default without overwriting).
func New(ctx context.Context, cfg Config, deps Deps) (*Server, error) {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Log, now: deps.Now}
	s.sessions = newSessions(cfg.Sessions.Max, cfg.Sessions.Timeout.Duration, deps.Now)
	admin, err := newAdminAuth(cfg.Admin, deps.Now)
	if err != nil {
		return nil, err
	}
	s.admin = admin
	s.metrics = newMetrics(func() float64 { return float64(s.sessions.count()) })
	rego, err := deps.Store.Get(ctx, store.NSResourcePolicy, policy.ResourcePolicyKey)
	if err != nil {
		return nil, fmt.Errorf("load the resource policy: %w", err)
	}
	p, err := deps.CompileResourcePolicy(string(rego))
	if err != nil {
		return nil, fmt.Errorf("the stored resource policy does not compile: %w", err)
	}
	s.policy = p
	s.audits = newAuditQueue(auditQueueLen, auditBatchMax)
	s.auditDone.Add(1)
	go s.auditWriter()
	return s, nil
}

// The audit writer commits events in batches: after the first event of a
// batch it waits up to auditLinger for more (or until auditBatchMax), then
// writes them all in one store transaction. Under load that is one fsync
// per ~10 ms instead of one per few events (the commits were the largest
// non-crypto cost of a handshake); an idle server writes an event within
// auditLinger. Audit writes never delayed replies: a crash loses at most
// the events of the last auditLinger, plus what is queued.
const (
	auditLinger   = 10 * time.Millisecond
	auditBatchMax = 1024
	auditQueueLen = 4096
)

// Bounds on the request-controlled text of one audit event (a resource
// path, an error detail quoting the request): with auditQueueLen events
// queued at most, the queue stays within a few tens of MiB whatever is
// sent.
const (
	auditMaxPath   = 512
	auditMaxDetail = 4096
)

func (s *Server) auditWriter() {
	defer s.auditDone.Done()
	batch := make([]store.AuditItem, 0, auditBatchMax)
	events := make([]auditEvent, 0, auditBatchMax)
	// Keys sort by time: a clock that stands still or steps back must not
	// reorder the log, so each event's key time is after the previous one.
	var last time.Time
	refusedSincePrune := 0
	add := func(e auditEvent) {
		at := e.Time
		if !at.After(last) {
			at = last.Add(time.Nanosecond)
		}
		last = at
		batch = append(batch, store.AuditItem{At: at, Event: e, Refused: e.refused})
		if e.refused {
			refusedSincePrune++
		}
	}
	// Refusals can arrive as fast as anyone sends requests: their
	// namespace is pruned here, as soon as it has grown by a tenth of its
	// bound (the periodic sweep prunes the main namespace only).
	pruneRefused := func() {
		if refusedSincePrune < max(1, s.cfg.AuditMaxRefused/10) {
			return
		}
		refusedSincePrune = 0
		if _, err := store.PruneRefusedAudit(context.Background(), s.deps.Store, s.cfg.AuditMaxRefused); err != nil {
			s.log.Warn("prune the audit log of refused requests", "err", err)
		}
	}
	flush := func() {
		if len(batch) == 0 {
			return
		}
		// AppendAuditBatch tries each namespace's write twice.
		if err := store.AppendAuditBatch(context.Background(), s.deps.Store, batch); err != nil {
			s.log.Error("write audit log: events lost", "events", len(batch), "err", err)
		}
		clear(batch)
		batch = batch[:0]
		pruneRefused()
	}
	linger := time.NewTimer(auditLinger)
	linger.Stop()
	for {
		<-s.audits.wake
		// Linger for the batch to fill (the queue wakes the writer for
		// its first event, then for a full batch, and on close), unless
		// closing.
		if !s.audits.isClosed() {
			linger.Reset(auditLinger)
			select {
			case <-linger.C:
			case <-s.audits.wake:
				linger.Stop()
			}
		}
		var closed bool
		for {
			events, closed = s.audits.take(events[:0], auditBatchMax)
			if len(events) == 0 {
				break
			}
			for _, e := range events {
				add(e)
			}
			clear(events)
			flush()
		}
		if closed {
			return
		}
	}
}

// Close flushes the audit log; the server must not serve afterwards.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.audits.close()
		s.auditDone.Wait()
	})
}

// RunSweeper drops expired sessions every interval until ctx ends.
func (s *Server) RunSweeper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sessions.sweep()
			if n, err := store.PruneAudit(ctx, s.deps.Store, s.cfg.AuditMaxEntries); err != nil {
				s.log.Warn("prune the audit log", "err", err)
			} else if n > 0 {
				s.log.Debug("pruned the audit log", "removed", n)
			}
		}
	}
}

// statusWriter records the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// ServeHTTP routes requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	endpoint := s.route(sw, r)
	s.metrics.requests.WithLabelValues(endpoint, fmt.Sprint(sw.code)).Inc()
	s.metrics.latency.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
}

// route dispatches and returns the endpoint label for metrics.
func (s *Server) route(w http.ResponseWriter, r *http.Request) string {
	switch r.URL.Path {
	case "/healthz":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
		return "healthz"
	case "/metrics":
		promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return "metrics"
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/kbs/v0/")
	if !ok {
		writeError(w, errorf(http.StatusNotFound, errInvalidPath, "unknown path %s: the KBS API is under /kbs/v0/", r.URL.Path))
		return "other"
	}
	plugin, sub, _ := strings.Cut(rest, "/")
	var err error
	endpoint := plugin
	switch {
	case plugin == "auth" && sub == "" && r.Method == http.MethodPost:
		err = s.handleAuth(w, r)
	case plugin == "attest" && sub == "" && r.Method == http.MethodPost:
		err = s.handleAttest(w, r)
	case plugin == "resource" && r.Method == http.MethodGet && sub != "":
		err = s.handleGetResource(w, r, sub)
	case plugin == "resource" && r.Method == http.MethodGet:
		endpoint = "resource-list"
		err = s.admined(w, r, s.handleListResources)
	case plugin == "resource" && (r.Method == http.MethodPost || r.Method == http.MethodPut):
		endpoint = "resource-set"
		err = s.admined(w, r, func(w http.ResponseWriter, r *http.Request) error { return s.handleSetResource(w, r, sub) })
	case plugin == "resource" && r.Method == http.MethodDelete:
		endpoint = "resource-delete"
		err = s.admined(w, r, func(w http.ResponseWriter, r *http.Request) error { return s.handleDeleteResource(w, r, sub) })
	case plugin == "attestation-policy" && sub == "" && r.Method == http.MethodPost:
		err = s.admined(w, r, s.handleSetAttestationPolicy)
	case plugin == "resource-policy" && sub == "" && r.Method == http.MethodPost:
		err = s.admined(w, r, s.handleSetResourcePolicy)
	case plugin == "resource-policy" && sub == "" && r.Method == http.MethodGet:
		err = s.admined(w, r, s.handleGetResourcePolicy)
	case plugin == "reference-value" && sub == "" && r.Method == http.MethodPost:
		err = s.admined(w, r, s.handleSetReferenceValue)
	case plugin == "reference-value" && sub != "" && r.Method == http.MethodGet:
		err = s.admined(w, r, func(w http.ResponseWriter, r *http.Request) error { return s.handleGetReferenceValue(w, r, sub) })
	case plugin == "auth" || plugin == "attest" || plugin == "resource" || plugin == "attestation-policy" ||
		plugin == "resource-policy" || plugin == "reference-value":
		err = errorf(http.StatusNotFound, errInvalidPath, "%s %s is not an endpoint", r.Method, r.URL.Path)
	default:
		endpoint = "other"
		err = errorf(http.StatusNotFound, errPluginNotFound, "no plugin %q (this KBS serves the resource plugin)", plugin)
	}
	if err != nil {
		writeError(w, err)
	}
	return endpoint
}

// admined runs h after the admin check, and audits the call.
func (s *Server) admined(w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request) error) error {
	if err := s.admin.authorize(r); err != nil {
		s.audit(r.Context(), auditEvent{Kind: "admin", Method: r.Method, Path: r.URL.Path, Outcome: "denied", Detail: err.Error(), Remote: r.RemoteAddr})
		return err
	}
	err := h(w, r)
	outcome := "ok"
	detail := ""
	if err != nil {
		outcome, detail = "failed", err.Error()
	}
	s.audit(r.Context(), auditEvent{Kind: "admin", Method: r.Method, Path: r.URL.Path, Outcome: outcome, Detail: detail, Remote: r.RemoteAddr})
	return err
}

// auditEvent is one audit log record. It never holds secrets or tokens.
type auditEvent struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // auth | attest | release | admin
	Method  string    `json:"method,omitempty"`
	Path    string    `json:"path,omitempty"`
	Tee     string    `json:"tee,omitempty"`
	Outcome string    `json:"outcome"`
	Detail  string    `json:"detail,omitempty"`
	Remote  string    `json:"remote,omitempty"`

	// refused marks a request refused before any session or token was
	// established: filed under store.NSAuditRefused, pruned on its own,
	// and logged at a bounded rate.
	refused bool
}

// refusedLogPerSecond bounds the server log lines of refused requests.
const refusedLogPerSecond = 10

// failureRecordsPerMinute is how many failed attestations of one remote
// host a minute go to the main audit log; the rest are filed with the
// refusals (store.NSAuditRefused). Anyone can get a session from /auth and
// send bad evidence, two requests per record: without this a flood from
// one host could push the records of releases out of the main log.
// maxFailureHosts bounds the per-host table (it starts afresh when full).
// failureRecordsPerMinuteTotal bounds the same over all hosts, so that an
// attacker with many addresses cannot do it either (its own counter: a
// flood of new hosts that resets the per-host table does not reset it).
const (
	failureRecordsPerMinute      = 30
	failureRecordsPerMinuteTotal = 600
	maxFailureHosts              = 4096
)

// failureOverLimit counts a failed attestation from remote (host:port) and
// reports whether its host is over failureRecordsPerMinute this minute, or
// all hosts together over failureRecordsPerMinuteTotal.
func (s *Server) failureOverLimit(now time.Time, remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	n, _ := s.failures.add(now, time.Minute, host, maxFailureHosts)
	total, _ := s.failuresTotal.add(now, time.Minute, "", 1)
	return n > failureRecordsPerMinute || total > failureRecordsPerMinuteTotal
}

// windowCount counts events by key within fixed windows of time (a
// second, a minute); the counts start afresh with each window, or when a
// new key would make more than maxKeys. Safe for concurrent use.
type windowCount struct {
	mu    sync.Mutex
	start time.Time
	n     map[string]int
}

// add counts one event of key at now and returns key's count in now's
// window; when now opens a new window it also returns the counts of the
// window before (nil otherwise).
func (w *windowCount) add(now time.Time, width time.Duration, key string, maxKeys int) (n int, prev map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if start := now.Truncate(width); !start.Equal(w.start) || w.n == nil {
		prev, w.start, w.n = w.n, start, map[string]int{}
	} else if _, ok := w.n[key]; !ok && len(w.n) >= maxKeys {
		w.n = map[string]int{}
	}
	w.n[key]++
	return w.n[key], prev
}

func (s *Server) audit(ctx context.Context, e auditEvent) {
	e.Time = s.now().UTC()
	e.Path = clip(e.Path, auditMaxPath)
	e.Detail = clip(e.Detail, auditMaxDetail)
	// A handler still running after Close (shutdown timed out): push
	// refuses, and the event goes to the server log below only, as a
	// warning whatever its outcome.
	stored := s.audits.push(e)
	// Successes go to the server log at debug level only: the store keeps
	// every event, and at thousands of handshakes a second two info lines
	// each cost ~5 % of the server's CPU. Denials stay warnings.
	lvl := slog.LevelDebug
	if !stored || e.Outcome != "ok" && e.Outcome != "released" && e.Outcome != "success" {
		lvl = slog.LevelWarn
	}
	if !stored {
		e.Detail = strings.TrimSpace(e.Detail + " (not in the audit log: the server was closing)")
	}
	if e.refused && !s.logRefusal(ctx, e.Time) {
		return
	}
	if !s.log.Enabled(ctx, lvl) {
		return // the arguments below would be built (and allocated) for nothing
	}
	s.log.Log(ctx, lvl, "audit", "kind", e.Kind, "method", e.Method, "path", e.Path, "tee", e.Tee, "outcome", e.Outcome, "detail", e.Detail, "remote", e.Remote)
}

// logRefusal reports whether the refusal at now may be logged: at most
// refusedLogPerSecond a second; the first one of a new second also logs
// how many were left out in the one before.
func (s *Server) logRefusal(ctx context.Context, now time.Time) bool {
	n, prev := s.refusedLog.add(now, time.Second, "", 1)
	if left := prev[""] - refusedLogPerSecond; left > 0 {
		s.log.Log(ctx, slog.LevelWarn, "refused requests not logged one by one", "count", left,
			"see", "kbs_refused_requests_total and the audit log")
	}
	return n <= refusedLogPerSecond
}

// clip cuts s to at most n bytes (at a UTF-8 boundary) and says how much
// was cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("... (%d more bytes)", len(s)-cut)
}

// errDetail is the text of a refusal for the audit log: the detail of a
// *kbsError (its variant is the reply's type), else the error's text.
func errDetail(err error) string {
	var ke *kbsError
	if errors.As(err, &ke) {
		return ke.detail
	}
	return err.Error()
}

// refuse counts and audits a request refused before any session or token
// was established (kind auth, attest or release; tee and path when the
// request named them). Anyone can send such requests: they are counted
// in kbs_refused_requests_total and filed apart (store.NSAuditRefused),
// so that a flood of them cannot push out the records of attestations,
// releases and admin calls, nor inflate the attestation metrics.
func (s *Server) refuse(r *http.Request, kind, tee, path string, err error) {
	endpoint := kind // the metric's label: the endpoint the request went to
	if kind == "release" {
		endpoint = "resource"
	}
	s.metrics.refused.WithLabelValues(endpoint).Inc()
	s.audit(r.Context(), auditEvent{Kind: kind, Tee: tee, Path: path, Outcome: "denied", Detail: errDetail(err), Remote: r.RemoteAddr, refused: true})
}

// readBody reads a bounded request body.
func (s *Server) readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(http.StatusRequestEntityTooLarge, errSerde, "request body over %d bytes", s.cfg.MaxBodyBytes)
		}
		return nil, errorf(http.StatusBadRequest, errSerde, "read request body: %v", err)
	}
	return b, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) setCookie(w http.ResponseWriter, id string) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Expires: s.now().Add(s.cfg.Sessions.Timeout.Duration)})
}

func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) error {
	tee, err := s.auth(w, r)
	if err != nil {
		s.refuse(r, "auth", tee, "", err)
	}
	return err
}

// auth answers /auth; on a refusal it returns the TEE the request named
// if the body decoded (a name the protocol knows), else "".
func (s *Server) auth(w http.ResponseWriter, r *http.Request) (tee string, err error) {
	body, err := s.readBody(r)
	if err != nil {
		return "", err
	}
	var req protocol.Request
	// UnmarshalJSON validates the whole body in the same pass.
	if err := req.UnmarshalJSON(body); err != nil {
		return "", errorf(http.StatusUnauthorized, errAttestation, "bad auth request: %v", err)
	}
	if err := protocol.CheckVersion(req.Version); err != nil {
		return req.Tee, errorf(http.StatusUnauthorized, errAttestation, "%v", err)
	}
	if !s.deps.Attestation.Supports(req.Tee) {
		return req.Tee, errorf(http.StatusUnauthorized, errAttestation, "TEE %q is not supported by this KBS (supported: sample, snp)", req.Tee)
	}
	nonce, err := protocol.NewNonce()
	if err != nil {
		return req.Tee, err
	}
	sess, err := s.sessions.create(req.Tee, nonce)
	if err != nil {
		return req.Tee, errorf(http.StatusServiceUnavailable, errAttestation, "%v", err)
	}
	s.setCookie(w, sess.id)
	writeJSON(w, protocol.Challenge{Nonce: nonce, ExtraParams: json.RawMessage(`""`)})
	return req.Tee, nil
}

func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) error {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		err := errorf(http.StatusUnauthorized, errAttestation, "no %s cookie: call /auth first", SessionCookie)
		s.refuse(r, "attest", "", "", err)
		return err
	}
	sess, attested, err := s.sessions.beginAttest(c.Value)
	if err != nil {
		// sess.tee is set when the session existed (expired, or its
		// nonce already taken by another /attest).
		s.refuse(r, "attest", sess.tee, "", err)
		return errorf(http.StatusUnauthorized, errAttestation, "%v", err)
	}
	if attested {
		s.setCookie(w, sess.id)
		writeJSON(w, protocol.AttestResponse{Token: sess.grant.token})
		return nil
	}
	ok := false
	defer func() {
		if !ok {
			s.sessions.finishAttest(sess.id, nil)
		}
	}()
	fail := func(err error) error {
		s.metrics.attestations.WithLabelValues(sess.tee, "failure").Inc()
		s.audit(r.Context(), auditEvent{Kind: "attest", Tee: sess.tee, Outcome: "denied", Detail: errDetail(err), Remote: r.RemoteAddr,
			refused: s.failureOverLimit(s.now(), r.RemoteAddr)})
		return errorf(http.StatusUnauthorized, errAttestation, "attestation failed: %v", err)
	}
	body, err := s.readBody(r)
	if err != nil {
		_ = fail(err)
		return err
	}
	var att protocol.Attestation
	// UnmarshalJSON validates the whole body in the same pass (the SNP
	// evidence in it is ~18 KB).
	if err := att.UnmarshalJSON(body); err != nil {
		return fail(fmt.Errorf("bad attestation request: %w", err))
	}
	if subtle.ConstantTimeCompare([]byte(att.RuntimeData.Nonce), []byte(sess.nonce)) != 1 {
		return fail(errors.New("runtime-data nonce does not match the session's challenge"))
	}
	res, err := s.deps.Attestation.Attest(r.Context(), sess.tee, sess.nonce, &att)
	if err != nil {
		return fail(err)
	}
	ok = true
	s.sessions.finishAttest(sess.id, &grant{token: res.Token, claims: res.Claims, expiry: res.Expiry, pub: att.RuntimeData.TeePubKey})
	s.metrics.attestations.WithLabelValues(sess.tee, "success").Inc()
	detail := "appraisal " + res.Status
	if res.Simulated {
		detail += " (simulated TEE)"
	}
	if len(res.Reasons) > 0 {
		detail += ": " + strings.Join(res.Reasons, "; ")
	}
	s.audit(r.Context(), auditEvent{Kind: "attest", Tee: sess.tee, Outcome: "success", Detail: detail, Remote: r.RemoteAddr})
	s.setCookie(w, sess.id)
	writeJSON(w, protocol.AttestResponse{Token: res.Token})
	return nil
}

var pathSegment = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$`)

// parseResourcePath validates repo/type/tag (Trustee's ResourceDesc).
func parseResourcePath(p string) (string, error) {
	segs := strings.Split(p, "/")
	if len(segs) != 3 {
		return "", errorf(http.StatusNotFound, errInvalidPath, "resource path %q must be repository/type/tag", p)
	}
	for _, seg := range segs {
		if !pathSegment.MatchString(seg) {
			return "", errorf(http.StatusNotFound, errInvalidPath, "resource path segment %q: use letters, digits, '_', '-', '.' (not first)", seg)
		}
	}
	return p, nil
}

// requestGrant returns what authorizes a resource request: the grant of
// the attested session named by the cookie, else the claims of the
// verified Bearer token (pub is then filled in from the claims later).
func (s *Server) requestGrant(r *http.Request) (g grant, fromSession bool, err error) {
	var cookieErr error
	if c, err := r.Cookie(SessionCookie); err == nil {
		g, err := s.sessions.grant(c.Value)
		if err == nil {
			// The server issued this token and never let it out of its
			// memory under this session: its signature cannot have changed,
			// only its time can have run out; [sessions] verify_tokens
			// checks it all the same.
			if s.cfg.Sessions.VerifyTokens {
				if _, err := s.deps.Attestation.VerifyToken(g.token); err != nil {
					return g, true, errorf(http.StatusUnauthorized, errTokenVerifier, "attestation token rejected: %v", err)
				}
			} else if err := s.deps.Attestation.CheckTokenExpiry(g.expiry); err != nil {
				return g, true, errorf(http.StatusUnauthorized, errTokenVerifier, "attestation token rejected: %v", err)
			}
			return g, true, nil
		}
		cookieErr = err
	}
	tok, ok := bearerToken(r)
	if !ok {
		if cookieErr != nil {
			return g, false, errorf(http.StatusUnauthorized, errTokenNotFound, "no attestation token: the %s cookie is not usable (%v) and no Authorization: Bearer <token> was sent", SessionCookie, cookieErr)
		}
		return g, false, errorf(http.StatusUnauthorized, errTokenNotFound, "no attestation token: attest first (session cookie) or send Authorization: Bearer <token>")
	}
	claims, err := s.deps.Attestation.VerifyToken(tok)
	if err != nil {
		return g, false, errorf(http.StatusUnauthorized, errTokenVerifier, "attestation token rejected: %v", err)
	}
	return grant{token: tok, claims: claims}, false, nil
}

func (s *Server) handleGetResource(w http.ResponseWriter, r *http.Request, sub string) error {
	// Every refusal is audited. Those anyone can provoke (a bad path, no
	// usable token) are refusals before any token (see refuse); the rest
	// are release denials of an attested guest.
	path := sub
	deny := func(outcome string, err error) error {
		s.metrics.releases.WithLabelValues(outcome).Inc()
		s.audit(r.Context(), auditEvent{Kind: "release", Path: path, Outcome: outcome, Detail: err.Error(), Remote: r.RemoteAddr})
		return err
	}
	if _, err := parseResourcePath(sub); err != nil {
		s.refuse(r, "release", "", path, err)
		return err
	}
	g, fromSession, err := s.requestGrant(r)
	if err != nil {
		s.refuse(r, "release", "", path, err)
		return err
	}
	query := map[string]any{}
	for k, v := range r.URL.Query() {
		if len(v) > 0 {
			query[k] = v[0]
		}
	}
	data := map[string]any{"plugin": "resource", "resource-path": strings.Split(path, "/"), "query": query}
	s.mu.RLock()
	pol := s.policy
	s.mu.RUnlock()
	allowed, reason, err := pol.Allow(r.Context(), g.claims, data)
	if err != nil {
		return deny("denied", errorf(http.StatusUnauthorized, string(protocol.KindPolicyEngineError), "resource policy: %v", err))
	}
	if !allowed {
		return deny("denied", errorf(http.StatusUnauthorized, errPolicyDeny, "resource policy denied %s: %s", path, reason))
	}
	pub := g.pub
	if !fromSession {
		if pub, err = teePubKeyFromClaims(g.claims); err != nil {
			return deny("denied", errorf(http.StatusUnauthorized, errTokenVerifier, "%v", err))
		}
	}
	val, err := s.deps.Store.Get(r.Context(), store.NSResources, path)
	if errors.Is(err, store.ErrNotFound) {
		return deny("not_found", errorf(http.StatusNotFound, errPluginInternal, "resource %s not found", path))
	}
	if err != nil {
		return deny("error", err)
	}
	jwe, err := protocol.EncryptResponse(pub, val)
	if err != nil {
		return deny("error", errorf(http.StatusUnauthorized, errJwe, "encrypt resource: %v", err))
	}
	s.metrics.releases.WithLabelValues("released").Inc()
	s.audit(r.Context(), auditEvent{Kind: "release", Path: path, Outcome: "released", Remote: r.RemoteAddr})
	writeJSON(w, jwe)
	return nil
}

// teePubKeyFromClaims extracts the guest's key from the EAR claims JSON.
func teePubKeyFromClaims(claims json.RawMessage) (protocol.TeePubKey, error) {
	var c struct {
		Submods map[string]struct {
			Evidence *struct {
				RuntimeData *struct {
					Pub json.RawMessage `json:"tee-pubkey"`
				} `json:"runtime_data_claims"`
			} `json:"ear.veraison.annotated-evidence"`
		} `json:"submods"`
	}
	var pub protocol.TeePubKey
	if err := json.Unmarshal(claims, &c); err != nil {
		return pub, fmt.Errorf("the token's claims do not decode: %w", err)
	}
	cpu, ok := c.Submods["cpu0"]
	switch {
	case !ok:
		return pub, errors.New("the token has no tee-pubkey claim (missing cpu0)")
	case cpu.Evidence == nil:
		return pub, errors.New("the token has no tee-pubkey claim (missing ear.veraison.annotated-evidence)")
	case cpu.Evidence.RuntimeData == nil:
		return pub, errors.New("the token has no tee-pubkey claim (missing runtime_data_claims)")
	case cpu.Evidence.RuntimeData.Pub == nil:
		return pub, errors.New("the token has no tee-pubkey claim (missing tee-pubkey)")
	}
	if err := json.Unmarshal(cpu.Evidence.RuntimeData.Pub, &pub); err != nil {
		return pub, fmt.Errorf("the token's tee-pubkey is not a usable key: %w", err)
	}
	return pub, nil
}

func (s *Server) handleSetResource(w http.ResponseWriter, r *http.Request, sub string) error {
	path, err := parseResourcePath(sub)
	if err != nil {
		return err
	}
	body, err := s.readBody(r)
	if err != nil {
		return err
	}
	if _, err := s.deps.Store.Put(r.Context(), store.NSResources, path, body, true); err != nil {
		return errorf(http.StatusInternalServerError, errPluginInternal, "store resource: %v", err)
	}
	return nil
}

func (s *Server) handleDeleteResource(w http.ResponseWriter, r *http.Request, sub string) error {
	path, err := parseResourcePath(sub)
	if err != nil {
		return err
	}
	err = s.deps.Store.Delete(r.Context(), store.NSResources, path)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, errPluginInternal, "resource %s not found", path)
	}
	if err != nil {
		return errorf(http.StatusInternalServerError, errPluginInternal, "delete resource: %v", err)
	}
	return nil
}

func (s *Server) handleListResources(w http.ResponseWriter, r *http.Request) error {
	keys, err := s.deps.Store.List(r.Context(), store.NSResources, "")
	if err != nil {
		return errorf(http.StatusInternalServerError, errPluginInternal, "list resources: %v", err)
	}
	if keys == nil {
		keys = []string{}
	}
	writeJSON(w, keys)
	return nil
}

// decodeB64Policy decodes a policy sent base64url without padding (as
// kbs-client does); padded and standard alphabets are accepted too.
func decodeB64Policy(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("policy is not base64url")
}

func (s *Server) handleSetAttestationPolicy(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(r)
	if err != nil {
		return err
	}
	var req struct {
		Type     string `json:"type"`
		PolicyID string `json:"policy_id"`
		Policy   string `json:"policy"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return errorf(http.StatusBadRequest, errSerde, "bad attestation policy request: %v", err)
	}
	if req.Type != "" && req.Type != "rego" {
		return errorf(http.StatusBadRequest, errParsePolicy, "policy type %q: only rego is supported", req.Type)
	}
	if req.PolicyID == "" {
		req.PolicyID = "default_cpu"
	}
	if !pathSegment.MatchString(req.PolicyID) {
		return errorf(http.StatusBadRequest, errParsePolicy, "bad policy id %q", req.PolicyID)
	}
	rego, err := decodeB64Policy(req.Policy)
	if err != nil {
		return errorf(http.StatusBadRequest, errParsePolicy, "%v", err)
	}
	if err := s.deps.Attestation.SetPolicy(r.Context(), req.PolicyID, rego); err != nil {
		return errorf(http.StatusBadRequest, errParsePolicy, "%v", err)
	}
	return nil
}

func (s *Server) handleSetResourcePolicy(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(r)
	if err != nil {
		return err
	}
	var req struct {
		Policy string `json:"policy"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return errorf(http.StatusBadRequest, errSerde, "bad resource policy request: %v", err)
	}
	rego, err := decodeB64Policy(req.Policy)
	if err != nil {
		return errorf(http.StatusBadRequest, errParsePolicy, "%v", err)
	}
	p, err := s.deps.CompileResourcePolicy(string(rego))
	if err != nil {
		return errorf(http.StatusBadRequest, errParsePolicy, "%v", err)
	}
	s.policyWrite.Lock()
	defer s.policyWrite.Unlock()
	// Stored as the admin's: a restart does not replace it (see
	// policy.WriteDefaults).
	if err := policy.PutResourcePolicy(r.Context(), s.deps.Store, rego); err != nil {
		return errorf(http.StatusInternalServerError, errPluginInternal, "store resource policy: %v", err)
	}
	s.mu.Lock()
	s.policy = p
	s.mu.Unlock()
	return nil
}

func (s *Server) handleGetResourcePolicy(w http.ResponseWriter, r *http.Request) error {
	rego, err := s.deps.Store.Get(r.Context(), store.NSResourcePolicy, policy.ResourcePolicyKey)
	if err != nil {
		return errorf(http.StatusInternalServerError, errPluginInternal, "read resource policy: %v", err)
	}
	writeJSON(w, map[string]string{"policy": base64.RawURLEncoding.EncodeToString(rego)})
	return nil
}

func (s *Server) handleSetReferenceValue(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(r)
	if err != nil {
		return err
	}
	if err := s.deps.RVPS.Register(r.Context(), body); err != nil {
		return errorf(http.StatusBadRequest, errRvps, "%v", err)
	}
	return nil
}

func (s *Server) handleGetReferenceValue(w http.ResponseWriter, r *http.Request, id string) error {
	v, found, err := s.deps.RVPS.Lookup(r.Context(), id)
	if err != nil {
		return errorf(http.StatusBadRequest, errRvps, "%v", err)
	}
	if !found {
		return errorf(http.StatusNotFound, errRvps, "no reference value %q (or it expired)", id)
	}
	writeJSON(w, v)
	return nil
}

// bearerToken returns the credentials of an "Authorization: Bearer" header
// (the scheme is case-insensitive, RFC 9110).
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

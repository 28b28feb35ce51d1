package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/tee"
)

// maxResponse bounds what the client reads from the KBS.
const maxResponse = 16 << 20

// Options configure a Client.
type Options struct {
	// CertFile is a PEM root for an HTTPS KBS (e.g. its self-signed cert).
	CertFile string
	// KeyAlgorithm and KeyCurve pick the TEE key (default ECDH-ES+A256KW on
	// P-256, as guest-components).
	KeyAlgorithm, KeyCurve string
	// TeeKey, when set, is the TEE key pair to use instead of a fresh one
	// (*ecdsa.PrivateKey for ECDH-ES+A256KW, *rsa.PrivateKey for the RSA
	// algorithms; KeyCurve is then ignored): a guest keeps one key pair
	// per boot. protocol.NewTeeKey makes one.
	TeeKey crypto.Signer
	// InitData is sent with the attestation (format "toml").
	InitData *protocol.InitData
	// HTTPClient overrides the HTTP client (its cookie jar is not used:
	// the client keeps the KBS session cookie itself).
	HTTPClient *http.Client
	Log        *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Client performs RCAR against one KBS and fetches resources.
type Client struct {
	base     string
	http     *http.Client
	attester tee.Attester
	opts     Options
	log      *slog.Logger
	now      func() time.Time

	mu       sync.Mutex
	priv     crypto.PrivateKey // as DecryptResponse uses it fastest (protocol.DecryptionKey)
	pub      protocol.TeePubKey
	token    string
	tokenExp time.Time
	// session is the KBS's kbs-session-id cookie (one cookie, one host:
	// kept here rather than in a cookie jar, which cost more per request
	// than the rest of the client's HTTP handling).
	session session
}

// session is a KBS session cookie.
type session struct {
	value string
	exp   time.Time // zero: no expiry given
}

// sessionCookie is the KBS's session cookie name.
const sessionCookie = "kbs-session-id"

// HTTPClient returns an HTTP client trusting certFile (if given).
func HTTPClient(certFile string) (*http.Client, error) {
	c := &http.Client{Timeout: 60 * time.Second}
	if certFile == "" {
		return c, nil
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read KBS certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", certFile)
	}
	c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return c, nil
}

// New returns a client for the KBS at url (e.g. http://127.0.0.1:8080)
// producing evidence with attester.
func New(url string, attester tee.Attester, opts Options) (*Client, error) {
	hc := opts.HTTPClient
	if hc == nil {
		var err error
		if hc, err = HTTPClient(opts.CertFile); err != nil {
			return nil, err
		}
	}
	c2 := *hc
	c2.Jar = nil
	var err error
	if opts.KeyAlgorithm == "" {
		opts.KeyAlgorithm, opts.KeyCurve = "ECDH-ES+A256KW", "P-256"
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var priv crypto.PrivateKey
	var pub protocol.TeePubKey
	if opts.TeeKey != nil {
		if pub, err = protocol.NewTeePubKey(opts.TeeKey.Public(), opts.KeyAlgorithm); err != nil {
			return nil, fmt.Errorf("the given TEE key: %w", err)
		}
		priv = opts.TeeKey
	} else if priv, pub, err = protocol.NewTeeKey(opts.KeyAlgorithm, opts.KeyCurve); err != nil {
		return nil, fmt.Errorf("generate the TEE key: %w", err)
	}
	return &Client{base: strings.TrimRight(url, "/"), http: &c2, attester: attester, opts: opts,
		log: opts.Log, now: opts.Now, priv: protocol.DecryptionKey(priv), pub: pub}, nil
}

// KBSError is an error answer from the KBS.
type KBSError struct {
	Status int
	Info   protocol.ErrorInformation
}

func (e *KBSError) Error() string {
	return fmt.Sprintf("KBS answered %d: %s", e.Status, e.Info.Error())
}

// IsStatus reports whether err is a KBS answer with this HTTP status.
func IsStatus(err error, status int) bool {
	var ke *KBSError
	return errors.As(err, &ke) && ke.Status == status
}

// do sends a request (with c's session cookie, kept from the answers) and
// decodes a JSON answer into out (if non-nil). c.mu is held.
func (c *Client) do(ctx context.Context, method, url string, body []byte, hdr http.Header, out any) ([]byte, error) {
	return do(ctx, c.http, &c.session, c.now(), method, url, body, hdr, out)
}

// do sends a request and decodes a JSON answer into out (if non-nil).
// With sess, the request carries the session cookie and the answer's
// session cookie replaces it.
func do(ctx context.Context, hc *http.Client, sess *session, now time.Time, method, url string, body []byte, hdr http.Header, out any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if sess != nil && sess.value != "" && (sess.exp.IsZero() || now.Before(sess.exp)) {
		req.Header.Set("Cookie", sessionCookie+"="+sess.value)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	if sess != nil && len(resp.Header["Set-Cookie"]) > 0 {
		for _, ck := range resp.Cookies() {
			if ck.Name != sessionCookie {
				continue
			}
			switch {
			case ck.MaxAge < 0 || ck.Value == "":
				*sess = session{}
			case ck.MaxAge > 0:
				*sess = session{value: ck.Value, exp: now.Add(time.Duration(ck.MaxAge) * time.Second)}
			default:
				*sess = session{value: ck.Value, exp: ck.Expires}
			}
		}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, url, err)
	}
	if len(b) > maxResponse {
		return nil, fmt.Errorf("%s %s: answer over %d bytes", method, url, maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		ke := &KBSError{Status: resp.StatusCode}
		if info, err := protocol.ParseErrorInformation(b); err == nil {
			ke.Info = *info
		} else {
			ke.Info = protocol.ErrorInformation{Type: "unknown", Detail: strings.TrimSpace(string(b))}
		}
		return nil, ke
	}
	if u, ok := out.(json.Unmarshaler); ok {
		// The protocol types parse and validate in one pass; encoding/json
		// would scan the answer twice more before calling them.
		if err := u.UnmarshalJSON(b); err != nil {
			return nil, fmt.Errorf("%s %s: bad answer: %w", method, url, err)
		}
	} else if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("%s %s: bad answer: %w", method, url, err)
		}
	}
	return b, nil
}

// Attest runs the RCAR handshake and returns the attestation token.
func (c *Client) Attest(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attestLocked(ctx)
}

func (c *Client) attestLocked(ctx context.Context) (string, error) {
	reqBody, err := json.Marshal(protocol.NewRequest(c.attester.Tee()))
	if err != nil {
		return "", err
	}
	var ch protocol.Challenge
	if _, err := c.do(ctx, http.MethodPost, c.base+"/kbs/v0/auth", reqBody, nil, &ch); err != nil {
		return "", fmt.Errorf("KBS auth: %w", err)
	}
	hashAlg, err := ch.HashAlgorithm()
	if err != nil {
		return "", err
	}
	additional := ""
	digest, err := protocol.RuntimeDataDigest(hashAlg, ch.Nonce, c.pub, &additional)
	if err != nil {
		return "", err
	}
	evidence, err := c.attester.Evidence(ctx, digest)
	if err != nil {
		return "", fmt.Errorf("get %s evidence: %w", c.attester.Tee(), err)
	}
	att := protocol.Attestation{
		InitData:    c.opts.InitData,
		RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: c.pub},
		TeeEvidence: protocol.TeeEvidence{PrimaryEvidence: evidence, AdditionalEvidence: additional},
	}
	body, err := json.Marshal(att)
	if err != nil {
		return "", err
	}
	var ar protocol.AttestResponse
	if _, err := c.do(ctx, http.MethodPost, c.base+"/kbs/v0/attest", body, nil, &ar); err != nil {
		return "", fmt.Errorf("KBS attest: %w", err)
	}
	c.token = ar.Token
	c.tokenExp = tokenExpiry(ar.Token)
	c.log.Debug("attested", "tee", c.attester.Tee(), "token_expires", c.tokenExp)
	return ar.Token, nil
}

// tokenExpiry reads exp from a JWT without verifying it (the guest trusts
// the channel, as guest-components does); zero if unreadable.
func tokenExpiry(token string) time.Time {
	t, _ := protocol.TokenExpiry(token)
	return t
}

// tokenMargin: a cached token this close to its exp is not used (it could
// expire on the way to the KBS); the client attests again instead.
const tokenMargin = 10 * time.Second

// validTokenLocked returns a cached token that is not about to expire.
func (c *Client) validTokenLocked() string {
	if c.token == "" || c.now().Add(tokenMargin).After(c.tokenExp) {
		return ""
	}
	return c.token
}

// GetResource fetches and decrypts kbs:///repo/type/tag (path
// "repo/type/tag"). It attests first when it holds no valid token (cached
// until shortly before its exp); on a 401 to a cached token it drops the
// token, re-attests once and retries. A 401 to a token this call just
// obtained is returned at once: a 401 that survives a fresh token (a
// policy denial, a token the KBS will not take) is not cured by attesting
// again (guest-components tries three times). So there are at most two
// requests.
func (c *Client) GetResource(ctx context.Context, path string) ([]byte, error) {
	path = strings.TrimPrefix(strings.TrimPrefix(path, "kbs://"), "/")
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		tok := c.validTokenLocked()
		fresh := tok == ""
		if fresh {
			var err error
			if tok, err = c.attestLocked(ctx); err != nil {
				return nil, err
			}
		}
		hdr := http.Header{"Authorization": {"Bearer " + tok}}
		var jwe protocol.Response
		_, err := c.do(ctx, http.MethodGet, c.base+"/kbs/v0/resource/"+path, nil, hdr, &jwe)
		if err == nil {
			plain, err := protocol.DecryptResponse(c.priv, &jwe)
			if err != nil {
				return nil, fmt.Errorf("decrypt resource %s: %w", path, err)
			}
			return plain, nil
		}
		if IsStatus(err, http.StatusUnauthorized) {
			c.token = "" // the next call attests again
		}
		if fresh || !IsStatus(err, http.StatusUnauthorized) {
			return nil, fmt.Errorf("get resource %s: %w", path, err)
		}
	}
}

// SetToken installs an attestation token obtained elsewhere (passport
// mode); the client must hold the matching TEE key.
func (c *Client) SetToken(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.token, c.tokenExp = token, tokenExpiry(token)
}

package server

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/coffer-project/coffer/internal/kbs/admintoken"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Admin authorization modes.
const (
	AdminAllowAll = "allow-all" // dev only
	AdminDenyAll  = "deny-all"
	AdminJWT      = "jwt"
)

// AdminACL grants a role the admin endpoints whose path matches a regex.
type AdminACL struct {
	Role string `toml:"role"`
	// AllowedEndpoints must start with ^/kbs and end with $, as Trustee's.
	AllowedEndpoints string `toml:"allowed_endpoints"`
}

// AdminConfig configures admin authentication and authorization.
type AdminConfig struct {
	Mode string `toml:"mode"`
	// PublicKeys are PEM files (Ed25519, ECDSA or RSA public keys) whose
	// signatures on admin JWTs are trusted.
	PublicKeys []string   `toml:"public_keys"`
	Issuer     string     `toml:"issuer"`
	Audience   string     `toml:"audience"`
	ACLs       []AdminACL `toml:"acls"`
}

type aclEntry struct {
	role string
	re   *regexp.Regexp
}

type adminAuth struct {
	mode string
	keys []crypto.PublicKey
	iss  string
	aud  string
	acls []aclEntry
	now  func() time.Time
}

func newAdminAuth(cfg AdminConfig, now func() time.Time) (*adminAuth, error) {
	a := &adminAuth{mode: cfg.Mode, iss: cfg.Issuer, aud: cfg.Audience, now: now}
	switch cfg.Mode {
	case AdminAllowAll, AdminDenyAll:
		return a, nil
	case AdminJWT:
	default:
		return nil, fmt.Errorf("admin mode %q: use %s, %s or %s", cfg.Mode, AdminJWT, AdminDenyAll, AdminAllowAll)
	}
	if len(cfg.PublicKeys) == 0 {
		return nil, errors.New("admin mode jwt needs at least one public key ([admin] public_keys)")
	}
	for _, p := range cfg.PublicKeys {
		k, err := LoadPublicKey(p)
		if err != nil {
			return nil, err
		}
		a.keys = append(a.keys, k)
	}
	acls := cfg.ACLs
	if len(acls) == 0 {
		acls = []AdminACL{{Role: "admin", AllowedEndpoints: "^/kbs/v0/.+$"}}
	}
	for _, acl := range acls {
		if acl.Role == "" || !strings.HasPrefix(acl.AllowedEndpoints, "^/kbs") || !strings.HasSuffix(acl.AllowedEndpoints, "$") {
			return nil, fmt.Errorf("admin ACL %+v: needs a role and a regex that starts with ^/kbs and ends with $", acl)
		}
		re, err := regexp.Compile(acl.AllowedEndpoints)
		if err != nil {
			return nil, fmt.Errorf("admin ACL for role %s: %w", acl.Role, err)
		}
		a.acls = append(a.acls, aclEntry{role: acl.Role, re: re})
	}
	return a, nil
}

// LoadPublicKey reads a PEM public key (PKIX), or the public half of a PEM
// private key.
func LoadPublicKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read admin public key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("admin public key %s: not PEM", path)
	}
	if k, err := x509.ParsePKIXPublicKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := admintoken.ParsePrivateKeyPEM(b); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s.Public(), nil
		}
	}
	return nil, fmt.Errorf("admin public key %s: not a PKIX public key or PKCS#8 private key", path)
}

var adminAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.PS256}

// authorize checks the admin bearer token of r for its path.
func (a *adminAuth) authorize(r *http.Request) error {
	switch a.mode {
	case AdminAllowAll:
		return nil
	case AdminDenyAll:
		return errorf(http.StatusUnauthorized, errAdminAuth, "admin API is disabled (admin mode deny-all)")
	}
	raw, ok := bearerToken(r)
	if !ok {
		return errorf(http.StatusUnauthorized, errAdminAuth, "admin endpoint needs Authorization: Bearer <admin token> (mint one with `coffer kbs admin-token`)")
	}
	tok, err := jwt.ParseSigned(raw, adminAlgs)
	if err != nil {
		return errorf(http.StatusUnauthorized, errAdminAuth, "malformed admin token: %v", err)
	}
	var claims jwt.Claims
	var extra struct {
		Role string `json:"role"`
	}
	verified := false
	for _, k := range a.keys {
		if err := tok.Claims(k, &claims, &extra); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return errorf(http.StatusUnauthorized, errAdminAuth, "admin token signature is not from a trusted key")
	}
	exp := jwt.Expected{Time: a.now(), Issuer: a.iss}
	if a.aud != "" {
		exp.AnyAudience = jwt.Audience{a.aud}
	}
	if err := claims.ValidateWithLeeway(exp, time.Minute); err != nil {
		return errorf(http.StatusUnauthorized, errAdminAuth, "admin token rejected: %v", err)
	}
	if claims.Expiry == nil {
		return errorf(http.StatusUnauthorized, errAdminAuth, "admin token has no exp claim")
	}
	if extra.Role == "" {
		return errorf(http.StatusUnauthorized, errAdminAuth, "admin token has no role claim")
	}
	for _, acl := range a.acls {
		if acl.role == extra.Role && acl.re.MatchString(r.URL.Path) {
			return nil
		}
	}
	return errorf(http.StatusUnauthorized, errAdminAuth, "role %q may not call %s %s", extra.Role, r.Method, r.URL.Path)
}

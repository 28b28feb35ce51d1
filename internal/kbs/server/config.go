package server

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is coffer-kbs's configuration (TOML file; flags override).
type Config struct {
	Listen       string `toml:"listen"`
	DataDir      string `toml:"data_dir"`
	InsecureHTTP bool   `toml:"insecure_http"`
	TLSCert      string `toml:"tls_cert"`
	TLSKey       string `toml:"tls_key"`
	// Dev: allow-all admin, a resource policy that accepts sample and
	// simulated evidence, simulated roots trusted. Never in production.
	Dev bool `toml:"dev"`
	// MaxBodyBytes bounds every request body (default 2 MiB, as Trustee).
	MaxBodyBytes int64 `toml:"max_body_bytes"`
	// AuditMaxEntries bounds the audit log: older entries are pruned
	// (default 100000).
	AuditMaxEntries int `toml:"audit_max_entries"`
	// AuditMaxRefused bounds the records of requests refused before any
	// session or token (kept apart, so that a flood of them cannot push
	// the other records out; default 10000).
	AuditMaxRefused int `toml:"audit_max_refused"`

	Sessions    SessionConfig     `toml:"sessions"`
	Admin       AdminConfig       `toml:"admin"`
	Attestation AttestationConfig `toml:"attestation"`
}

// SessionConfig bounds RCAR sessions.
type SessionConfig struct {
	Timeout Duration `toml:"timeout"` // default 5m
	Max     int      `toml:"max"`     // default 10000
	// VerifyTokens checks the signature of a cookie session's token on
	// every resource request, as Trustee does, instead of trusting the
	// token the server issued and kept in memory under that session (its
	// expiry is checked either way). Off by default: the signature cannot
	// have changed, and the check costs an ES256 verification (~100 µs on
	// the 2-core benchmark machine) per release.
	VerifyTokens bool `toml:"verify_tokens"`
}

// AttestationConfig configures the in-process attestation service.
type AttestationConfig struct {
	// TrustSimulatedRoots trusts the simulated SNP root in
	// SimulatedRootsDir (default: on in dev mode only).
	TrustSimulatedRoots bool   `toml:"trust_simulated_roots"`
	SimulatedRootsDir   string `toml:"simulated_roots_dir"`
	// SNPCertCacheDir holds VCEK certificates (no network access).
	SNPCertCacheDir string `toml:"snp_cert_cache_dir"`
	AllowDebug      bool   `toml:"allow_debug"`
	// TokenTTL is the attestation token lifetime (default 5m). Verifiers
	// allow 60 s of clock skew past exp, as Trustee does, so a token is
	// accepted for up to TokenTTL + 60 s.
	TokenTTL Duration `toml:"token_ttl"`
	// SignerKey is a PEM P-256 key for tokens; default: generated and
	// kept in the data dir, so tokens survive a restart.
	SignerKey string `toml:"signer_key"`
}

// Duration is a time.Duration read from TOML as "5m".
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:       "127.0.0.1:8080",
		DataDir:      "/var/lib/coffer-kbs",
		MaxBodyBytes: 2 << 20, AuditMaxEntries: 100000, AuditMaxRefused: 10000,
		Sessions:    SessionConfig{Timeout: Duration{5 * time.Minute}, Max: 10000},
		Admin:       AdminConfig{Mode: AdminJWT},
		Attestation: AttestationConfig{TokenTTL: Duration{5 * time.Minute}},
	}
}

// LoadConfig reads a TOML file over the defaults; unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	md, err := toml.Decode(string(b), &cfg)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return cfg, fmt.Errorf("config %s: unknown keys %v", path, und)
	}
	return cfg, nil
}

// Validate checks the configuration and fills dev-mode defaults.
func (c *Config) Validate() error {
	if c.Listen == "" {
		return errors.New("no listen address")
	}
	if c.DataDir == "" {
		return errors.New("no data dir (--data-dir)")
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 2 << 20
	}
	if c.AuditMaxEntries <= 0 {
		c.AuditMaxEntries = 100000
	}
	if c.AuditMaxRefused <= 0 {
		c.AuditMaxRefused = 10000
	}
	if c.Sessions.Timeout.Duration <= 0 {
		c.Sessions.Timeout.Duration = 5 * time.Minute
	}
	if c.Sessions.Max <= 0 {
		c.Sessions.Max = 10000
	}
	if c.Attestation.TokenTTL.Duration <= 0 {
		c.Attestation.TokenTTL.Duration = 5 * time.Minute
	}
	if c.Dev {
		c.Admin.Mode = AdminAllowAll
		c.Attestation.TrustSimulatedRoots = true
	} else if c.Admin.Mode == AdminAllowAll {
		return errors.New("admin mode allow-all is only allowed with --dev")
	}
	if !c.InsecureHTTP && !c.Dev && (c.TLSCert == "" || c.TLSKey == "") {
		return errors.New("HTTPS needs --tls-cert and --tls-key (or --insecure-http, or --dev for a generated self-signed pair)")
	}
	return nil
}

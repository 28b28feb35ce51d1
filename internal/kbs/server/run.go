package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/coffer-project/coffer/internal/attestation"
	"github.com/coffer-project/coffer/internal/attestation/ear"
	"github.com/coffer-project/coffer/internal/policy"
	"github.com/coffer-project/coffer/internal/rvps"
	"github.com/coffer-project/coffer/internal/store"
	"github.com/coffer-project/coffer/internal/tee/sim"
)

// Daemon is a fully wired coffer-kbs: store, RVPS, attestation service and
// HTTP server.
type Daemon struct {
	Server *Server
	Store  store.Store
	// SimRoots is the simulated SNP chip trusted in dev mode (nil if none).
	SimRoots *sim.Processor
	cfg      Config
	log      *slog.Logger
}

// rvLookup adapts the RVPS to the admin API.
type rvLookup struct{ *rvps.Service }

func (r rvLookup) Lookup(ctx context.Context, name string) (any, bool, error) {
	return r.Query(ctx, name)
}

// regoResourcePolicy adapts a compiled Rego policy to ResourcePolicy.
type regoResourcePolicy struct{ p *policy.Policy }

func (r regoResourcePolicy) Allow(ctx context.Context, claims json.RawMessage, data map[string]any) (bool, string, error) {
	d, err := r.p.EvaluateAllow(ctx, claims, data)
	if err != nil {
		return false, "", err
	}
	if d.Allow {
		return true, "", nil // the reason is only read for a denial
	}
	return false, d.Explain(), nil
}

// attestAdapter adapts attestation.Service to AttestationService.
type attestAdapter struct{ *attestation.Service }

// Open wires a daemon from cfg (validated): it opens the data dir.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Daemon, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	st, err := store.OpenBolt(filepath.Join(cfg.DataDir, "kbs.db"), store.BoltOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	d := &Daemon{Store: st, cfg: cfg, log: log}
	ok := false
	defer func() {
		if !ok {
			st.Close()
		}
	}()
	if err := policy.WriteDefaults(ctx, st, cfg.Dev, log); err != nil {
		return nil, fmt.Errorf("write default policies: %w", err)
	}
	rv := rvps.New(st)
	keyPath := cfg.Attestation.SignerKey
	var signer *ear.Signer
	if keyPath != "" {
		signer, err = ear.LoadSigner(keyPath)
	} else {
		signer, err = ear.LoadOrCreateSigner(filepath.Join(cfg.DataDir, "token-signer.pem"))
	}
	if err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	snpOpts := attestation.SNPOptions{CertCacheDir: cfg.Attestation.SNPCertCacheDir, AllowDebug: cfg.Attestation.AllowDebug}
	if cfg.Attestation.TrustSimulatedRoots {
		dir := cfg.Attestation.SimulatedRootsDir
		if dir == "" {
			dir = filepath.Join(cfg.DataDir, "sim-snp")
		}
		p, created, err := sim.LoadOrCreate(dir, sim.Options{})
		if err != nil {
			return nil, fmt.Errorf("simulated SNP chip in %s: %w", dir, err)
		}
		if created {
			log.Warn("generated a simulated SNP chip key chain", "dir", dir)
		}
		d.SimRoots = p
		snpOpts.TrustedSimulatedRoots = [][]byte{p.RootCertsPEM()}
	}
	snp, err := attestation.NewSNPVerifier(snpOpts)
	if err != nil {
		return nil, err
	}
	as, err := attestation.NewService(attestation.ServiceConfig{
		Verifiers:       []attestation.Verifier{attestation.NewSampleVerifier(), snp},
		Store:           st,
		ReferenceValues: rv.Query,
		Signer:          signer,
		TokenTTL:        cfg.Attestation.TokenTTL.Duration,
		Log:             log,
	})
	if err != nil {
		return nil, err
	}
	srv, err := New(ctx, cfg, Deps{
		Store:       st,
		Attestation: attestAdapter{as},
		RVPS:        rvLookup{rv},
		CompileResourcePolicy: func(rego string) (ResourcePolicy, error) {
			p, err := policy.Compile("resource-policy", rego)
			if err != nil {
				return nil, err
			}
			return regoResourcePolicy{p}, nil
		},
		Log: log,
	})
	if err != nil {
		return nil, err
	}
	d.Server = srv
	ok = true
	return d, nil
}

// Close closes the store.
func (d *Daemon) Close() error {
	d.Server.Close()
	return d.Store.Close()
}

// Serve listens and serves until ctx ends, then shuts down gracefully.
// ready, if non-nil, receives the bound address.
func (d *Daemon) Serve(ctx context.Context, ready func(addr string)) error {
	l, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", d.cfg.Listen, err)
	}
	hs := &http.Server{
		Handler:           d.Server,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    256 << 10,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if !d.cfg.InsecureHTTP {
		cert, err := d.tlsCertificate()
		if err != nil {
			l.Close()
			return err
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		l = tls.NewListener(l, hs.TLSConfig)
		scheme = "https"
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go d.Server.RunSweeper(sctx, time.Minute)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	addr := scheme + "://" + l.Addr().String()
	d.log.Info("coffer-kbs listening", "url", addr, "dev", d.cfg.Dev, "admin", d.cfg.Admin.Mode, "data_dir", d.cfg.DataDir)
	if ready != nil {
		ready(addr)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := hs.Shutdown(shctx); err != nil {
		return err
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// tlsCertificate loads the configured pair, or in dev mode creates a
// self-signed one in the data dir (kbs-cert.pem is what clients pass as
// --cert-file).
func (d *Daemon) tlsCertificate() (tls.Certificate, error) {
	if d.cfg.TLSCert != "" {
		c, err := tls.LoadX509KeyPair(d.cfg.TLSCert, d.cfg.TLSKey)
		if err != nil {
			return c, fmt.Errorf("load TLS certificate: %w", err)
		}
		return c, nil
	}
	certPath, keyPath := filepath.Join(d.cfg.DataDir, "kbs-cert.pem"), filepath.Join(d.cfg.DataDir, "kbs-key.pem")
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _, _ := net.SplitHostPort(d.cfg.Listen)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "coffer-kbs (dev, self-signed)"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	d.log.Warn("generated a self-signed TLS certificate (dev)", "cert", certPath)
	return tls.LoadX509KeyPair(certPath, keyPath)
}

// Command coffer-kbs is Coffer's relying party: key broker, attestation
// service and reference value provider in one process, speaking the
// Confidential Containers (Trustee) KBS protocol v0.4.0.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/coffer-project/coffer/internal/kbs/server"
	"github.com/coffer-project/coffer/internal/version"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "coffer-kbs: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("coffer-kbs", flag.ContinueOnError)
	configPath := fs.String("config", "", "TOML configuration file (flags override it)")
	listen := fs.String("listen", "", "listen address (default 127.0.0.1:8080)")
	dataDir := fs.String("data-dir", "", "data directory: store, keys (default /var/lib/coffer-kbs)")
	insecure := fs.Bool("insecure-http", false, "serve plain HTTP (default HTTPS)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate (PEM)")
	tlsKey := fs.String("tls-key", "", "TLS private key (PEM)")
	dev := fs.Bool("dev", false, "DEVELOPMENT MODE: allow-all admin, accept sample and simulated TEEs")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if *showVersion {
		fmt.Println("coffer-kbs", version.Version)
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("bad --log-level %q", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := server.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["listen"] {
		cfg.Listen = *listen
	}
	if set["data-dir"] {
		cfg.DataDir = *dataDir
	}
	if set["insecure-http"] {
		cfg.InsecureHTTP = *insecure
	}
	if set["tls-cert"] {
		cfg.TLSCert = *tlsCert
	}
	if set["tls-key"] {
		cfg.TLSKey = *tlsKey
	}
	if set["dev"] {
		cfg.Dev = *dev
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Dev {
		banner := strings.Repeat("!", 78)
		log.Warn(banner)
		log.Warn("DEVELOPMENT MODE: the admin API is open to anyone who can reach " + cfg.Listen + ",")
		log.Warn("and secrets are released to sample and simulated TEEs, which prove nothing.")
		log.Warn("Never run --dev with real secrets.")
		log.Warn(banner)
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	defer stop()
	d, err := server.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Serve(ctx, nil)
}

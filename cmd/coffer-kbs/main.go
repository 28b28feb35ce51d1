// Command coffer-kbs is Coffer's relying party: key broker, attestation
// service and reference value provider in one process, speaking the
// Confidential Containers (Trustee) KBS protocol v0.4.0.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
	inv, err := parseArgs(os.Args[1:], os.Stderr)
	if err != nil {
		return err
	}
	if inv.version {
		fmt.Println("coffer-kbs", version.Version)
		return nil
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: inv.level}))
	cfg := inv.cfg
	if cfg.Dev {
		warnDev(log, cfg.Listen)
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

// invocation is what the command line asks for.
type invocation struct {
	cfg     server.Config // validated
	level   slog.Level
	version bool // print the version and exit (cfg is not loaded)
}

// parseArgs parses the command line (usage and flag errors go to errOut)
// and builds the configuration: the TOML --config file over the defaults,
// then every flag given on the command line over that, then validation.
func parseArgs(args []string, errOut io.Writer) (invocation, error) {
	var inv invocation
	fs := flag.NewFlagSet("coffer-kbs", flag.ContinueOnError)
	fs.SetOutput(errOut)
	configPath := fs.String("config", "", "TOML configuration file (flags override it)")
	listen := fs.String("listen", "", "listen address (default 127.0.0.1:8080)")
	dataDir := fs.String("data-dir", "", "data directory: store, keys (default /var/lib/coffer-kbs)")
	insecure := fs.Bool("insecure-http", false, "serve plain HTTP (default HTTPS)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate (PEM)")
	tlsKey := fs.String("tls-key", "", "TLS private key (PEM)")
	dev := fs.Bool("dev", false, "DEVELOPMENT MODE: allow-all admin, accept sample and simulated TEEs")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	fs.BoolVar(&inv.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return inv, err
	}
	if fs.NArg() > 0 {
		return inv, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if inv.version {
		return inv, nil
	}
	if err := inv.level.UnmarshalText([]byte(*logLevel)); err != nil {
		return inv, fmt.Errorf("bad --log-level %q", *logLevel)
	}
	cfg, err := server.LoadConfig(*configPath)
	if err != nil {
		return inv, err
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
		return inv, err
	}
	inv.cfg = cfg
	return inv, nil
}

// warnDev logs the loud development-mode warning.
func warnDev(log *slog.Logger, listen string) {
	banner := strings.Repeat("!", 78)
	log.Warn(banner)
	log.Warn("DEVELOPMENT MODE: the admin API is open to anyone who can reach " + listen + ",")
	log.Warn("and secrets are released to sample and simulated TEEs, which prove nothing.")
	log.Warn("Never run --dev with real secrets.")
	log.Warn(banner)
}

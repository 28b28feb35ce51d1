package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-project/coffer/internal/guest"
)

// newGuestCmd returns `coffer guest`: build and inspect the guest image
// (kernel, initrd, guest.json) that every Coffer VM boots.
func newGuestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "guest",
		Short: "Build and inspect the guest VM image (kernel + initrd)",
		Long: "The guest image is the kernel, the initrd (holding coffer-agent and kernel modules) and\n" +
			"guest.json describing them. It lives in " + guestDirHelp() + ".",
	}
	cmd.AddCommand(newGuestBuildCmd(), newGuestInfoCmd())
	return cmd
}

func guestDirHelp() string {
	return "$COFFER_GUEST_DIR, else $XDG_CACHE_HOME/coffer/guest, else /var/lib/coffer/guest (root) or ~/.cache/coffer/guest"
}

func newGuestBuildCmd() *cobra.Command {
	var (
		cfg        guest.BuildConfig
		noDefaults bool
	)
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Fetch the guest kernel and build the initrd (only when inputs changed)",
		Long: "Fetches Debian's cloud kernel with apt-get (unpacked into the cache, never installed),\n" +
			"builds a reproducible initrd holding coffer-agent and the kernel modules Coffer needs,\n" +
			"and writes vmlinuz, initrd.img and guest.json. Nothing is rewritten when the inputs\n" +
			"are unchanged; --refresh downloads the kernel again and rebuilds.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.AgentPath == "" {
				p, err := guestDefaultAgentPath()
				if err != nil {
					return err
				}
				cfg.AgentPath = p
			}
			if noDefaults && cfg.Modules == nil {
				cfg.Modules = []string{}
			}
			cfg.Log = guestLogger(cmd)
			m, err := guest.Build(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			printGuestSummary(cmd.OutOrStdout(), m)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.CacheDir, "cache-dir", "", "guest image directory (default: "+guestDirHelp()+")")
	f.StringVar(&cfg.AgentPath, "agent", "", "static coffer-agent binary (default: coffer-agent next to the coffer binary)")
	f.StringVar(&cfg.AgentVersion, "agent-version", "", "agent version to record (default: from the binary's Go build info)")
	f.StringVar(&cfg.KernelDeb, "kernel-deb", "", "use this linux-image-<release>-cloud-amd64 .deb instead of apt-get (offline)")
	f.StringVar(&cfg.KernelDir, "kernel-dir", "", "use this already-unpacked kernel package directory (boot/ and lib/modules/)")
	f.StringVar(&cfg.Compression, "compression", guest.CompressionNone, "initrd compression: none|gzip (none boots faster under TCG)")
	f.BoolVar(&cfg.KeepModuleSignatures, "keep-module-signatures", false, "keep kernel modules' signatures (default: stripped; the initrd is hashed as a whole, and checking them costs boot time; keep them for a kernel that enforces module signatures)")
	f.StringSliceVar(&cfg.Modules, "modules", nil, "kernel modules to include, dependencies added (default: "+strings.Join(guest.DefaultModules(), ",")+")")
	f.BoolVar(&noDefaults, "no-modules", false, "include no kernel modules")
	f.StringVar(&cfg.Cmdline, "cmdline", guest.DefaultCmdline, "guest kernel command line")
	f.BoolVar(&cfg.Refresh, "refresh", false, "download the kernel again and rebuild even if up to date")
	cmd.MarkFlagsMutuallyExclusive("kernel-deb", "kernel-dir")
	cmd.MarkFlagsMutuallyExclusive("modules", "no-modules")
	return cmd
}

func newGuestInfoCmd() *cobra.Command {
	var (
		dir    string
		verify bool
	)
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Print guest.json of the built guest image",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := guest.Load(dir)
			if err != nil {
				return err
			}
			if verify {
				if err := guest.Verify(m); err != nil {
					return err
				}
			}
			b, err := os.ReadFile(filepath.Join(m.Dir, guest.ManifestFile))
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.Flags().StringVar(&dir, "cache-dir", "", "guest image directory (default: "+guestDirHelp()+")")
	cmd.Flags().BoolVar(&verify, "verify", false, "also check the sha256 of vmlinuz and initrd.img")
	return cmd
}

// guestLogger logs to stderr at the level asked for with the root command's
// --debug / --log-level flags (warn by default, like the rest of coffer;
// --log-level info shows download and build progress).
func guestLogger(cmd *cobra.Command) *slog.Logger {
	level := slog.LevelWarn
	if f := cmd.Flags().Lookup("log-level"); f != nil && f.Value.String() != "" {
		_ = level.UnmarshalText([]byte(f.Value.String()))
	}
	if f := cmd.Flags().Lookup("debug"); f != nil && f.Value.String() == "true" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
}

// guestDefaultAgentPath is coffer-agent in the directory of the running binary.
func guestDefaultAgentPath() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locating coffer-agent next to the coffer binary: %w: pass --agent", err)
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	p := filepath.Join(filepath.Dir(exe), "coffer-agent")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("coffer-agent not found next to the coffer binary (%s): build it (`make`) or pass --agent PATH", p)
	}
	return p, nil
}

func printGuestSummary(w io.Writer, m *guest.Manifest) {
	state := "built"
	if m.Cached {
		state = "up to date (cached, nothing rewritten)"
	}
	pkg := m.Kernel.Package
	if m.Kernel.PackageVersion != "" {
		pkg += " " + m.Kernel.PackageVersion
	}
	fmt.Fprintf(w, "guest image %s: %s\n", m.Dir, state)
	fmt.Fprintf(w, "  kernel   %s (%s)\n", m.Kernel.Release, pkg)
	fmt.Fprintf(w, "           %s  sha256:%s\n", m.KernelPath(), m.Kernel.SHA256)
	fmt.Fprintf(w, "  initrd   %s, compression %s\n", guestHumanBytes(m.Initrd.Size), m.Initrd.Compression)
	fmt.Fprintf(w, "           %s  sha256:%s\n", m.InitrdPath(), m.Initrd.SHA256)
	fmt.Fprintf(w, "  agent    %s  sha256:%s\n", m.Agent.Version, m.Agent.SHA256)
	fmt.Fprintf(w, "  modules  %d\n", len(m.Modules))
	fmt.Fprintf(w, "  cmdline  %s\n", m.Cmdline)
	fmt.Fprintf(w, "  inputs   sha256:%s\n", m.InputsSHA256)
}

func guestHumanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB (%d bytes)", float64(n)/(1<<10), n)
	}
	return fmt.Sprintf("%d bytes", n)
}

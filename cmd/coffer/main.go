// Command coffer is the Coffer user CLI: run containers in pod VMs, manage
// detached pods, build the guest image.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/coffer-project/coffer/internal/version"
	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error // printed when non-nil
}

func (e *exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

// Exit codes for coffer's own failures, as Docker uses them.
const (
	exitCofferError  = 125
	exitCannotInvoke = 126
	exitNotFound     = 127
)

type globalOpts struct {
	debug    bool
	logLevel string
}

// level is the --log-level (error when not given).
func (g *globalOpts) level() (slog.Level, error) {
	level := slog.LevelError
	if g.logLevel != "" {
		if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
			return slog.LevelError, fmt.Errorf("bad --log-level %q: use debug, info, warn or error", g.logLevel)
		}
	}
	return level, nil
}

// logger logs at the level (checked before any command runs) or debug.
func (g *globalOpts) logger() *slog.Logger {
	level, _ := g.level()
	if g.debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func newRootCmd() *cobra.Command {
	g := &globalOpts{}
	root := &cobra.Command{
		Use:           "coffer",
		Short:         "Run containers in lightweight VMs (sandboxed) or TEEs (confidential)",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if _, err := g.level(); err != nil {
				return &exitError{code: exitCofferError, err: err}
			}
			return nil
		},
	}
	root.PersistentFlags().BoolVar(&g.debug, "debug", false, "debug logging (host and guest agent)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (default error)")
	root.AddCommand(newRunCmd(g), newPsCmd(g), newExecCmd(g), newKillCmd(g), newPauseCmd(true), newPauseCmd(false), newRmCmd(g), newLogsCmd(), newKbsCmd(g), newGuestCmd(), newPodOwnerCmd(g))
	root.AddCommand(newImageCmd(g))
	return root
}

func main() {
	root := newRootCmd()
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(os.Stderr, "coffer: %v\n", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintf(os.Stderr, "coffer: %v\n", err)
	os.Exit(exitCofferError)
}

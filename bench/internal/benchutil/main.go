package benchutil

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
)

// Flags are the output flags every benchmark has.
type Flags struct {
	Quiet    bool   // no progress lines
	JSON     bool   // JSON on stdout instead of the table
	JSONFile string // also write JSON here
}

// Output is what a benchmark prints: its report as JSON or as a table.
type Output struct {
	JSON  func() any
	Table func(io.Writer)
}

// Main is a benchmark program's main: it parses the flags with parse (-h
// exits 0, bad flags 2), then calls run with a context cancelled on
// Ctrl-C, SIGTERM and SIGHUP and the progress writer (stderr unless
// quiet), prints the report run returns (also along with an error) and
// returns the exit code: 0, 1 on failure, 130 when interrupted.
func Main[O any](args []string, parse func([]string, io.Writer) (O, error), flags func(O) Flags,
	run func(context.Context, O, io.Writer) (*Output, error)) int {
	opts, err := parse(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	f := flags(opts)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	progress := io.Writer(os.Stderr)
	if f.Quiet {
		progress = io.Discard
	}
	out, runErr := run(ctx, opts, progress)
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted; cleaned up")
		return 130
	}
	if out != nil {
		if code := Emit(out.JSON, out.Table, f.JSON, f.JSONFile); code != 0 {
			return code
		}
	}
	if runErr != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", runErr)
		return 1
	}
	return 0
}

// LoadAvg returns /proc/loadavg's first three fields ("" if unreadable).
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// FirstLine is the first line of a command's output (its version, say),
// or "unknown".
func FirstLine(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return l
}

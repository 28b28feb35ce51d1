package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// TestLoggerLevel: coffer logs only errors by default (the accelerator
// choice and other progress stay quiet); --log-level info shows them and
// --debug everything.
func TestLoggerLevel(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		g      globalOpts
		lowest slog.Level // the lowest level logged
	}{
		{globalOpts{}, slog.LevelError},
		{globalOpts{logLevel: "info"}, slog.LevelInfo},
		{globalOpts{logLevel: "WARN"}, slog.LevelWarn},
		{globalOpts{logLevel: "debug"}, slog.LevelDebug},
		{globalOpts{debug: true, logLevel: "error"}, slog.LevelDebug},
	}
	for _, tt := range tests {
		l := tt.g.logger()
		if !l.Enabled(ctx, tt.lowest) || l.Enabled(ctx, tt.lowest-1) {
			t.Errorf("%+v: lowest enabled level is not %v", tt.g, tt.lowest)
		}
	}
}

// TestBadLogLevel: an unknown --log-level is refused in one line, before
// any command runs.
func TestBadLogLevel(t *testing.T) {
	t.Setenv("COFFER_RUNTIME_DIR", t.TempDir())
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"--log-level", "chatty", "ps"})
	err := root.ExecuteContext(context.Background())
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitCofferError || !strings.Contains(err.Error(), `bad --log-level "chatty"`) {
		t.Fatalf("--log-level chatty: %v", err)
	}
	if out.Len() > 0 {
		t.Errorf("ps ran: %q", out.String())
	}
}

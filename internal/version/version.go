// Package version holds the Coffer version, stamped at build time with
// -ldflags "-X github.com/coffer-project/coffer/internal/version.Version=...".
package version

// Version is the release or git description of this build.
var Version = "dev"

package policy

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/coffer-project/coffer/internal/store"
)

//go:embed defaults/*.rego
var defaultFS embed.FS

// Store keys of the policies (see store.NSAttestPolicies and
// store.NSResourcePolicy).
const (
	// DefaultAppraisalPolicyID is the appraisal policy for CPU TEEs, in
	// store.NSAttestPolicies (Trustee's "<policy id>_<tee class>" naming).
	DefaultAppraisalPolicyID = "default_cpu"
	// ResourcePolicyKey is the key of the resource policy in
	// store.NSResourcePolicy.
	ResourcePolicyKey = "policy"
)

// Names of the built-in policies, for Default.
const (
	// DefaultCPU is the appraisal policy for sample and snp.
	DefaultCPU = "default_cpu"
	// ResourceDefault is the production resource policy.
	ResourceDefault = "default"
	// ResourceDev is the dev-mode resource policy.
	ResourceDev = "dev"
	// ResourceAllowAll, ResourceDenyAll and ResourceAffirming are
	// Trustee's sample resource policies.
	ResourceAllowAll  = "allow_all"
	ResourceDenyAll   = "deny_all"
	ResourceAffirming = "affirming"
)

// Default returns the Rego text of a built-in policy by name (DefaultCPU,
// ResourceDefault, ResourceDev, ResourceAllowAll, ResourceDenyAll,
// ResourceAffirming).
func Default(name string) (string, error) {
	b, err := defaultFS.ReadFile("defaults/" + name + ".rego")
	if err != nil {
		return "", fmt.Errorf("no built-in policy %q; built-in policies are %s", name, strings.Join(DefaultNames(), ", "))
	}
	return string(b), nil
}

// DefaultNames lists the built-in policy names, sorted.
func DefaultNames() []string {
	ents, _ := defaultFS.ReadDir("defaults")
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".rego"); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func mustDefault(name string) []byte {
	s, err := Default(name)
	if err != nil {
		panic(err) // embedded at build time; a test compiles every one
	}
	return []byte(s)
}

// WriteDefaults installs the built-in policies without overwriting the
// user's: the default_cpu appraisal policy (store.NSAttestPolicies) and the
// resource policy (store.NSResourcePolicy, key ResourcePolicyKey): the dev
// policy when dev is true, the production default otherwise.
//
// A stored resource policy that is byte-identical to the built-in policy
// of the other mode was written by an earlier start, not by the user, and
// is replaced: so a data directory first used with --dev does not keep
// accepting sample and simulated evidence after a restart without --dev.
func WriteDefaults(ctx context.Context, st store.Store, dev bool, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	written, err := st.Put(ctx, store.NSAttestPolicies, DefaultAppraisalPolicyID, mustDefault(DefaultCPU), false)
	if err != nil {
		return fmt.Errorf("install default appraisal policy: %w", err)
	}
	if written {
		log.Info("installed built-in appraisal policy", "id", DefaultAppraisalPolicyID)
	}

	want, other := ResourceDefault, ResourceDev
	if dev {
		want, other = ResourceDev, ResourceDefault
	}
	cur, err := st.Get(ctx, store.NSResourcePolicy, ResourcePolicyKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
		written, err := st.Put(ctx, store.NSResourcePolicy, ResourcePolicyKey, mustDefault(want), false)
		if err != nil {
			return fmt.Errorf("install default resource policy: %w", err)
		}
		if written {
			log.Info("installed built-in resource policy", "policy", want)
		}
	case err != nil:
		return fmt.Errorf("read resource policy: %w", err)
	case bytes.Equal(cur, mustDefault(other)):
		if _, err := st.Put(ctx, store.NSResourcePolicy, ResourcePolicyKey, mustDefault(want), true); err != nil {
			return fmt.Errorf("replace built-in resource policy: %w", err)
		}
		log.Warn("replaced the built-in resource policy of the other mode", "was", other, "now", want)
	}
	return nil
}

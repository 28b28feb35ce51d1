package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/coffer-project/coffer/internal/policy/builtin"
	"github.com/coffer-project/coffer/internal/store"
)

// Store keys of the policies (see store.NSAttestPolicies and
// store.NSResourcePolicy).
const (
	// DefaultAppraisalPolicyID is the appraisal policy for CPU TEEs, in
	// store.NSAttestPolicies (Trustee's "<policy id>_<tee class>" naming).
	DefaultAppraisalPolicyID = "default_cpu"
	// ResourcePolicyKey is the key of the resource policy in
	// store.NSResourcePolicy.
	ResourcePolicyKey = "policy"
	// ResourcePolicyOriginKey records, next to it, who wrote the stored
	// resource policy: the admin API (PutResourcePolicy) or a start of the
	// server (WriteDefaults, "builtin <name>"). A start replaces only a
	// built-in policy a start wrote.
	ResourcePolicyOriginKey = "policy.origin"
)

// Values of ResourcePolicyOriginKey.
const (
	originAdmin = "admin"
	// originBuiltin + the built-in's name: written by a start.
	originBuiltin = "builtin "
)

// PutResourcePolicy stores rego as the resource policy set through the
// admin API, with its origin, in one transaction: WriteDefaults never
// replaces it, even when it is the text of a built-in policy.
func PutResourcePolicy(ctx context.Context, st store.Store, rego []byte) error {
	_, err := putResourcePolicy(ctx, st, rego, originAdmin, true)
	return err
}

// putResourcePolicy stores rego as the resource policy and origin as who
// wrote it (see ResourcePolicyOriginKey), in one transaction; it reports
// whether the policy was written (without overwrite, not when one is
// stored).
func putResourcePolicy(ctx context.Context, st store.Store, rego []byte, origin string, overwrite bool) (bool, error) {
	written, err := st.PutBatch(ctx, store.NSResourcePolicy, []store.KV{
		{Key: ResourcePolicyKey, Value: rego},
		{Key: ResourcePolicyOriginKey, Value: []byte(origin)},
	}, overwrite)
	return err == nil && written[0], err
}

// Names of the built-in policies, for Default (see package builtin).
const (
	DefaultCPU        = builtin.DefaultCPU
	ResourceDefault   = builtin.ResourceDefault
	ResourceDev       = builtin.ResourceDev
	ResourceAllowAll  = builtin.ResourceAllowAll
	ResourceDenyAll   = builtin.ResourceDenyAll
	ResourceAffirming = builtin.ResourceAffirming
)

// Default returns the Rego text of a built-in policy by name.
func Default(name string) (string, error) { return builtin.Text(name) }

// DefaultNames lists the built-in policy names, sorted.
func DefaultNames() []string { return builtin.Names() }

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
// of the other mode was written by an earlier start, and is replaced: so a
// data directory first used with --dev does not keep accepting sample and
// simulated evidence after a restart without --dev. One an admin stored
// (PutResourcePolicy) is kept, whatever its text; a data directory from
// before the origin was recorded counts as written by a start.
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
		written, err := putResourcePolicy(ctx, st, mustDefault(want), originBuiltin+want, false)
		if err != nil {
			return fmt.Errorf("install default resource policy: %w", err)
		}
		if written {
			log.Info("installed built-in resource policy", "policy", want)
		}
	case err != nil:
		return fmt.Errorf("read resource policy: %w", err)
	case bytes.Equal(cur, mustDefault(other)):
		origin, err := st.Get(ctx, store.NSResourcePolicy, ResourcePolicyOriginKey)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("read resource policy origin: %w", err)
		}
		if string(origin) == originAdmin {
			log.Warn("keeping the resource policy an admin set: it is the built-in policy of the other mode",
				"policy", other, "mode_default", want)
			return nil
		}
		if _, err := putResourcePolicy(ctx, st, mustDefault(want), originBuiltin+want, true); err != nil {
			return fmt.Errorf("replace built-in resource policy: %w", err)
		}
		log.Warn("replaced the built-in resource policy of the other mode", "was", other, "now", want)
	}
	return nil
}

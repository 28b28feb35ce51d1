// Package builtin owns the text of Coffer's built-in Rego policies: the
// appraisal policy for CPU TEEs and the resource policies. It has no
// dependencies, so tools that only show or upload policies (the coffer
// CLI) do not link the policy engine.
package builtin

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

//go:embed *.rego
var files embed.FS

// Names of the built-in policies.
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

// Text returns the Rego text of a built-in policy by name.
func Text(name string) (string, error) {
	b, err := files.ReadFile(name + ".rego")
	if err != nil || strings.ContainsAny(name, "/.") {
		return "", fmt.Errorf("no built-in policy %q; built-in policies are %s", name, strings.Join(Names(), ", "))
	}
	return string(b), nil
}

// Names lists the built-in policy names, sorted.
func Names() []string {
	ents, _ := files.ReadDir(".")
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".rego"); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

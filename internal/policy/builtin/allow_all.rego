# Trustee's allow_all.rego: serve every "resource" request from any token the
# KBS issued (as in Trustee, other plugins are not allowed).
package policy

import rego.v1

default allow := false

allow if data.plugin == "resource"

deny_reasons contains msg if {
	data.plugin != "resource"
	msg := sprintf("plugin %q is not served by this policy (only \"resource\")", [data.plugin])
}

# Coffer development resource policy (coffer-kbs --dev).
#
# Serves the "resource" plugin to any attested TEE, including the sample TEE
# and Coffer's simulated secure processor, whatever its appraisal status:
# dev mode is for bringing a guest up before reference values exist (an
# unregistered sample or snp guest appraises as contraindicated). The
# appraisal still runs and is in the token and the audit log. Never use this
# policy in production; to exercise appraisal in dev, set the resource
# policy to affirming.rego.
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	has_submods
}

deny_reasons contains msg if {
	data.plugin != "resource"
	msg := sprintf("plugin %q is not served by this policy (only \"resource\")", [data.plugin])
}

deny_reasons contains "the token has no submods: no attested TEE" if not has_submods

# A helper rule, because `not count(input.submods) > 0` evaluates to false,
# not true, when input.submods is undefined.
has_submods if count(input.submods) > 0

# Coffer default resource policy (production).
#
# input: the verified EAR token claims; data: {"plugin", "resource-path", "query"}.
#
# Like Trustee's default.rego, only the "resource" plugin is served and
# evidence from the sample TEE (no hardware root of trust) is refused.
# Coffer additionally refuses
#   - evidence from Coffer's simulated secure processor (a submodule with
#     "coffer.simulated": true, or simulated: true in its snp claims), which
#     is accepted only by the dev policy (coffer-kbs --dev); and
#   - any TEE whose appraisal is not "affirming": with the default_cpu
#     appraisal policy this means the reference values for the TEE must be
#     registered (sample: launch_digest, svn, major_version,
#     minimum_minor_version; snp: snp_launch_measurement, snp_bootloader,
#     snp_tee_svn, snp_snp_svn, snp_microcode).
# Denials list every failed check in deny_reasons.
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	has_submods
	not any_sample
	not any_simulated
	every _, s in input.submods {
		s["ear.status"] == "affirming"
	}
}

any_sample if {
	some s in input.submods
	s["ear.veraison.annotated-evidence"].sample
}

any_simulated if {
	some s in input.submods
	simulated(s)
}

simulated(s) if s["coffer.simulated"] == true

simulated(s) if s["ear.veraison.annotated-evidence"].snp.simulated == true

deny_reasons contains msg if {
	data.plugin != "resource"
	msg := sprintf("plugin %q is not served by this policy (only \"resource\")", [data.plugin])
}

deny_reasons contains "the token has no submods: no attested TEE" if not has_submods

# A helper rule, because `not count(input.submods) > 0` evaluates to false,
# not true, when input.submods is undefined.
has_submods if count(input.submods) > 0

deny_reasons contains msg if {
	some name, s in input.submods
	s["ear.veraison.annotated-evidence"].sample
	msg := sprintf("%s: evidence is from the sample TEE, which has no hardware root of trust; it is accepted only in dev mode (coffer-kbs --dev)", [name])
}

deny_reasons contains msg if {
	some name, s in input.submods
	simulated(s)
	msg := sprintf("%s: evidence is from Coffer's simulated secure processor; it is accepted only in dev mode (coffer-kbs --dev)", [name])
}

deny_reasons contains msg if {
	some name, s in input.submods
	s["ear.status"] != "affirming"
	msg := sprintf("%s: ear.status is %q, not \"affirming\" (trust vector %v); register the reference values the attestation policy checks", [name, s["ear.status"], object.get(s, "ear.trustworthiness-vector", {})])
}

deny_reasons contains msg if {
	some name, s in input.submods
	not s["ear.status"]
	msg := sprintf("%s: has no ear.status", [name])
}

# Trustee's affirming.rego: allow only when every TEE in the token has the
# EAR status "affirming".
package policy

import rego.v1

default allow := false

allow if {
	has_submods
	every _, s in input.submods {
		s["ear.status"] == "affirming"
	}
}

deny_reasons contains "the token has no submods: no attested TEE" if not has_submods

# A helper rule, because `not count(input.submods) > 0` evaluates to false,
# not true, when input.submods is undefined.
has_submods if count(input.submods) > 0

deny_reasons contains msg if {
	some name, s in input.submods
	object.get(s, "ear.status", "missing") != "affirming"
	msg := sprintf("%s: ear.status is %q, not \"affirming\"", [name, object.get(s, "ear.status", "missing")])
}

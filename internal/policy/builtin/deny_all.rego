# Trustee's deny_all.rego: release nothing.
package policy

import rego.v1

default allow := false

deny_reasons contains "the resource policy is deny_all: no resource is released"

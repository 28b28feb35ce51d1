# Coffer default appraisal policy for CPU TEEs (policy id "default_cpu").
#
# Produces the EAR trustworthiness vector (AR4SI claims, draft-ietf-rats-ar4si)
# for one TEE from its annotated evidence (input) and the reference values
# registered with the RVPS (query_reference_value). Compatible with Trustee's
# ear_default_policy_cpu.rego for the sample TEE; the snp section reads
# Coffer's flat SNP claims (below).
#
# Tiers: |v| < 2 none, < 32 affirming, < 96 warning, else contraindicated.
# The EAR status is the worst tier of the vector.
package policy

import rego.v1

# 33: "Runtime memory includes executables, scripts, files, and/or objects
# which are not recognized."
default executables := 33

# 97: "A Verifier does not recognize an Attester's hardware or firmware, but
# it should be recognized."
default hardware := 97

# 36: "Elements of the configuration relevant to security are unavailable
# to the Verifier."
default configuration := 36

# 0: "No assertion."
default file_system := 0

default instance_identity := 0

default runtime_opaque := 0

default storage_opaque := 0

default sourced_data := 0

trust_claims := {
	"executables": executables,
	"hardware": hardware,
	"configuration": configuration,
	"file-system": file_system,
	"instance-identity": instance_identity,
	"runtime-opaque": runtime_opaque,
	"storage-opaque": storage_opaque,
	"sourced-data": sourced_data,
}

##### sample (Trustee's test TEE: no hardware, no signature)
#
# Reference values (as Trustee's integration tests register them):
#   launch_digest          array of accepted launch digests, e.g. ["abcde"]
#   svn                    array of accepted SVNs, e.g. ["1"]
#   major_version          platform major version, e.g. 1
#   minimum_minor_version  minimum platform minor version, e.g. 1

# 3: "Only a recognized genuine set of approved executables have been
# loaded during the boot process."
executables := 3 if {
	input.sample
	input.sample.launch_digest in query_reference_value("launch_digest")
}

# 2: "An Attester has passed its hardware and/or firmware verifications
# needed to demonstrate that these are genuine/supported."
hardware := 2 if {
	input.sample
	input.sample.svn in query_reference_value("svn")
	input.sample.platform_version.major == query_reference_value("major_version")
	input.sample.platform_version.minor >= query_reference_value("minimum_minor_version")
}

# 2: "The configuration is a known and approved config."
configuration := 2 if {
	input.sample
	input.sample.debug == false
}

##### snp (AMD SEV-SNP, real or Coffer's simulated secure processor)
#
# Claims read from input.snp (numbers may also be decimal strings and
# booleans may also be 0/1 or "0"/"1", as older Trustee verifiers emit):
#   measurement              launch measurement, hex (96 digits)
#   reported_tcb_bootloader  REPORTED_TCB components
#   reported_tcb_tee
#   reported_tcb_snp
#   reported_tcb_microcode
#   policy_debug_allowed     guest policy DEBUG bit
#   policy_migrate_ma        guest policy MIGRATE_MA bit (optional)
#   policy_smt_allowed       guest policy SMT bit (optional)
#
# Reference values:
#   snp_launch_measurement   accepted measurements: array of hex strings (or one string)
#   snp_bootloader           minimum REPORTED_TCB.bootloader: number, or array
#   snp_tee_svn              minimum REPORTED_TCB.tee         (the smallest
#   snp_snp_svn              minimum REPORTED_TCB.snp          element of an
#   snp_microcode            minimum REPORTED_TCB.microcode    array applies)
#   snp_smt_allowed          optional: required value of the SMT policy bit

executables := 3 if {
	input.snp
	snp_measurement_ok
}

hardware := 2 if {
	input.snp
	tcb_at_least(input.snp.reported_tcb_bootloader, "snp_bootloader")
	tcb_at_least(input.snp.reported_tcb_tee, "snp_tee_svn")
	tcb_at_least(input.snp.reported_tcb_snp, "snp_snp_svn")
	tcb_at_least(input.snp.reported_tcb_microcode, "snp_microcode")
}

configuration := 2 if {
	input.snp
	is_false(input.snp.policy_debug_allowed)
	not snp_migrate_ma
	snp_smt_ok
}

# 96: "The Attester's configuration is unsupportable" - a debuggable guest's
# memory can be read by the host.
configuration := 96 if {
	input.snp
	is_true(input.snp.policy_debug_allowed)
}

snp_measurement_ok if {
	rv := query_reference_value("snp_launch_measurement")
	is_array(rv)
	lower(input.snp.measurement) in {lower(m) | some m in rv; is_string(m)}
}

snp_measurement_ok if {
	rv := query_reference_value("snp_launch_measurement")
	is_string(rv)
	lower(input.snp.measurement) == lower(rv)
}

# A helper rule: `not is_true(input.snp.policy_migrate_ma)` would be false,
# not true, when the claim is absent.
snp_migrate_ma if is_true(input.snp.policy_migrate_ma)

snp_smt_ok if query_reference_value("snp_smt_allowed") == null

snp_smt_ok if {
	want := query_reference_value("snp_smt_allowed")
	is_true(want)
	is_true(input.snp.policy_smt_allowed)
}

snp_smt_ok if {
	want := query_reference_value("snp_smt_allowed")
	is_false(want)
	is_false(input.snp.policy_smt_allowed)
}

# tcb_at_least(actual, id): actual >= the minimum registered under id.
tcb_at_least(actual, id) if {
	min_value := rv_minimum(query_reference_value(id))
	to_number(actual) >= min_value
}

rv_minimum(rv) := to_number(rv) if {
	not is_array(rv)
	rv != null
}

rv_minimum(rv) := min({to_number(x) | some x in rv}) if {
	is_array(rv)
	count(rv) > 0
}

# is_true / is_false accept booleans, 0/1 and "0"/"1"/"true"/"false".
is_true(x) if x == true

is_true(x) if x == 1

is_true(x) if x in {"1", "true"}

is_false(x) if x == false

is_false(x) if x == 0

is_false(x) if x in {"0", "false"}

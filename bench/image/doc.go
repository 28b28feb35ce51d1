// Command bench-image measures `coffer image pull` against the standard
// tools doing the same job — `skopeo copy docker://… oci:` then
// `umoci unpack` — on one image in a local docker-registry, plain and
// JWE-encrypted (same key for both tools), cold, interleaved in the same
// run, plus Coffer's warm-cache re-pull. It prints medians and the
// baseline/Coffer ratios. Run it with bench/image/run.sh.
package main

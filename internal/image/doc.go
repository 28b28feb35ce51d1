// Package image is Coffer's image service: it pulls OCI and Docker images
// from registries and OCI image layouts and unpacks them into a root
// filesystem, treating everything it reads as hostile. It has no host-only
// imports so the guest agent can embed it (confidential mode pulls in the
// guest).
//
// It owns:
//
//   - References (ParseReference): registry references as Docker spells
//     them ("busybox", "host:5000/repo:tag", "repo@sha256:…") and OCI image
//     layouts ("oci:DIR[:TAG]").
//   - Registry access: go-containerregistry's token/basic auth handshake,
//     credentials from a Docker config file (auths only; credential helpers
//     are never executed), a custom CA, and plain HTTP only for loopback
//     registries or one named explicitly insecure — every other http://
//     request, including redirects and token realms, is refused.
//   - Manifests: OCI and Docker v2 manifests and indexes (schema 1 is
//     refused), platform selection in multi-arch indexes (nested indexes up
//     to a small depth), size limits, strict digest and media-type checks.
//   - Blobs: every manifest, config and layer is checked against its
//     digest and size; every layer's uncompressed digest against the
//     config's diff_ids. gzip and zstd layers (zstd window bounded).
//   - The pull pipeline (Puller.Pull): the next layer streams straight from
//     the network through the verifier and decompressor into the unpacker
//     (package unpack) while later layers download in parallel into the
//     content cache; layers are applied in order into a staging directory
//     renamed to the destination only when everything verified, so a failed
//     pull leaves nothing behind.
//   - The content cache (Cache): blobs by digest under DIR/blobs/sha256,
//     written atomically after verification and verified again when read. A
//     pull by digest with a warm cache makes no network request; by tag, one
//     (the manifest).
//   - Push (Push): an OCI layout or a directory (one layer) to a registry,
//     for seeding test registries and moving images between machines.
package image

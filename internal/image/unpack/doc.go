// Package unpack applies OCI image layers (uncompressed tar streams) to a
// root filesystem directory, treating every layer as hostile.
//
// It owns the tar → filesystem step of an image pull:
//
//   - OCI layer semantics: whiteouts (".wh.NAME") and opaque directories
//     (".wh..wh..opq") that hide what lower layers made, never what the same
//     layer made; regular files, directories, symlinks, hardlinks, FIFOs and
//     device nodes (only when running as root); permissions, setuid/setgid,
//     ownership (as root), extended attributes (user.*, security.*,
//     trusted.*) and modification times.
//   - Confinement: every path is resolved with openat2(RESOLVE_IN_ROOT |
//     RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV) against a file descriptor of
//     the root directory, so symlinks (from this layer or earlier ones) are
//     followed as the container will see them — "/" is the root filesystem —
//     and can never lead outside it. The last component of an entry is never
//     followed: it is removed and created anew with O_EXCL/O_NOFOLLOW.
//   - Detection on top of that confinement: an entry (or a hardlink's
//     target) whose path resolves through a symlink with a relative target
//     that climbs above the root ("x" -> "../../etc") is refused, naming
//     the entry and the symlink; so is a path that needs more than
//     MaxSymlinkHops symlinks. Absolute targets ("/var/run" -> "/run") are
//     legitimate and resolve from the root. A symlink entry itself may point
//     anywhere: only resolving through it is checked.
//   - Refusals (ErrUnsafe): absolute entry names, ".." components, NUL
//     bytes, hardlinks whose target is absolute, has "..", is the entry
//     itself or does not exist inside the root, writes through escaping
//     symlinks (above), duplicate entries within a layer, unsupported entry
//     types.
//   - Limits (ErrLimit, all configurable): bytes of the uncompressed tar
//     stream per layer (decompression bombs), bytes of one file, entries per
//     layer, bytes over all layers, path and symlink-target lengths, xattr
//     sizes.
//
// The caller unpacks into a fresh staging directory and renames it into
// place only when every layer applied cleanly, so a refused layer leaves
// nothing half-made. Unpacker is not safe for concurrent use; layers must be
// applied in order. Linux only (openat2 needs Linux 5.6).
package unpack

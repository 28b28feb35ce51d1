// Package guest builds the guest image every Coffer VM boots: a kernel
// (vmlinuz), an initrd (initrd.img) and a manifest (guest.json) that records
// their SHA-256 sums and everything they were built from.
//
// It owns:
//
//   - Fetching the guest kernel (FetchKernel): Debian's
//     linux-image-cloud-amd64, downloaded with `apt-get download` and
//     unpacked with `dpkg-deb -x` into <cache>/kernel/<release>/ (never
//     installed on the host), reused from the cache without network.
//   - The initrd: a reproducible newc cpio written by this package (sorted
//     entries, fixed mtime, uid/gid 0, sequential inode numbers, explicit
//     parent directories), optionally gzip-compressed without name or time
//     in the header. It holds /init (the static coffer-agent), a few empty
//     mount-point directories, /dev/console and /dev/null, the kernel
//     modules Coffer needs with their dependencies under
//     /lib/modules/<release>/, and /etc/coffer/modules.load, which lists
//     those modules in load order (dependencies first, each once) so the
//     agent can finit_module them one by one without parsing modules.dep.
//   - The manifest (Build, Load, Verify): guest.json holds no timestamps or
//     absolute paths, so the same inputs give the same bytes, hence the same
//     launch measurement. Build rebuilds only when the inputs hash changes
//     or the files no longer match their recorded hashes.
//
// Module dependencies come from modules.dep when the kernel directory has
// one, otherwise from each module's .modinfo "depends" field (the Debian
// package ships no modules.dep; depmod creates it at install time). Both
// give the same canonical load order. Soft dependencies and module aliases
// are not followed: the agent loads exactly what modules.load lists.
package guest

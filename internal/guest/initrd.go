package guest

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Compression values for BuildConfig.Compression.
const (
	CompressionNone = "none"
	CompressionGzip = "gzip"
)

// ModulesLoadPath is where the initrd lists the modules the agent loads, one
// path per line relative to /lib/modules/<release>, dependencies first.
const ModulesLoadPath = "/etc/coffer/modules.load"

type entryKind int

const (
	kindDir entryKind = iota
	kindFile
	kindChar
)

// initrdEntry is one file system object of the initrd.
type initrdEntry struct {
	name         string // archive path, no leading "/"
	kind         entryKind
	perm         uint32
	major, minor uint32
	src          string // regular file: host path to copy, or
	data         []byte // inline content when src is empty
	wantSHA256   string // regular file from src: expected content hash
	stripSig     bool   // a kernel module whose appended signature is dropped
}

// initrdSpec describes the whole initrd content.
type initrdSpec struct {
	release    string
	agentPath  string
	agentSHA   string
	modulesDir string
	modules    []string // load order, relative to modulesDir
	// stripSignatures drops modules' appended signatures.
	stripSignatures bool
}

// entries returns the initrd content sorted by name, with every parent
// directory present explicitly.
func (s *initrdSpec) entries() ([]initrdEntry, error) {
	byName := map[string]initrdEntry{}
	add := func(e initrdEntry) error {
		if _, dup := byName[e.name]; dup {
			return fmt.Errorf("initrd: %q added twice", e.name)
		}
		byName[e.name] = e
		return nil
	}
	dirs := []struct {
		name string
		perm uint32
	}{
		{"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"run", 0o755}, {"tmp", 0o1777},
		{"mnt", 0o755}, {"etc", 0o755}, {"etc/coffer", 0o755}, {"lib", 0o755},
		{"lib/modules", 0o755}, {"lib/modules/" + s.release, 0o755},
	}
	for _, d := range dirs {
		if err := add(initrdEntry{name: d.name, kind: kindDir, perm: d.perm}); err != nil {
			return nil, err
		}
	}
	files := []initrdEntry{
		{name: "init", kind: kindFile, perm: 0o755, src: s.agentPath, wantSHA256: s.agentSHA},
		{name: "dev/console", kind: kindChar, perm: 0o600, major: 5, minor: 1},
		{name: "dev/null", kind: kindChar, perm: 0o666, major: 1, minor: 3},
	}
	var load bytes.Buffer
	for _, m := range s.modules {
		if path.IsAbs(m) || path.Clean(m) != m || strings.HasPrefix(m, "../") {
			return nil, fmt.Errorf("initrd: module path %q is not relative to the modules directory", m)
		}
		load.WriteString(m + "\n")
		files = append(files, initrdEntry{
			name: "lib/modules/" + s.release + "/" + m,
			kind: kindFile, perm: 0o644,
			src:      filepath.Join(s.modulesDir, filepath.FromSlash(m)),
			stripSig: s.stripSignatures,
		})
	}
	files = append(files, initrdEntry{name: strings.TrimPrefix(ModulesLoadPath, "/"), kind: kindFile, perm: 0o644, data: load.Bytes()})
	for _, f := range files {
		if err := add(f); err != nil {
			return nil, err
		}
		for d := path.Dir(f.name); d != "."; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = initrdEntry{name: d, kind: kindDir, perm: 0o755}
			}
		}
	}
	out := make([]initrdEntry, 0, len(byName))
	for _, e := range byName {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b initrdEntry) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// writeInitrd writes the initrd cpio, optionally gzip-compressed, to w.
func writeInitrd(w io.Writer, entries []initrdEntry, compression string, mtime int64) error {
	var gz *gzip.Writer
	if compression == CompressionGzip {
		// A zero Header carries no file name and mtime 0, so the
		// compressed bytes depend only on the content.
		gz = gzip.NewWriter(w) // level 9 is 5x slower for 0.2% less
		w = gz
	} else if compression != CompressionNone {
		return fmt.Errorf("unknown initrd compression %q: use %q or %q", compression, CompressionNone, CompressionGzip)
	}
	cw, err := newCPIOWriter(w, mtime)
	if err != nil {
		return err
	}
	for _, e := range entries {
		switch e.kind {
		case kindDir:
			err = cw.Dir(e.name, e.perm)
		case kindChar:
			err = cw.CharDev(e.name, e.perm, e.major, e.minor)
		case kindFile:
			err = writeInitrdFile(cw, e)
		}
		if err != nil {
			return fmt.Errorf("building initrd: %w", err)
		}
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("building initrd: %w", err)
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return fmt.Errorf("building initrd: gzip: %w", err)
		}
	}
	return nil
}

func writeInitrdFile(cw *cpioWriter, e initrdEntry) error {
	if e.src == "" {
		return cw.File(e.name, e.perm, int64(len(e.data)), bytes.NewReader(e.data))
	}
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", e.src)
	}
	if e.stripSig {
		if st.Size() > maxModuleSize {
			return fmt.Errorf("kernel module %s is %d bytes, more than the %d a module may have", e.src, st.Size(), maxModuleSize)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		b, err = stripModuleSignature(b)
		if err != nil {
			return fmt.Errorf("kernel module %s: %w", e.src, err)
		}
		return cw.File(e.name, e.perm, int64(len(b)), bytes.NewReader(b))
	}
	h := sha256.New()
	if err := cw.File(e.name, e.perm, st.Size(), io.TeeReader(f, h)); err != nil {
		return err
	}
	if e.wantSHA256 != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != e.wantSHA256 {
			return fmt.Errorf("%s changed while the initrd was being built (sha256 %s, expected %s): run the build again", e.src, got, e.wantSHA256)
		}
	}
	return nil
}

// maxModuleSize bounds a kernel module read whole to strip its signature.
const maxModuleSize = 64 << 20

// moduleSigMagic ends a signed kernel module. Before it come the
// signature and a 12-byte struct module_signature whose last field is the
// signature's length (big-endian), preceded by the signer's name and key
// id lengths (zero for the PKCS#7 signatures of current kernels).
const moduleSigMagic = "~Module signature appended~\n"

// stripModuleSignature returns the module without its appended signature;
// an unsigned module is returned as is.
func stripModuleSignature(b []byte) ([]byte, error) {
	if !bytes.HasSuffix(b, []byte(moduleSigMagic)) {
		return b, nil
	}
	const infoLen = 12
	end := len(b) - len(moduleSigMagic)
	if end < infoLen {
		return nil, errors.New("signature trailer is truncated")
	}
	info := b[end-infoLen : end]
	signerLen, keyIDLen := int(info[3]), int(info[4])
	sigLen := int(binary.BigEndian.Uint32(info[8:12]))
	cut := end - infoLen - sigLen - signerLen - keyIDLen
	if sigLen <= 0 || cut <= 0 {
		return nil, fmt.Errorf("signature trailer is malformed (signature length %d in a %d-byte file)", sigLen, len(b))
	}
	return b[:cut], nil
}

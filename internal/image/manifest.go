package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types Coffer reads.
const (
	mtOCIManifest    = string(types.OCIManifestSchema1)
	mtOCIIndex       = string(types.OCIImageIndex)
	mtDockerManifest = string(types.DockerManifestSchema2)
	mtDockerList     = string(types.DockerManifestList)
	mtOCIConfig      = string(types.OCIConfigJSON)
	mtDockerConfig   = string(types.DockerConfigJSON)
)

// acceptManifests is the Accept header of manifest requests.
var acceptManifests = strings.Join([]string{mtOCIIndex, mtOCIManifest, mtDockerList, mtDockerManifest}, ", ")

// Compression of a layer, from its media type.
type Compression string

// Layer compressions.
const (
	CompressionNone Compression = "none"
	CompressionGzip Compression = "gzip"
	CompressionZstd Compression = "zstd"
)

// encryptedSuffix marks ocicrypt-encrypted layer media types.
const encryptedSuffix = "+encrypted"

// layerCompression maps a layer media type to its compression and whether
// it is encrypted (ocicrypt), or says why Coffer cannot use the layer.
func layerCompression(mt string) (Compression, bool, error) {
	base, encrypted := strings.CutSuffix(mt, encryptedSuffix)
	if encrypted && !strings.HasPrefix(base, "application/vnd.oci.image.layer.v1.") {
		return "", false, fmt.Errorf("layer media type %s: only OCI layer types can be encrypted", mt)
	}
	switch base {
	case string(types.OCIUncompressedLayer), "application/vnd.docker.image.rootfs.diff.tar":
		return CompressionNone, encrypted, nil
	case string(types.OCILayer), string(types.DockerLayer):
		return CompressionGzip, encrypted, nil
	case string(types.OCILayerZStd):
		return CompressionZstd, encrypted, nil
	}
	if strings.Contains(mt, "nondistributable") || strings.Contains(mt, "foreign") {
		return "", false, fmt.Errorf("layer media type %s: foreign (non-distributable) layers are refused: Coffer fetches only from the image's registry", mt)
	}
	return "", false, fmt.Errorf("layer media type %q is not a container image layer Coffer can unpack (tar, tar+gzip, tar+zstd, optionally +encrypted)", mt)
}

var hexRE = regexp.MustCompile(`^[a-f0-9]{64}$`)

// checkDigest accepts only well-formed sha256 digests (they name files).
func checkDigest(h v1.Hash) error {
	if h.Algorithm != "sha256" || !hexRE.MatchString(h.Hex) {
		return fmt.Errorf("digest %q: only sha256 digests of 64 lowercase hex digits are accepted", h.String())
	}
	return nil
}

func checkDescriptor(d v1.Descriptor, what string, maxSize int64) error {
	if err := checkDigest(d.Digest); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if d.Size <= 0 || d.Size > maxSize {
		return fmt.Errorf("%s %s: size %d is out of range (1 to %d bytes)", what, d.Digest, d.Size, maxSize)
	}
	return nil
}

// kindOf tells an index from a manifest, using the served media type and
// the document's own mediaType field, which must agree when both are set.
func kindOf(served string, raw []byte) (string, error) {
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Layers        json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return "", fmt.Errorf("manifest is not valid JSON: %w", err)
	}
	if probe.SchemaVersion != 2 {
		return "", fmt.Errorf("manifest schemaVersion %d is not supported (only 2; Docker schema 1 images must be re-pushed)", probe.SchemaVersion)
	}
	served, _, _ = strings.Cut(served, ";")
	served = strings.TrimSpace(served)
	mt := probe.MediaType
	if mt == "" {
		mt = served
	}
	switch mt {
	case mtOCIIndex, mtDockerList, mtOCIManifest, mtDockerManifest:
	case "", "application/json", "application/octet-stream":
		switch {
		case probe.Manifests != nil && probe.Layers == nil:
			mt = mtOCIIndex
		case probe.Layers != nil && probe.Manifests == nil:
			mt = mtOCIManifest
		default:
			return "", fmt.Errorf("manifest has no media type and is neither an index nor an image manifest")
		}
	default:
		return "", fmt.Errorf("manifest media type %q is not a container image (OCI or Docker v2 manifest or index)", mt)
	}
	if probe.MediaType != "" && isManifestType(served) && served != probe.MediaType {
		return "", fmt.Errorf("manifest says media type %s but was served as %s", probe.MediaType, served)
	}
	return mt, nil
}

func isManifestType(mt string) bool {
	switch mt {
	case mtOCIIndex, mtDockerList, mtOCIManifest, mtDockerManifest:
		return true
	}
	return false
}

func isIndex(mt string) bool { return mt == mtOCIIndex || mt == mtDockerList }

// ParseIndex parses and checks an image index.
func ParseIndex(raw []byte, l Limits) (*v1.IndexManifest, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse image index: %w", err)
	}
	if len(idx.Manifests) == 0 {
		return nil, fmt.Errorf("image index lists no manifests")
	}
	if len(idx.Manifests) > 1024 {
		return nil, fmt.Errorf("image index lists %d manifests (limit 1024)", len(idx.Manifests))
	}
	for i, d := range idx.Manifests {
		if err := checkDescriptor(d, fmt.Sprintf("index entry %d", i), l.MaxManifestBytes); err != nil {
			return nil, err
		}
	}
	return idx, nil
}

// ParseManifest parses and checks an image manifest.
func ParseManifest(raw []byte, l Limits) (*v1.Manifest, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse image manifest: %w", err)
	}
	switch string(m.Config.MediaType) {
	case mtOCIConfig, mtDockerConfig:
	default:
		return nil, fmt.Errorf("manifest config media type %q is not a container image config (an artifact, not an image?)", m.Config.MediaType)
	}
	if err := checkDescriptor(m.Config, "image config", l.MaxConfigBytes); err != nil {
		return nil, err
	}
	if len(m.Layers) > l.MaxLayers {
		return nil, fmt.Errorf("manifest has %d layers (limit %d)", len(m.Layers), l.MaxLayers)
	}
	for i, d := range m.Layers {
		if err := checkDescriptor(d, fmt.Sprintf("layer %d", i+1), l.MaxLayerBlobBytes); err != nil {
			return nil, err
		}
		if len(d.URLs) > 0 {
			return nil, fmt.Errorf("layer %d: layers with external URLs are refused", i+1)
		}
		if _, _, err := layerCompression(string(d.MediaType)); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return m, nil
}

// ParseConfig parses an image config and checks it matches the manifest.
func ParseConfig(raw []byte, m *v1.Manifest) (*v1.ConfigFile, error) {
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse image config: %w", err)
	}
	if cfg.RootFS.Type != "layers" {
		return nil, fmt.Errorf("image config rootfs type %q is not \"layers\"", cfg.RootFS.Type)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("image config lists %d layer diff_ids but the manifest has %d layers", len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	for i, d := range cfg.RootFS.DiffIDs {
		if err := checkDigest(d); err != nil {
			return nil, fmt.Errorf("diff_id of layer %d: %w", i+1, err)
		}
	}
	return cfg, nil
}

// ParsePlatform parses "os/arch[/variant]".
func ParsePlatform(s string) (v1.Platform, error) {
	if s == "" {
		return DefaultPlatform(), nil
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return v1.Platform{}, fmt.Errorf("bad platform %q: use os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8", s)
	}
	return *p, nil
}

// DefaultPlatform is the platform of this process.
func DefaultPlatform() v1.Platform {
	p := v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if p.Architecture == "arm64" {
		p.Variant = "v8"
	}
	return p
}

func normVariant(arch, variant string) string {
	if arch == "arm64" && variant == "" {
		return "v8"
	}
	return variant
}

// platformMatches is true when have (from an index) runs on want.
func platformMatches(want v1.Platform, have *v1.Platform) bool {
	if have == nil {
		return false
	}
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	return want.Variant == "" || normVariant(want.Architecture, want.Variant) == normVariant(have.Architecture, have.Variant)
}

// selectPlatform picks the index entry for want.
func selectPlatform(idx *v1.IndexManifest, want v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, d := range idx.Manifests {
		if platformMatches(want, d.Platform) {
			return d, nil
		}
		if d.Platform != nil && d.Platform.OS != "unknown" {
			have = append(have, d.Platform.String())
		}
	}
	if len(idx.Manifests) == 1 && idx.Manifests[0].Platform == nil {
		return idx.Manifests[0], nil // the config's platform is checked later
	}
	return v1.Descriptor{}, fmt.Errorf("no image for platform %s in the index (it has: %s); choose one with --platform", want.String(), strings.Join(have, ", "))
}

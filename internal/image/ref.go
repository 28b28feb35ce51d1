package image

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Reference names an image: in a registry, or in an OCI image layout.
type Reference struct {
	// Registry reference (nil for a layout).
	Registry name.Reference
	// LayoutDir and LayoutTag name an image in an OCI image layout
	// ("oci:DIR[:TAG]"); LayoutTag is matched against the
	// org.opencontainers.image.ref.name annotation.
	LayoutDir, LayoutTag string
	// Insecure allows plain HTTP to the registry.
	Insecure bool
}

// String gives the reference back in the form it was parsed from.
func (r Reference) String() string {
	if r.Registry != nil {
		return r.Registry.Name()
	}
	if r.LayoutTag != "" {
		return "oci:" + r.LayoutDir + ":" + r.LayoutTag
	}
	return "oci:" + r.LayoutDir
}

// IsLayout is true for an OCI image layout reference.
func (r Reference) IsLayout() bool { return r.Registry == nil }

// ParseReference parses "oci:DIR[:TAG]" or a registry reference. insecure
// allows plain HTTP to that registry.
func ParseReference(s string, insecure bool) (Reference, error) {
	if rest, ok := strings.CutPrefix(s, "oci:"); ok {
		dir, tag := rest, ""
		if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i+1:], "/") {
			dir, tag = rest[:i], rest[i+1:]
		}
		if dir == "" {
			return Reference{}, fmt.Errorf("image reference %q: the OCI layout directory is empty (use oci:DIR[:TAG])", s)
		}
		return Reference{LayoutDir: filepath.Clean(dir), LayoutTag: tag}, nil
	}
	if strings.Contains(s, "://") {
		return Reference{}, fmt.Errorf("image reference %q: leave out the scheme (use host[:port]/repo[:tag], with --insecure for plain HTTP)", s)
	}
	if at := strings.Index(s, "@"); at >= 0 {
		before := s[:at]
		if c := strings.LastIndex(before, ":"); c > strings.LastIndex(before, "/") {
			// go-containerregistry would drop the tag: a policy scope or
			// a reader could then go by a name the pull does not use.
			return Reference{}, fmt.Errorf("image reference %q names both a tag and a digest: give one (the digest pins the image)", s)
		}
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(s, opts...)
	if err != nil {
		return Reference{}, fmt.Errorf("image reference %q: %w", s, err)
	}
	return Reference{Registry: r, Insecure: insecure}, nil
}

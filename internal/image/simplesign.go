package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.yaml.in/yaml/v3"
)

// Lookaside is the signature storage configuration of containers/image
// (registries.d): where GPG simple signatures of each registry's images
// are kept, as file:// or https:// URLs.
type Lookaside struct {
	def    string
	scopes map[string]string
}

type lookasideEntry struct {
	Lookaside string `yaml:"lookaside"`
	Sigstore  string `yaml:"sigstore"` // the older name
}

func (e lookasideEntry) url() string {
	if e.Lookaside != "" {
		return e.Lookaside
	}
	return e.Sigstore
}

// DefaultRegistriesD is where containers/image reads registries.d.
const DefaultRegistriesD = "/etc/containers/registries.d"

// LoadLookaside reads every *.yaml file of a registries.d directory.
func LoadLookaside(dir string) (*Lookaside, error) {
	l := &Lookaside{scopes: map[string]string{}}
	names, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("registries.d: %w", err)
		}
		if len(b) > maxPolicyFile {
			return nil, fmt.Errorf("registries.d file %s is larger than %d bytes", n, maxPolicyFile)
		}
		var doc struct {
			DefaultDocker *lookasideEntry           `yaml:"default-docker"`
			Docker        map[string]lookasideEntry `yaml:"docker"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("registries.d file %s: %w", n, err)
		}
		if doc.DefaultDocker != nil && doc.DefaultDocker.url() != "" {
			if l.def != "" {
				return nil, fmt.Errorf("registries.d: default-docker is set in more than one file (%s)", n)
			}
			l.def = doc.DefaultDocker.url()
		}
		for scope, e := range doc.Docker {
			if _, dup := l.scopes[scope]; dup {
				return nil, fmt.Errorf("registries.d: scope %q is configured twice (%s)", scope, n)
			}
			if e.url() != "" {
				l.scopes[scope] = e.url()
			}
		}
	}
	return l, nil
}

// base is the lookaside URL for ref: the most specific scope, else the
// default.
func (l *Lookaside) base(ref Reference) string {
	repo := dockerName(ref.Registry.Context().Name())
	for s := repo; ; {
		if u, ok := l.scopes[s]; ok {
			return u
		}
		i := strings.LastIndex(s, "/")
		if i < 0 {
			break
		}
		s = s[:i]
	}
	return l.def
}

// signatures reads signature-1, signature-2, … of digest d until one is
// missing (at most maxSignatures).
func (l *Lookaside) signatures(ctx context.Context, ref Reference, d v1.Hash, rt http.RoundTripper) ([][]byte, error) {
	base := l.base(ref)
	if base == "" {
		return nil, fmt.Errorf("no lookaside signature storage is configured for %s (registries.d)", dockerName(ref.Registry.Context().Name()))
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("lookaside URL %q: %w", base, err)
	}
	var out [][]byte
	for i := 1; i <= maxSignatures; i++ {
		p := fmt.Sprintf("%s/%s@%s=%s/signature-%d", strings.TrimSuffix(u.Path, "/"), ref.Registry.Context().RepositoryStr(), d.Algorithm, d.Hex, i)
		var b []byte
		switch u.Scheme {
		case "file":
			f, err := os.Open(p)
			if errors.Is(err, os.ErrNotExist) {
				return out, nil
			}
			if err != nil {
				return nil, err
			}
			b, err = readLimited(f, maxPayload, "signature")
			f.Close()
			if err != nil {
				return nil, err
			}
		case "https", "http": // http only to loopback: the guard refuses the rest
			su := *u
			su.Path = p
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, su.String(), nil)
			if err != nil {
				return nil, err
			}
			resp, err := (&http.Client{Transport: rt}).Do(req)
			if err != nil {
				return nil, fmt.Errorf("lookaside signature: %w", err)
			}
			if resp.StatusCode == http.StatusNotFound {
				resp.Body.Close()
				return out, nil
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				return nil, fmt.Errorf("lookaside signature %s: HTTP %s", su.String(), resp.Status)
			}
			b, err = readLimited(resp.Body, maxPayload, "signature")
			resp.Body.Close()
			if err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("lookaside URL %q: only file:// and https:// are supported", base)
		}
		out = append(out, b)
	}
	return out, nil
}

const simpleSigType = "atomic container signature"

func (p *Puller) signedBy(ctx context.Context, r Requirement, img *Image) error {
	if img.Ref.IsLayout() {
		return errors.New("GPG signatures are looked up for registry images only (not OCI layouts)")
	}
	if p.o.Lookaside == nil {
		return errors.New("no registries.d configuration: give the lookaside signature storage (--registries-d DIR)")
	}
	rt, err := baseTransport(Reference{}, p.o.CAFile, p.o.Transport)
	if err != nil {
		return err
	}
	sigs, err := p.o.Lookaside.signatures(ctx, img.Ref, img.signedDigest(), rt)
	if err != nil {
		return err
	}
	if len(sigs) == 0 {
		return fmt.Errorf("the image %s has no GPG signature in the lookaside storage", img.signedDigest())
	}
	var why []string
	for _, s := range sigs {
		if err := checkGPGSignature(r, img, s); err != nil {
			why = append(why, err.Error())
			continue
		}
		return nil
	}
	return fmt.Errorf("no signature is valid: %s", strings.Join(why, "; "))
}

func checkGPGSignature(r Requirement, img *Image, sig []byte) error {
	md, err := openpgp.ReadMessage(bytes.NewReader(sig), r.keyring, nil, nil)
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	payload, err := readLimited(md.UnverifiedBody, maxPayload, "signed payload")
	if err != nil {
		return err
	}
	// The signature is checked once the body was read to its end.
	if _, err := io.Copy(io.Discard, md.UnverifiedBody); err != nil {
		return err
	}
	if !md.IsSigned || md.SignedBy == nil || md.SignatureError != nil {
		return errors.New("signature not made by a trusted key")
	}
	var ss simpleSigning
	if err := json.Unmarshal(payload, &ss); err != nil {
		return fmt.Errorf("signed payload: %w", err)
	}
	if ss.Critical.Type != simpleSigType {
		return fmt.Errorf("signed payload type %q is not %q", ss.Critical.Type, simpleSigType)
	}
	if ss.Critical.Image.DockerManifestDigest != img.signedDigest().String() {
		return fmt.Errorf("signature is for %s, not %s", ss.Critical.Image.DockerManifestDigest, img.signedDigest())
	}
	return checkIdentity(r.SignedIdentity, img.Ref, ss.Critical.Identity.DockerReference)
}

// readKeyring reads a GPG keyring, binary or ASCII-armored.
func readKeyring(b []byte) (openpgp.EntityList, error) {
	if kr, err := openpgp.ReadKeyRing(bytes.NewReader(b)); err == nil && len(kr) > 0 {
		return kr, nil
	}
	kr, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("GPG keyring: %w", err)
	}
	return kr, nil
}

package image

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrPolicyDenied marks an image the signature policy refuses.
var ErrPolicyDenied = errors.New("signature policy denied the image")

// Policy is a containers-policy.json (the format of containers/image,
// podman, skopeo and CoCo's image-rs): requirements by transport and scope,
// with a default.
type Policy struct {
	Default    []Requirement                       `json:"default"`
	Transports map[string]map[string][]Requirement `json:"transports"`
}

// Requirement is one policy requirement. Every requirement that applies
// must be satisfied.
type Requirement struct {
	Type           string             `json:"type"` // insecureAcceptAnything, reject, sigstoreSigned, signedBy
	KeyPath        string             `json:"keyPath,omitempty"`
	KeyPaths       []string           `json:"keyPaths,omitempty"`
	KeyData        []byte             `json:"keyData,omitempty"` // base64 in JSON
	KeyType        string             `json:"keyType,omitempty"`
	SignedIdentity *SignedIdentity    `json:"signedIdentity,omitempty"`
	keys           []crypto.PublicKey // sigstoreSigned
	keyring        openpgp.EntityList // signedBy
}

// SignedIdentity says which docker-reference a signature must name.
type SignedIdentity struct {
	Type             string `json:"type"` // matchRepoDigestOrExact (default), matchRepository, exactReference, exactRepository
	DockerReference  string `json:"dockerReference,omitempty"`
	DockerRepository string `json:"dockerRepository,omitempty"`
}

// maxPolicyFile bounds the policy file read.
const maxPolicyFile = 1 << 20

// LoadPolicy reads and checks a policy file; key files are read now.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signature policy: %w", err)
	}
	if len(b) > maxPolicyFile {
		return nil, fmt.Errorf("signature policy %s is larger than %d bytes", path, maxPolicyFile)
	}
	return ParsePolicy(b)
}

// ParsePolicy parses and checks a policy document.
func ParsePolicy(b []byte) (*Policy, error) {
	var p Policy
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("signature policy: %w", err)
	}
	if len(p.Default) == 0 {
		return nil, errors.New(`signature policy: "default" must list at least one requirement (e.g. [{"type":"reject"}])`)
	}
	check := func(where string, reqs []Requirement) error {
		for i := range reqs {
			if err := reqs[i].prepare(); err != nil {
				return fmt.Errorf("signature policy %s, requirement %d: %w", where, i+1, err)
			}
		}
		return nil
	}
	if err := check("default", p.Default); err != nil {
		return nil, err
	}
	for t, scopes := range p.Transports {
		for scope, reqs := range scopes {
			if len(reqs) == 0 {
				return nil, fmt.Errorf("signature policy transports.%s[%q] lists no requirement", t, scope)
			}
			if err := check(fmt.Sprintf("transports.%s[%q]", t, scope), reqs); err != nil {
				return nil, err
			}
		}
	}
	return &p, nil
}

func (r *Requirement) prepare() error {
	switch r.Type {
	case "insecureAcceptAnything", "reject":
		return nil
	case "signedBy":
		if r.KeyType != "GPGKeys" {
			return fmt.Errorf("signedBy keyType %q is not supported (only GPGKeys)", r.KeyType)
		}
	case "sigstoreSigned":
	default:
		return fmt.Errorf("unknown requirement type %q", r.Type)
	}
	var pems [][]byte
	paths := append([]string{}, r.KeyPaths...)
	if r.KeyPath != "" {
		paths = append(paths, r.KeyPath)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("sigstoreSigned key: %w", err)
		}
		pems = append(pems, b)
	}
	if len(r.KeyData) > 0 {
		pems = append(pems, r.KeyData)
	}
	if len(pems) == 0 {
		return fmt.Errorf("%s needs keyPath, keyPaths or keyData (keyless Fulcio signatures are not supported)", r.Type)
	}
	if r.Type == "signedBy" {
		for _, b := range pems {
			kr, err := readKeyring(b)
			if err != nil {
				return err
			}
			r.keyring = append(r.keyring, kr...)
		}
		return r.checkIdentityType()
	}
	for _, b := range pems {
		k, err := ParsePublicKey(b)
		if err != nil {
			return err
		}
		r.keys = append(r.keys, k)
	}
	return r.checkIdentityType()
}

func (r *Requirement) checkIdentityType() error {
	if id := r.SignedIdentity; id != nil {
		switch id.Type {
		case "matchRepoDigestOrExact", "matchRepository", "exactReference", "exactRepository":
		default:
			return fmt.Errorf("signedIdentity type %q is not supported", id.Type)
		}
	}
	return nil
}

// ParsePublicKey reads a PEM public key (PKIX: ECDSA, RSA, Ed25519).
func ParsePublicKey(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("public key is not PEM")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return k, nil
}

// requirementsFor picks the most specific scope for ref.
func (p *Policy) requirementsFor(ref Reference) (string, []Requirement) {
	if ref.IsLayout() {
		if reqs, ok := p.Transports["oci"][ref.LayoutDir]; ok {
			return "oci:" + ref.LayoutDir, reqs
		}
		return "default", p.Default
	}
	scopes := p.Transports["docker"]
	repo := dockerName(ref.Registry.Context().Name())
	full := repo + tagOrDigestSuffix(ref)
	cands := []string{full, repo}
	for s := repo; strings.Contains(s, "/"); {
		s = s[:strings.LastIndex(s, "/")]
		cands = append(cands, s)
	}
	host := dockerName(ref.Registry.Context().RegistryStr())
	for h := host; strings.Contains(h, "."); {
		h = h[strings.Index(h, ".")+1:]
		cands = append(cands, "*."+h)
	}
	for _, c := range cands {
		if reqs, ok := scopes[c]; ok {
			return "docker:" + c, reqs
		}
	}
	return "default", p.Default
}

func tagOrDigestSuffix(ref Reference) string {
	id := ref.Registry.Identifier()
	if strings.HasPrefix(id, "sha256:") {
		return "@" + id
	}
	return ":" + id
}

// dockerName spells Docker Hub as containers/image does.
func dockerName(s string) string {
	if rest, ok := strings.CutPrefix(s, "index.docker.io"); ok {
		return "docker.io" + rest
	}
	return s
}

// Simple-signing payload of cosign/sigstore signatures.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

const (
	cosignSigType       = "cosign container image signature"
	cosignPayloadType   = "application/vnd.dev.cosign.simplesigning.v1+json"
	cosignSigAnnotation = "dev.cosignproject.cosign/signature"
	maxSignatures       = 16
	maxPayload          = 64 << 10
)

// Verify checks img against the policy; the error says which requirement
// of which scope refused it, and why.
func (p *Puller) Verify(ctx context.Context, pol *Policy, img *Image) error {
	scope, reqs := pol.requirementsFor(img.Ref)
	for i, r := range reqs {
		if err := p.satisfies(ctx, r, img); err != nil {
			return fmt.Errorf("%w: %s: requirement %d (%s) of scope %s: %v", ErrPolicyDenied, img.Ref, i+1, r.Type, scope, err)
		}
	}
	return nil
}

func (p *Puller) satisfies(ctx context.Context, r Requirement, img *Image) error {
	switch r.Type {
	case "insecureAcceptAnything":
		return nil
	case "reject":
		return errors.New("the policy rejects every image here")
	case "sigstoreSigned":
		return p.sigstoreSigned(ctx, r, img)
	case "signedBy":
		return p.signedBy(ctx, r, img)
	}
	return fmt.Errorf("requirement type %q is not supported", r.Type)
}

// signedDigest is the digest signatures name: the one the reference
// resolved to (the index for a multi-arch image).
func (img *Image) signedDigest() v1.Hash {
	if img.IndexDigest != nil {
		return *img.IndexDigest
	}
	return img.Digest
}

func (p *Puller) sigstoreSigned(ctx context.Context, r Requirement, img *Image) error {
	rs, ok := img.src.(*registrySource)
	if !ok {
		return errors.New("sigstore signatures are read from registries only (not from OCI layouts)")
	}
	sigs, err := fetchSignatures(ctx, rs, img.signedDigest(), p.o.Limits)
	if err != nil {
		return err
	}
	if len(sigs) == 0 {
		return fmt.Errorf("the image %s has no sigstore signature", img.signedDigest())
	}
	var why []string
	for _, s := range sigs {
		if err := checkSignature(r, img, s); err != nil {
			why = append(why, err.Error())
			continue
		}
		return nil
	}
	return fmt.Errorf("no signature is valid: %s", strings.Join(why, "; "))
}

type signature struct {
	payload, sig []byte
}

// sigTag is where cosign-style signatures of digest d live.
func sigTag(d v1.Hash) string { return d.Algorithm + "-" + d.Hex + ".sig" }

// fetchSignatures reads the signature manifest and its payloads.
func fetchSignatures(ctx context.Context, rs *registrySource, d v1.Hash, l Limits) ([]signature, error) {
	raw, _, err := rs.fetchManifest(ctx, sigTag(d))
	if err != nil {
		if strings.Contains(err.Error(), "MANIFEST_UNKNOWN") || strings.Contains(err.Error(), "NOT_FOUND") || strings.Contains(err.Error(), "404") {
			return nil, nil
		}
		return nil, fmt.Errorf("fetch signatures: %w", err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("signature manifest: %w", err)
	}
	var out []signature
	for i, layer := range m.Layers {
		if i >= maxSignatures {
			break
		}
		if string(layer.MediaType) != cosignPayloadType {
			continue
		}
		if err := checkDescriptor(layer, "signature payload", maxPayload); err != nil {
			return nil, err
		}
		sig, err := base64.StdEncoding.DecodeString(layer.Annotations[cosignSigAnnotation])
		if err != nil || len(sig) == 0 {
			continue
		}
		rc, err := rs.blob(ctx, layer)
		if err != nil {
			return nil, err
		}
		payload, err := readVerified(rc, layer, "signature payload")
		rc.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, signature{payload: payload, sig: sig})
	}
	return out, nil
}

func checkSignature(r Requirement, img *Image, s signature) error {
	sum := sha256.Sum256(s.payload)
	verified := false
	for _, k := range r.keys {
		if verifyWith(k, sum[:], s.payload, s.sig) {
			verified = true
			break
		}
	}
	if !verified {
		return errors.New("signature not made by a trusted key")
	}
	var ss simpleSigning
	if err := json.Unmarshal(s.payload, &ss); err != nil {
		return fmt.Errorf("signed payload: %w", err)
	}
	if ss.Critical.Type != cosignSigType {
		return fmt.Errorf("signed payload type %q is not %q", ss.Critical.Type, cosignSigType)
	}
	if ss.Critical.Image.DockerManifestDigest != img.signedDigest().String() {
		return fmt.Errorf("signature is for %s, not %s", ss.Critical.Image.DockerManifestDigest, img.signedDigest())
	}
	return checkIdentity(r.SignedIdentity, img.Ref, ss.Critical.Identity.DockerReference)
}

func verifyWith(k crypto.PublicKey, digest, payload, sig []byte) bool {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) == nil || rsa.VerifyPSS(k, crypto.SHA256, digest, sig, nil) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, payload, sig)
	}
	return false
}

// checkIdentity compares the signed docker-reference with the reference
// pulled, as the policy's signedIdentity says.
func checkIdentity(id *SignedIdentity, ref Reference, signed string) error {
	typ := "matchRepoDigestOrExact"
	if id != nil {
		typ = id.Type
	}
	pulledRepo := dockerName(ref.Registry.Context().Name())
	signedRef, err := ParseReference(signed, false)
	if err != nil || signedRef.Registry == nil {
		return fmt.Errorf("signed identity %q is not a docker reference", signed)
	}
	signedRepo := dockerName(signedRef.Registry.Context().Name())
	hasTag := strings.Contains(signed[strings.LastIndex(signed, "/")+1:], ":") || strings.Contains(signed, "@")
	signedFull := signedRepo
	if hasTag {
		signedFull += tagOrDigestSuffix(signedRef)
	}
	pulledFull := pulledRepo + tagOrDigestSuffix(ref)
	var ok bool
	switch typ {
	case "matchRepoDigestOrExact":
		if strings.HasPrefix(tagOrDigestSuffix(ref), "@") {
			ok = signedRepo == pulledRepo
		} else {
			ok = signedFull == pulledFull
		}
	case "matchRepository":
		ok = signedRepo == pulledRepo
	case "exactReference":
		ok = signedFull == dockerName(id.DockerReference)
	case "exactRepository":
		ok = signedRepo == dockerName(id.DockerRepository)
	}
	if !ok {
		return fmt.Errorf("signed identity %q does not match %s (signedIdentity %s)", signed, pulledFull, typ)
	}
	return nil
}

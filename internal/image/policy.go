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
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/coffer-project/coffer/internal/jsonstrict"

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
	// Type is matchRepoDigestOrExact (the default), matchExact,
	// matchRepository, exactReference, exactRepository or remapIdentity.
	Type             string `json:"type"`
	DockerReference  string `json:"dockerReference,omitempty"`  // exactReference
	DockerRepository string `json:"dockerRepository,omitempty"` // exactRepository
	Prefix           string `json:"prefix,omitempty"`           // remapIdentity
	SignedPrefix     string `json:"signedPrefix,omitempty"`     // remapIdentity
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

// ParsePolicy parses and checks a policy document. It is strict where
// encoding/json is lenient and containers/image is not: a member named
// twice, or a field spelled in another case ("TYPE"), is an error, not a
// silent choice of one of them.
func ParsePolicy(b []byte) (*Policy, error) {
	if err := strictPolicyJSON(b); err != nil {
		return nil, fmt.Errorf("signature policy: %w", err)
	}
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
			if t == "oci" && scope != "" {
				if err := checkLayoutScope(scope); err != nil {
					return nil, fmt.Errorf("signature policy transports.oci[%q]: %w", scope, err)
				}
			}
			if t == "docker" && scope != "" {
				if err := checkDockerScope(scope); err != nil {
					return nil, fmt.Errorf("signature policy transports.docker[%q]: %w", scope, err)
				}
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
	given := 0
	for _, set := range []bool{r.KeyPath != "", len(r.KeyPaths) > 0, len(r.KeyData) > 0} {
		if set {
			given++
		}
	}
	if given != 1 {
		return fmt.Errorf("%s needs keyPath, keyPaths or keyData: exactly one of them (%d given; keyless Fulcio signatures are not supported)", r.Type, given)
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

// checkIdentityType checks the signedIdentity: a known type with the
// fields it needs and no others (as containers/image does).
func (r *Requirement) checkIdentityType() error {
	id := r.SignedIdentity
	if id == nil {
		return nil
	}
	fields := map[string]string{"dockerReference": id.DockerReference, "dockerRepository": id.DockerRepository, "prefix": id.Prefix, "signedPrefix": id.SignedPrefix}
	var need []string
	switch id.Type {
	case "matchRepoDigestOrExact", "matchExact", "matchRepository":
	case "exactReference":
		need = []string{"dockerReference"}
	case "exactRepository":
		need = []string{"dockerRepository"}
	case "remapIdentity":
		need = []string{"prefix", "signedPrefix"}
	default:
		return fmt.Errorf("signedIdentity type %q is not supported (matchRepoDigestOrExact, matchExact, matchRepository, exactReference, exactRepository, remapIdentity)", id.Type)
	}
	for _, f := range need {
		if fields[f] == "" {
			return fmt.Errorf("signedIdentity %s needs %q", id.Type, f)
		}
		delete(fields, f)
	}
	for _, f := range []string{"dockerReference", "dockerRepository", "prefix", "signedPrefix"} {
		if fields[f] != "" {
			return fmt.Errorf("signedIdentity %s does not take %q", id.Type, f)
		}
	}
	switch id.Type {
	case "exactReference":
		ref, err := parseDockerRef(id.DockerReference)
		if err != nil {
			return fmt.Errorf("signedIdentity exactReference: %w", err)
		}
		if ref.suffix == "" {
			return fmt.Errorf("signedIdentity exactReference %q names no tag or digest (use exactRepository for a repository)", id.DockerReference)
		}
	case "exactRepository":
		if _, err := parseDockerRef(id.DockerRepository); err != nil {
			return fmt.Errorf("signedIdentity exactRepository: %w", err)
		}
	case "remapIdentity":
		for _, p := range []string{id.Prefix, id.SignedPrefix} {
			if !validRemapPrefix(p) {
				return fmt.Errorf("signedIdentity remapIdentity prefix %q is not valid: give a host[:port], a namespace or a repository in full (e.g. docker.io/library, not library), without tag or digest", p)
			}
		}
	}
	return nil
}

// Reference grammar pieces for remapIdentity prefixes (the distribution
// reference grammar, without IPv6 literals).
const (
	refDomain    = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?`
	refComponent = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
)

var remapPrefixRE = regexp.MustCompile(`^` + refDomain + `(?:/` + refComponent + `)*$`)

// validRemapPrefix reports whether s is a host[:port], or a namespace or
// repository that starts with one.
func validRemapPrefix(s string) bool { return remapPrefixRE.MatchString(s) }

// checkLayoutScope checks a transports.oci scope: an absolute, clean
// directory path other than "/" (use "" for every layout).
func checkLayoutScope(scope string) error {
	switch {
	case !strings.HasPrefix(scope, "/"):
		return errors.New("an oci scope must be an absolute directory path")
	case scope == "/":
		return errors.New(`"/" is not a scope: use "" for every layout`)
	case filepath.Clean(scope) != scope:
		return fmt.Errorf("the scope is not a clean path: write %q", filepath.Clean(scope))
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

// requirementsFor picks the requirements for ref, as containers/image
// does: the most specific scope of its transport that the policy lists,
// else the transport's "" scope, else "default".
func (p *Policy) requirementsFor(ref Reference) (string, []Requirement) {
	var transport string
	var cands []string
	if ref.IsLayout() {
		transport, cands = "oci", layoutScopes(resolveLayoutDir(ref.LayoutDir))
	} else {
		transport, cands = "docker", dockerScopes(ref)
	}
	scopes := p.Transports[transport]
	for _, c := range cands {
		if reqs, ok := scopes[c]; ok {
			return transport + ":" + c, reqs
		}
	}
	if reqs, ok := scopes[""]; ok {
		return transport + `:"" (every ` + transport + ` image)`, reqs
	}
	return "default", p.Default
}

// dockerScopes are the docker scopes that can match ref, most specific
// first: the full reference, the repository, each parent namespace, the
// host, then "*.domain" wildcards.
func dockerScopes(ref Reference) []string {
	repo := dockerName(ref.Registry.Context().Name())
	cands := []string{repo + tagOrDigestSuffix(ref), repo}
	for s := repo; strings.Contains(s, "/"); {
		s = s[:strings.LastIndex(s, "/")]
		cands = append(cands, s)
	}
	host := dockerName(ref.Registry.Context().RegistryStr())
	// Wildcards name domains: a port is not part of them (containers/image
	// strips it too), so "*.example.com" covers reg.example.com:5000.
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for h := host; strings.Contains(h, "."); {
		h = h[strings.Index(h, ".")+1:]
		cands = append(cands, "*."+h)
	}
	return cands
}

// layoutScopes are the oci scopes that can match a layout in dir (an
// absolute path), most specific first: the directory, then each parent
// but "/".
func layoutScopes(dir string) []string {
	var cands []string
	for d := dir; d != "/" && strings.HasPrefix(d, "/"); d = filepath.Dir(d) {
		cands = append(cands, d)
	}
	return cands
}

// resolveLayoutDir makes a layout directory absolute, with symlinks
// resolved where it exists, as containers/image names layouts in policies.
func resolveLayoutDir(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return filepath.Clean(dir)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	return abs
}

func tagOrDigestSuffix(ref Reference) string {
	id := ref.Registry.Identifier()
	if strings.HasPrefix(id, "sha256:") {
		return "@" + id
	}
	return ":" + id
}

// dockerName spells Docker Hub as containers/image does.
// checkDockerScope refuses a docker scope that can never match (a typo
// would otherwise leave the images it meant under a broader scope): a
// scope is "*.domain", or a registry host (with a dot, a port or
// "localhost") optionally followed by a namespace or repository and a tag
// or digest, as containers/image requires.
func checkDockerScope(scope string) error {
	if rest, ok := strings.CutPrefix(scope, "*."); ok {
		if rest == "" || strings.ContainsAny(rest, "/:*@") {
			return errors.New(`a wildcard scope is "*." followed by a domain`)
		}
		return nil
	}
	host, _, _ := strings.Cut(scope, "/")
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		return fmt.Errorf("a scope starts with a registry host (e.g. docker.io/%s)", scope)
	}
	var err error
	switch {
	case strings.Contains(scope, "@"):
		_, err = name.NewDigest(scope)
	case strings.LastIndex(scope, ":") > strings.LastIndex(scope, "/"):
		_, err = name.NewTag(scope)
	case strings.Contains(scope, "/"):
		_, err = name.NewRepository(scope)
	default:
		_, err = name.NewRegistry(scope)
	}
	if err != nil {
		return fmt.Errorf("not a docker reference, namespace or registry: %w", err)
	}
	return nil
}

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

// dockerRef is a normalized docker reference: the repository (Docker Hub
// spelled docker.io/library/…) and ":tag" or "@sha256:…", or "" when it
// names only a repository.
type dockerRef struct {
	repo, suffix string
}

func (d dockerRef) String() string { return d.repo + d.suffix }

// parseDockerRef parses a docker reference as containers/image's
// ParseNormalizedNamed does: "busybox" is docker.io/library/busybox, and
// no tag is implied.
func parseDockerRef(s string) (dockerRef, error) {
	if strings.HasPrefix(s, "oci:") {
		return dockerRef{}, fmt.Errorf("%q is not a docker reference", s)
	}
	r, err := ParseReference(s, false)
	if err != nil || r.Registry == nil {
		return dockerRef{}, fmt.Errorf("%q is not a docker reference", s)
	}
	d := dockerRef{repo: dockerName(r.Registry.Context().Name())}
	if strings.Contains(s[strings.LastIndex(s, "/")+1:], ":") || strings.Contains(s, "@") {
		d.suffix = tagOrDigestSuffix(r)
	}
	return d, nil
}

// pulledRef is the identity of a registry reference being pulled (a tag
// is always there: "latest" when none was given).
func pulledRef(ref Reference) dockerRef {
	return dockerRef{repo: dockerName(ref.Registry.Context().Name()), suffix: tagOrDigestSuffix(ref)}
}

// matchRepoDigestOrExact: a reference by tag needs a signature of that
// exact tag; a reference by digest needs the repository (the digest itself
// is checked against the signed manifest digest). Unlike containers/image,
// a signed identity naming only the repository is accepted for a pull by
// digest: that is what cosign signs when given a digest.
func matchRepoDigestOrExact(intended, signed dockerRef) bool {
	if strings.HasPrefix(intended.suffix, "@") {
		return signed.repo == intended.repo
	}
	return signed.String() == intended.String()
}

// remap rewrites ref's repository that is prefix or below it to start
// with signedPrefix instead (remapIdentity). ok is false if the result is
// not a valid, normalized repository.
func remap(ref dockerRef, prefix, signedPrefix string) (out dockerRef, ok bool) {
	if ref.repo != prefix && !strings.HasPrefix(ref.repo, prefix+"/") {
		return ref, true
	}
	repo := signedPrefix + ref.repo[len(prefix):]
	if d, err := parseDockerRef(repo); err != nil || d.repo != repo {
		return ref, false
	}
	return dockerRef{repo: repo, suffix: ref.suffix}, true
}

// checkIdentity compares the signed docker-reference with the reference
// pulled, as the policy's signedIdentity says (containers/image semantics).
func checkIdentity(id *SignedIdentity, ref Reference, signedStr string) error {
	typ := "matchRepoDigestOrExact"
	if id != nil {
		typ = id.Type
	}
	if ref.IsLayout() {
		return fmt.Errorf("%s has no docker reference to match the signed identity against", ref)
	}
	signed, err := parseDockerRef(signedStr)
	if err != nil {
		return fmt.Errorf("signed identity: %w", err)
	}
	pulled := pulledRef(ref)
	var ok bool
	detail := ""
	switch typ {
	case "matchRepoDigestOrExact":
		ok = matchRepoDigestOrExact(pulled, signed)
	case "matchExact":
		ok = signed.suffix != "" && signed == pulled
	case "matchRepository":
		ok = signed.repo == pulled.repo
	case "exactReference":
		want, err := parseDockerRef(id.DockerReference)
		ok = err == nil && signed.suffix != "" && signed == want
	case "exactRepository":
		want, err := parseDockerRef(id.DockerRepository)
		ok = err == nil && signed.repo == want.repo
	case "remapIdentity":
		intended, valid := remap(pulled, id.Prefix, id.SignedPrefix)
		ok = valid && matchRepoDigestOrExact(intended, signed)
		if intended != pulled {
			detail = fmt.Sprintf(", remapped to %s", intended)
		} else if !valid {
			detail = fmt.Sprintf(", which %q -> %q does not remap to a valid repository", id.Prefix, id.SignedPrefix)
		}
	}
	if !ok {
		return fmt.Errorf("signed identity %q does not match %s (signedIdentity %s%s)", signedStr, pulled, typ, detail)
	}
	return nil
}

// strictPolicyJSON refuses what encoding/json would accept in a policy
// document but containers/image refuses: an object naming a member twice
// (anywhere, scopes included), and field names of the policy's own
// objects (the document, requirements, signedIdentity) in another case
// than their exact spelling. Unknown fields are left to the decoder.
func strictPolicyJSON(b []byte) error {
	var doc any
	if err := jsonstrict.UniqueMembers(b); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return err
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return errors.New("the document is not a JSON object")
	}
	if err := exactFields("the document", top, Policy{}); err != nil {
		return err
	}
	transports, _ := top["transports"].(map[string]any)
	for t, scopes := range transports {
		scopes, _ := scopes.(map[string]any)
		for scope, reqs := range scopes {
			if err := exactRequirementFields(fmt.Sprintf("transports.%s[%q]", t, scope), reqs); err != nil {
				return err
			}
		}
	}
	return exactRequirementFields("default", top["default"])
}

func exactRequirementFields(where string, reqs any) error {
	list, _ := reqs.([]any)
	for i, r := range list {
		obj, ok := r.(map[string]any)
		if !ok {
			continue // the decoder reports the wrong type
		}
		at := fmt.Sprintf("%s, requirement %d", where, i+1)
		if err := exactFields(at, obj, Requirement{}); err != nil {
			return err
		}
		if id, ok := obj["signedIdentity"].(map[string]any); ok {
			if err := exactFields(at+", signedIdentity", id, SignedIdentity{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// exactFields checks that every member of obj whose name matches one of
// the JSON field names of the struct v regardless of case matches it
// exactly.
func exactFields(where string, obj map[string]any, v any) error {
	t := reflect.TypeOf(v)
	for k := range obj {
		for i := range t.NumField() {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if tag != "" && tag != "-" && tag != k && strings.EqualFold(tag, k) {
				return fmt.Errorf("%s: member %q must be spelled %q", where, k, tag)
			}
		}
	}
	return nil
}

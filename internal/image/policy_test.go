package image

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/coffer-project/coffer/internal/image/imagetest"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func ecKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	_, pub, k := imagetest.ECKeyPEM(t)
	return k, pub
}

func policyJSON(t *testing.T, v any) *Policy {
	t.Helper()
	b, _ := json.Marshal(v)
	p, err := ParsePolicy(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sigstore(pub []byte, identity map[string]string) map[string]any {
	r := map[string]any{"type": "sigstoreSigned", "keyData": pub}
	if identity != nil {
		r["signedIdentity"] = identity
	}
	return r
}

func TestSignaturePolicy(t *testing.T) {
	tr := newTestRegistry(t)
	img := buildTestImage(t, CompressionGzip, "amd64", map[string]string{"f": "signed"})
	push(t, tr, "app:v1", img)
	push(t, tr, "app:v2", img) // same digest, another tag
	push(t, tr, "unsigned:v1", buildTestImage(t, CompressionGzip, "amd64", map[string]string{"f": "x"}))
	key, pub := ecKey(t)
	_, otherPub := ecKey(t)
	if _, err := Sign(context.Background(), tr.ref(t, "app:v1"), key, SignOptions{}); err != nil {
		t.Fatal(err)
	}
	// A second signature (other key) is added next to the first.
	otherKey, _ := ecKey(t)
	if _, err := Sign(context.Background(), tr.ref(t, "app:v1"), otherKey, SignOptions{}); err != nil {
		t.Fatal(err)
	}
	// The same image and its signature copied to a mirror repository, as
	// a mirroring tool does: the signature still names host/app:v1.
	push(t, tr, "mirror/app:v1", img)
	d, _ := img.Digest()
	sigSrc, _ := name.ParseReference(tr.host + "/app:" + sigTag(d))
	sigDst, _ := name.ParseReference(tr.host + "/mirror/app:" + sigTag(d))
	sigImg, err := remote.Image(sigSrc)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(sigDst, sigImg); err != nil {
		t.Fatal(err)
	}
	reject := []any{map[string]string{"type": "reject"}}
	accept := []any{map[string]string{"type": "insecureAcceptAnything"}}
	docker := func(def []any, scopes map[string]any) map[string]any {
		return map[string]any{"default": def, "transports": map[string]any{"docker": scopes}}
	}
	digest := "app@" + mustDigest(t, tr, "app:v1")
	for name, tc := range map[string]struct {
		policy map[string]any
		ref    string
		want   string // "" = allowed
	}{
		"default reject":       {map[string]any{"default": reject}, "app:v1", "rejects every image"},
		"scope accepts":        {map[string]any{"default": reject, "transports": map[string]any{"docker": map[string]any{tr.host + "/app": []any{map[string]string{"type": "insecureAcceptAnything"}}}}}, "app:v1", ""},
		"signed":               {map[string]any{"default": []any{sigstore(pub, nil)}}, "app:v1", ""},
		"signed, by digest":    {map[string]any{"default": []any{sigstore(pub, nil)}}, "app@" + mustDigest(t, tr, "app:v1"), ""},
		"wrong key":            {map[string]any{"default": []any{sigstore(otherPub, nil)}}, "app:v1", "not made by a trusted key"},
		"unsigned":             {map[string]any{"default": []any{sigstore(pub, nil)}}, "unsigned:v1", "no sigstore signature"},
		"other tag":            {map[string]any{"default": []any{sigstore(pub, nil)}}, "app:v2", "does not match"},
		"other tag, repo only": {map[string]any{"default": []any{sigstore(pub, map[string]string{"type": "matchRepository"})}}, "app:v2", ""},
		"most specific scope":  {map[string]any{"default": []any{map[string]string{"type": "insecureAcceptAnything"}}, "transports": map[string]any{"docker": map[string]any{tr.host: []any{sigstore(pub, nil)}, tr.host + "/unsigned": reject}}}, "unsigned:v1", "scope docker:" + tr.host + "/unsigned"},
		// The transport's "" scope: every docker image, below any more
		// specific scope and above "default".
		"transport default":                     {docker(reject, map[string]any{"": []any{sigstore(pub, nil)}}), "app:v1", ""},
		"transport default, unsigned":           {docker(accept, map[string]any{"": []any{sigstore(pub, nil)}}), "unsigned:v1", `(sigstoreSigned) of scope docker:"" (every docker image)`},
		"specific scope over transport default": {docker(reject, map[string]any{"": reject, tr.host + "/unsigned": accept}), "unsigned:v1", ""},
		"transport default over default":        {docker(accept, map[string]any{"": reject, tr.host + "/app": accept}), "unsigned:v1", `scope docker:""`},
		"oci transport default is not docker's": {map[string]any{"default": accept, "transports": map[string]any{"oci": map[string]any{"": reject}}}, "unsigned:v1", ""},
		// matchExact: the signed tag, never a digest reference.
		"matchExact, tag":       {docker(reject, map[string]any{"": []any{sigstore(pub, map[string]string{"type": "matchExact"})}}), "app:v1", ""},
		"matchExact, digest":    {docker(reject, map[string]any{"": []any{sigstore(pub, map[string]string{"type": "matchExact"})}}), digest, "signedIdentity matchExact"},
		"matchExact, other tag": {docker(reject, map[string]any{"": []any{sigstore(pub, map[string]string{"type": "matchExact"})}}), "app:v2", "does not match"},
		// remapIdentity: the mirror's references are remapped to the
		// signed repository before matching.
		"remapIdentity":                {docker(reject, map[string]any{"": []any{sigstore(pub, map[string]string{"type": "remapIdentity", "prefix": tr.host + "/mirror", "signedPrefix": tr.host})}}), "mirror/app:v1", ""},
		"mirror without remapIdentity": {docker(reject, map[string]any{"": []any{sigstore(pub, nil)}}), "mirror/app:v1", "does not match"},
		"remapIdentity, wrong prefix": {docker(reject, map[string]any{"": []any{sigstore(pub, map[string]string{"type": "remapIdentity", "prefix": tr.host + "/mirror", "signedPrefix": tr.host + "/other"})}}),
			"mirror/app:v1", "remapped to " + tr.host + "/other/app:v1"},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPuller(t, Options{Policy: policyJSON(t, tc.policy)})
			dest := filepath.Join(t.TempDir(), "img")
			_, err := p.Pull(context.Background(), tr.ref(t, tc.ref), dest)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrPolicyDenied) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a denial mentioning %q", err, tc.want)
			}
		})
	}
}

func mustDigest(t *testing.T, tr *testRegistry, ref string) string {
	t.Helper()
	r, _ := name.ParseReference(tr.host + "/" + ref)
	d, err := remote.Head(r)
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest.String()
}

// Scope selection without a registry: most specific scope of the
// transport, then its "" scope, then default; oci scopes are the layout's
// absolute directory (symlinks resolved) and its parents.
func TestPolicyScopes(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(base, "a/b/layout")
	if err := os.MkdirAll(layout, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(layout, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	acc := []any{map[string]string{"type": "insecureAcceptAnything"}}
	scopes := func(names ...string) map[string]any {
		m := map[string]any{}
		for _, n := range names {
			m[n] = acc
		}
		return m
	}
	pol := func(transports map[string]any) *Policy {
		return policyJSON(t, map[string]any{"default": []any{map[string]string{"type": "reject"}}, "transports": transports})
	}
	full := pol(map[string]any{
		"docker": scopes("reg.example/app:v1", "reg.example/app", "reg.example/team", "reg.example", "*.example", "", "docker.io/library"),
		"oci":    scopes(layout, filepath.Join(base, "a"), ""),
	})
	noDefault := pol(map[string]any{"docker": scopes("reg.example/app"), "oci": scopes(filepath.Join(base, "a", "b"))})
	t.Chdir(filepath.Join(base, "a"))
	for _, tc := range []struct {
		pol        *Policy
		ref, scope string
	}{
		{full, "reg.example/app:v1", "docker:reg.example/app:v1"},
		{full, "reg.example/app:v2", "docker:reg.example/app"},
		{full, "reg.example/team/x/y:v1", "docker:reg.example/team"},
		{full, "reg.example/other:v1", "docker:reg.example"},
		{full, "sub.example/x:v1", "docker:*.example"},
		{full, "sub.example:5000/x:v1", "docker:*.example"}, // a port is not part of the domain
		{full, "busybox", "docker:docker.io/library"},
		{full, "quay.io/x/y:v1", `docker:"" (every docker image)`},
		{noDefault, "quay.io/x/y:v1", "default"},
		{noDefault, "reg.example/app@sha256:" + strings.Repeat("a", 64), "docker:reg.example/app"},
		{full, "oci:" + layout + ":v1", "oci:" + layout},
		{full, "oci:b/layout", "oci:" + layout}, // relative to the working directory
		{full, "oci:" + filepath.Join(base, "link"), "oci:" + layout},
		{full, "oci:" + filepath.Join(base, "a/b/other"), "oci:" + filepath.Join(base, "a")},
		{full, "oci:" + filepath.Join(base, "elsewhere"), `oci:"" (every oci image)`},
		{noDefault, "oci:" + layout, "oci:" + filepath.Join(base, "a/b")},
		{noDefault, "oci:" + filepath.Join(base, "a"), "default"},
	} {
		ref, err := ParseReference(tc.ref, false)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := tc.pol.requirementsFor(ref); got != tc.scope {
			t.Errorf("%s: scope %s, want %s", tc.ref, got, tc.scope)
		}
	}
}

// signedIdentity rules, as containers/image evaluates them.
func TestCheckIdentity(t *testing.T) {
	dg := "@sha256:" + strings.Repeat("a", 64)
	remapID := func(prefix, signed string) *SignedIdentity {
		return &SignedIdentity{Type: "remapIdentity", Prefix: prefix, SignedPrefix: signed}
	}
	for _, tc := range []struct {
		id             *SignedIdentity
		pulled, signed string
		ok             bool
	}{
		{nil, "reg.example/app:v1", "reg.example/app:v1", true},
		{nil, "reg.example/app:v1", "reg.example/app:v2", false},
		{nil, "reg.example/app" + dg, "reg.example/app:v9", true},
		{nil, "reg.example/app" + dg, "reg.example/app", true}, // cosign signs the repository alone for a digest
		{nil, "reg.example/app:v1", "reg.example/app", false},
		{nil, "busybox:1.36", "docker.io/library/busybox:1.36", true},
		{&SignedIdentity{Type: "matchExact"}, "reg.example/app:v1", "reg.example/app:v1", true},
		{&SignedIdentity{Type: "matchExact"}, "reg.example/app" + dg, "reg.example/app" + dg, true},
		{&SignedIdentity{Type: "matchExact"}, "reg.example/app" + dg, "reg.example/app:v1", false},
		{&SignedIdentity{Type: "matchExact"}, "reg.example/app:v1", "reg.example/app", false},
		{&SignedIdentity{Type: "matchExact"}, "reg.example/app", "reg.example/app:latest", true}, // "latest" is implied when pulling
		{&SignedIdentity{Type: "matchRepository"}, "reg.example/app:v1", "reg.example/app", true},
		{&SignedIdentity{Type: "exactReference", DockerReference: "reg.example/app:v1"}, "other.example/x:v2", "reg.example/app:v1", true},
		{&SignedIdentity{Type: "exactReference", DockerReference: "reg.example/app:v1"}, "reg.example/app:v1", "reg.example/app:v2", false},
		{&SignedIdentity{Type: "exactRepository", DockerRepository: "reg.example/app"}, "other.example/x:v2", "reg.example/app:v7", true},
		{remapID("mirror.example/library", "docker.io/library"), "mirror.example/library/busybox:1.36", "docker.io/library/busybox:1.36", true},
		{remapID("mirror.example/library", "docker.io/library"), "mirror.example/library/busybox:1.36", "busybox:1.36", true},
		{remapID("mirror.example/library", "docker.io/library"), "mirror.example/library/busybox:1.36", "mirror.example/library/busybox:1.36", false},
		{remapID("mirror.example/library", "docker.io/library"), "mirror.example/library/busybox:1.36", "docker.io/library/busybox:1.37", false},
		{remapID("mirror.example/library", "docker.io/library"), "mirror.example/library/busybox" + dg, "docker.io/library/busybox:any", true},
		{remapID("mirror.example/app", "reg.example/app"), "mirror.example/app" + dg, "reg.example/app:x", true}, // the prefix itself
		{remapID("mirror.example/lib", "docker.io/library"), "mirror.example/library/busybox:1.36", "docker.io/library/busybox:1.36", false},
		{remapID("mirror.example/lib", "docker.io/library"), "mirror.example/library/busybox:1.36", "mirror.example/library/busybox:1.36", true}, // not remapped
		{remapID("mirror.example:5000", "registry.example"), "mirror.example:5000/team/app:v1", "registry.example/team/app:v1", true},
		{remapID("mirror.example/library", "docker.io"), "mirror.example/library/busybox:1", "docker.io/busybox:1", false}, // docker.io/busybox is not canonical
	} {
		ref, err := ParseReference(tc.pulled, false)
		if err != nil {
			t.Fatal(err)
		}
		err = checkIdentity(tc.id, ref, tc.signed)
		if (err == nil) != tc.ok {
			t.Errorf("%+v: pulled %s, signed %s: err = %v, want ok=%v", tc.id, tc.pulled, tc.signed, err, tc.ok)
		}
	}
	layout, _ := ParseReference("oci:/x", false)
	if err := checkIdentity(nil, layout, "reg.example/app:v1"); err == nil || !strings.Contains(err.Error(), "no docker reference") {
		t.Errorf("layout: %v", err)
	}
}

func TestParsePolicyRefusals(t *testing.T) {
	_, pub := ecKey(t)
	id := func(v string) string {
		return `{"default":[{"type":"sigstoreSigned","keyData":"` + base64.StdEncoding.EncodeToString(pub) + `","signedIdentity":` + v + `}]}`
	}
	for doc, want := range map[string]string{
		`{"default":[{"type":"reject"}],"transports":{"oci":{"rel/dir":[{"type":"reject"}]}}}`:              "absolute directory path",
		`{"default":[{"type":"reject"}],"transports":{"docker":{"busybox":[{"type":"reject"}]}}}`:           "starts with a registry host",
		`{"default":[{"type":"reject"}],"transports":{"docker":{"*.":[{"type":"reject"}]}}}`:                "wildcard scope",
		`{"default":[{"type":"reject"}],"transports":{"docker":{"*.a.example/x":[{"type":"reject"}]}}}`:     "wildcard scope",
		`{"default":[{"type":"reject"}],"transports":{"docker":{"reg.example/UPPER":[{"type":"reject"}]}}}`: "not a docker reference",
		`{"default":[{"type":"reject"}],"transports":{"docker":{"reg.example/a:b:c":[{"type":"reject"}]}}}`: "not a docker reference",
		`{"default":[{"type":"reject"}],"transports":{"oci":{"/":[{"type":"reject"}]}}}`:                    `use "" for every layout`,
		`{"default":[{"type":"reject"}],"transports":{"oci":{"/a/../b/":[{"type":"reject"}]}}}`:             `write "/b"`,
		id(`{"type":"remapIdentity","prefix":"mirror.example"}`):                                            `needs "signedPrefix"`,
		id(`{"type":"remapIdentity","prefix":"mirror.example","signedPrefix":"docker.io/library:latest"}`):  "is not valid",
		id(`{"type":"remapIdentity","prefix":"mirror.example/Lib","signedPrefix":"docker.io"}`):             "is not valid",
		id(`{"type":"matchExact","dockerReference":"a.example/b:c"}`):                                       `does not take "dockerReference"`,
		id(`{"type":"exactReference"}`):                                   `needs "dockerReference"`,
		id(`{"type":"exactReference","dockerReference":"a.example/b"}`):   "names no tag or digest",
		id(`{"type":"exactRepository","dockerRepository":"a.example/B"}`): "not a docker reference",
		id(`{"type":"matchSomething"}`):                                   "is not supported",
	} {
		if _, err := ParsePolicy([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", doc, err, want)
		}
	}
	for doc, want := range map[string]string{
		`{"default":[]}`: "at least one requirement",
		`{"default":[{"type":"signedBy","keyType":"X509Certificates","keyPath":"/k"}]}`: "only GPGKeys",
		`{"default":[{"type":"signedBy","keyType":"GPGKeys"}]}`:                         "needs keyPath",
		`{"default":[{"type":"nope"}]}`:                                                 "unknown requirement",
		`{"default":[{"type":"sigstoreSigned"}]}`:                                       "needs keyPath",
		`{"default":[{"type":"reject"}],"extra":1}`:                                     "unknown field",
		`{"default":[{"type":"reject"}],"transports":{"docker":{"x":[]}}}`:              "no requirement",
		// encoding/json would take the last or any-case member; containers/image refuses.
		`{"default":[{"type":"reject"}],"default":[{"type":"insecureAcceptAnything"}]}`:                             `"default" appears twice`,
		`{"default":[{"type":"reject"}],"transports":{"docker":{"":[{"type":"reject"}],"":[{"type":"reject"}]}}}`:   `"" appears twice`,
		`{"default":[{"type":"reject","TYPE":"insecureAcceptAnything"}]}`:                                           `"TYPE" must be spelled "type"`,
		`{"Default":[{"type":"reject"}]}`:                                                                           `"Default" must be spelled "default"`,
		`{"default":[{"type":"reject"}],"transports":{"docker":{"a.example":[{"Type":"insecureAcceptAnything"}]}}}`: `"Type" must be spelled "type"`,
		`{"default":[{"type":"sigstoreSigned","keyPath":"/k","keyData":"eA=="}]}`:                                   "exactly one of them (2 given",
		`{"default":[{"type":"sigstoreSigned","keyData":"eA==","signedIdentity":{"TYPE":"matchExact"}}]}`:           `signedIdentity: member "TYPE" must be spelled "type"`,
	} {
		if _, err := ParsePolicy([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", doc, err, want)
		}
	}
}

func gpgEntity(t *testing.T) (*openpgp.Entity, []byte) {
	t.Helper()
	e, err := openpgp.NewEntity("coffer test", "", "test@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var pub bytes.Buffer
	if err := e.Serialize(&pub); err != nil {
		t.Fatal(err)
	}
	return e, pub.Bytes()
}

// gpgSign writes a simple signature of digest for identity into the
// lookaside directory, as skopeo --sign-by does.
func gpgSign(t *testing.T, e *openpgp.Entity, lookaside, repoPath, identity, digest string, n int) {
	t.Helper()
	var ss simpleSigning
	ss.Critical.Type = simpleSigType
	ss.Critical.Image.DockerManifestDigest = digest
	ss.Critical.Identity.DockerReference = identity
	payload, _ := json.Marshal(ss)
	var buf bytes.Buffer
	w, err := openpgp.Sign(&buf, e, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(payload)
	_ = w.Close()
	dir := filepath.Join(lookaside, repoPath+"@"+strings.Replace(digest, ":", "=", 1))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("signature-%d", n)), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSignedByGPG(t *testing.T) {
	tr := newTestRegistry(t)
	for _, r := range []string{"app", "unsigned", "tampered", "misnamed"} {
		push(t, tr, "gpg/"+r+":v1", buildTestImage(t, CompressionGzip, "amd64", map[string]string{"f": r}))
	}
	signer, pub := gpgEntity(t)
	_, strangerPub := gpgEntity(t)
	lookaside := t.TempDir()
	regd := t.TempDir()
	if err := os.WriteFile(filepath.Join(regd, "test.yaml"), []byte("docker:\n  "+tr.host+":\n    lookaside: file://"+lookaside+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	la, err := LoadLookaside(regd)
	if err != nil {
		t.Fatal(err)
	}
	gpgSign(t, signer, lookaside, "gpg/app", tr.host+"/gpg/app:v1", mustDigest(t, tr, "gpg/app:v1"), 1)
	gpgSign(t, signer, lookaside, "gpg/misnamed", tr.host+"/gpg/other:v1", mustDigest(t, tr, "gpg/misnamed:v1"), 1)
	td := mustDigest(t, tr, "gpg/tampered:v1")
	gpgSign(t, signer, lookaside, "gpg/tampered", tr.host+"/gpg/tampered:v1", td, 1)
	sigFile := filepath.Join(lookaside, "gpg/tampered@"+strings.Replace(td, ":", "=", 1), "signature-1")
	b, _ := os.ReadFile(sigFile)
	b[len(b)-20] ^= 1
	_ = os.WriteFile(sigFile, b, 0o644)
	signedBy := func(pub []byte) map[string]any {
		return map[string]any{"default": []any{map[string]any{"type": "signedBy", "keyType": "GPGKeys", "keyData": pub}}}
	}
	for name, tc := range map[string]struct {
		policy map[string]any
		ref    string
		la     *Lookaside
		want   string
	}{
		"signed":          {signedBy(pub), "gpg/app:v1", la, ""},
		"stranger's key":  {signedBy(strangerPub), "gpg/app:v1", la, "not made by a trusted key"},
		"unsigned":        {signedBy(pub), "gpg/unsigned:v1", la, "no GPG signature"},
		"tampered":        {signedBy(pub), "gpg/tampered:v1", la, "no signature is valid"},
		"other identity":  {signedBy(pub), "gpg/misnamed:v1", la, "does not match"},
		"no registries.d": {signedBy(pub), "gpg/app:v1", nil, "--registries-d"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newPuller(t, Options{Policy: policyJSON(t, tc.policy), Lookaside: tc.la}).Pull(context.Background(), tr.ref(t, tc.ref), filepath.Join(t.TempDir(), "img"))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrPolicyDenied) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a denial mentioning %q", err, tc.want)
			}
		})
	}
}

// A reference with both a tag and a digest is refused: go-containerregistry
// would keep only the digest, and a scope or a reader could go by the tag.
func TestReferenceTagAndDigest(t *testing.T) {
	d := "@sha256:" + strings.Repeat("a", 64)
	for _, ok := range []string{"reg.example/app" + d, "reg.example:5000/app" + d, "reg.example:5000/app:v1", "app"} {
		if _, err := ParseReference(ok, false); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"reg.example/app:v1" + d, "reg.example:5000/app:v1" + d, "app:latest" + d} {
		if _, err := ParseReference(bad, false); err == nil || !strings.Contains(err.Error(), "both a tag and a digest") {
			t.Errorf("%s: err = %v, want a refusal", bad, err)
		}
	}
}

// Scopes that can match load; see TestParsePolicyRefusals for the ones
// that cannot.
func TestDockerScopesAccepted(t *testing.T) {
	for _, scope := range []string{"reg.example", "reg.example:5000", "localhost", "localhost:5000/a", "docker.io/library",
		"reg.example/team/app", "reg.example/app:v1", "reg.example/app@sha256:" + strings.Repeat("a", 64), "*.example", "*.a.example"} {
		doc := `{"default":[{"type":"reject"}],"transports":{"docker":{"` + scope + `":[{"type":"insecureAcceptAnything"}]}}}`
		if _, err := ParsePolicy([]byte(doc)); err != nil {
			t.Errorf("%s: %v", scope, err)
		}
	}
}

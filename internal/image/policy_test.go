package image

import (
	"bytes"
	"context"
	"crypto/ecdsa"
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
	reject := []any{map[string]string{"type": "reject"}}
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

func TestParsePolicyRefusals(t *testing.T) {
	for doc, want := range map[string]string{
		`{"default":[]}`: "at least one requirement",
		`{"default":[{"type":"signedBy","keyType":"X509Certificates","keyPath":"/k"}]}`: "only GPGKeys",
		`{"default":[{"type":"signedBy","keyType":"GPGKeys"}]}`:                         "needs keyPath",
		`{"default":[{"type":"nope"}]}`:                                                 "unknown requirement",
		`{"default":[{"type":"sigstoreSigned"}]}`:                                       "needs keyPath",
		`{"default":[{"type":"reject"}],"extra":1}`:                                     "unknown field",
		`{"default":[{"type":"reject"}],"transports":{"docker":{"x":[]}}}`:              "no requirement",
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

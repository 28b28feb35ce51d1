//go:build integration

package test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/image"
	"github.com/coffer-project/coffer/internal/image/imagetest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// distRegistry is Debian's docker-registry (CNCF distribution) on a
// loopback port with its own config and storage.
type distRegistry struct {
	host    string
	storage string
	log     *syncBuffer
}

func startRegistry(t *testing.T) *distRegistry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("docker-registry not found: install it (apt-get install docker-registry; scripts/setup.sh does)")
	}
	dir := t.TempDir()
	r := &distRegistry{storage: filepath.Join(dir, "storage"), log: &syncBuffer{}}
	for attempt := 0; ; attempt++ {
		r.host = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", r.storage, r.host)
		cfgFile := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "serve", cfgFile)
		cmd.Stdout, cmd.Stderr = r.log, r.log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
		})
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := http.Get("http://" + r.host + "/v2/")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return r
				}
			}
			select {
			case <-done:
				deadline = time.Time{}
			case <-time.After(50 * time.Millisecond):
			}
		}
		if attempt == 2 {
			t.Fatalf("docker-registry did not start on %s:\n%s", r.host, r.log.String())
		}
	}
}

// blobGets counts GET requests for blobs of repo in the registry's log.
func (r *distRegistry) blobGets(repo string) int {
	return strings.Count(r.log.String(), `"GET /v2/`+repo+`/blobs/`)
}

// blobFile is where the registry stores a blob.
func (r *distRegistry) blobFile(d string) string {
	hex := strings.TrimPrefix(d, "sha256:")
	return filepath.Join(r.storage, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// pushBusybox pushes the suite's busybox rootfs as a one-layer image.
func pushBusybox(t *testing.T, reg *distRegistry, ref string, extra ...string) string {
	t.Helper()
	args := []string{"image", "push", "--env", "GREETING=hello", "--workdir", "/tmp"}
	if !strings.Contains(strings.Join(extra, " "), "--cmd") {
		args = append(args, "--cmd", "sh")
	}
	args = append(args, extra...)
	d := wantOK(t, coffer(t, "", append(args, busybox, reg.host+"/"+ref)...))
	if !digestRE.MatchString(d) {
		t.Fatalf("push printed %q, want a digest", d)
	}
	return d
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
		t.Fatalf("%s differs from %s (%v %v)", a, b, err1, err2)
	}
}

// destUntouched checks a failed pull left nothing in parent but dest as
// it was (an empty directory).
func destUntouched(t *testing.T, parent, dest string) {
	t.Helper()
	ents, _ := os.ReadDir(parent)
	in, err := os.ReadDir(dest)
	if len(ents) != 1 || err != nil || len(in) != 0 {
		t.Fatalf("failed pull changed its destination: %v / %v %v", ents, in, err)
	}
}

func TestImagePullFromRegistry(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	gz := pushBusybox(t, reg, "bb/gzip:v1")
	zs := pushBusybox(t, reg, "bb/zstd:v1", "--compression", "zstd")
	cache := t.TempDir()
	for _, tc := range []struct{ name, ref, digest string }{
		{"gzip by tag", "bb/gzip:v1", gz},
		{"zstd by tag", "bb/zstd:v1", zs},
		{"gzip by digest", "bb/gzip@" + gz, gz},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "img")
			r := coffer(t, "", "image", "pull", "--cache-dir", cache, reg.host+"/"+tc.ref, dest)
			wantOK(t, r)
			if !strings.Contains(r.stderr, tc.digest) || !strings.Contains(r.stderr, "layer 1/1") {
				t.Fatalf("pull output %q lacks the digest or the layer line", r.stderr)
			}
			sameFile(t, "/bin/busybox", filepath.Join(dest, "rootfs/bin/busybox"))
			if l, _ := os.Readlink(filepath.Join(dest, "rootfs/bin/sh")); l != "busybox" {
				t.Fatalf("bin/sh -> %q", l)
			}
			var cfg v1.ConfigFile
			b, _ := os.ReadFile(filepath.Join(dest, "config.json"))
			if err := json.Unmarshal(b, &cfg); err != nil || cfg.Config.WorkingDir != "/tmp" || cfg.Config.Cmd[0] != "sh" {
				t.Fatalf("config.json: %s (%v)", b, err)
			}
		})
	}
	// On a terminal: a progress bar per layer, redrawn in place (no plain
	// "layer …" lines), ending full and "done".
	t.Run("terminal", func(t *testing.T) {
		master, slave := openPTY(t)
		defer master.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, cofferBin, "image", "pull", "--no-cache", reg.host+"/bb/gzip:v1", filepath.Join(t.TempDir(), "img"))
		out, _ := startOnPTY(t, cmd, master, slave)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("pull on a terminal: %v\n%q", err, out.String())
		}
		waitFor(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "done") })
		s := out.String()
		bars := strings.Count(s, "\x1b[2Klayer 1/1 ")
		if bars == 0 || bars != strings.Count(s, "layer 1/1 ") || !strings.Contains(s, "["+strings.Repeat("=", 20)+"]") {
			t.Fatalf("terminal output %q: want a redrawn bar per layer, full at the end, and no plain lines", s)
		}
	})
	// Second pull of a cached image: no blob request reaches the registry.
	before := reg.blobGets("bb/zstd")
	r := coffer(t, "", "image", "pull", "--quiet", "--cache-dir", cache, reg.host+"/bb/zstd:v1", filepath.Join(t.TempDir(), "img"))
	wantOK(t, r)
	if r.stderr != "" {
		t.Fatalf("--quiet printed %q", r.stderr)
	}
	if n := reg.blobGets("bb/zstd") - before; n != 0 {
		t.Fatalf("cached pull fetched %d blobs", n)
	}
	// inspect
	var insp struct {
		Digest string `json:"digest"`
		Layers []struct {
			MediaType string `json:"mediaType"`
		} `json:"layers"`
		Config v1.Config `json:"config"`
	}
	out := wantOK(t, coffer(t, "", "image", "inspect", "--no-cache", reg.host+"/bb/zstd:v1"))
	if err := json.Unmarshal([]byte(out), &insp); err != nil || insp.Digest != zs || insp.Layers[0].MediaType != string(types.OCILayerZStd) || insp.Config.Env[0] != "GREETING=hello" {
		t.Fatalf("inspect: %s (%v)", out, err)
	}
	// Errors name what is wrong.
	r = coffer(t, "", "image", "pull", "--no-cache", reg.host+"/bb/nope:v1", filepath.Join(t.TempDir(), "img"))
	if r.code == 0 || !strings.Contains(r.stderr, "MANIFEST_UNKNOWN") && !strings.Contains(r.stderr, "NAME_UNKNOWN") {
		t.Fatalf("missing image: exit %d %q", r.code, r.stderr)
	}
	r = coffer(t, "", "image", "pull", "--no-cache", "10.255.255.1:5000/x:y", filepath.Join(t.TempDir(), "img"))
	if r.code == 0 {
		t.Fatalf("pull from a non-loopback address without TLS succeeded")
	}
}

func TestImageTamperedBlob(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	pushBusybox(t, reg, "bb/tamper:v1")
	var insp struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	out := wantOK(t, coffer(t, "", "image", "inspect", "--no-cache", reg.host+"/bb/tamper:v1"))
	if err := json.Unmarshal([]byte(out), &insp); err != nil {
		t.Fatal(err)
	}
	f := reg.blobFile(insp.Layers[0].Digest)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x55
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	dest := filepath.Join(parent, "img")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	r := coffer(t, "", "image", "pull", "--cache-dir", cache, reg.host+"/bb/tamper:v1", dest)
	if r.code != 125 || !strings.Contains(r.stderr, "digest mismatch") || !strings.Contains(r.stderr, insp.Layers[0].Digest) {
		t.Fatalf("tampered blob: exit %d %q", r.code, r.stderr)
	}
	destUntouched(t, parent, dest)
	if _, err := os.Stat(filepath.Join(cache, "blobs/sha256", strings.TrimPrefix(insp.Layers[0].Digest, "sha256:"))); err == nil {
		t.Fatal("the tampered blob entered the cache")
	}
}

// The registry serves a manifest whose stored bytes were changed after the
// push (here only whitespace: the same image, but not the bytes the digest
// names). docker-registry does not re-verify what it serves, so the check
// is Coffer's: a pull by digest fails with a digest mismatch before any
// layer is fetched and leaves DEST as it was.
func TestImageTamperedManifest(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := pushBusybox(t, reg, "bb/tamper-manifest:v1")
	f := reg.blobFile(d)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("{")) {
		t.Fatalf("stored manifest %s does not start with '{': %.40q", f, b)
	}
	if err := os.WriteFile(f, append([]byte("{ "), b[1:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	// The registry serves the changed bytes under the original digest.
	req, _ := http.NewRequest(http.MethodGet, "http://"+reg.host+"/v2/bb/tamper-manifest/manifests/"+d, nil)
	req.Header.Set("Accept", string(types.OCIManifestSchema1)+", "+string(types.DockerManifestSchema2))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(served, []byte("{ ")) || resp.Header.Get("Docker-Content-Digest") != d {
		t.Fatalf("registry answered %d %q with digest %q, want the tampered bytes under %s", resp.StatusCode, served, resp.Header.Get("Docker-Content-Digest"), d)
	}
	parent := t.TempDir()
	dest := filepath.Join(parent, "img")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	before := reg.blobGets("bb/tamper-manifest")
	// By digest and by tag alike: the body does not match the digest the
	// registry names for it.
	for _, ref := range []string{"bb/tamper-manifest@" + d, "bb/tamper-manifest:v1"} {
		r := coffer(t, "", "image", "pull", "--cache-dir", cache, reg.host+"/"+ref, dest)
		if r.code != 125 || !strings.Contains(r.stderr, "digest mismatch: manifest") || !strings.Contains(r.stderr, "the registry names "+d) {
			t.Fatalf("tampered manifest, %s: exit %d %q", ref, r.code, r.stderr)
		}
		destUntouched(t, parent, dest)
	}
	if n := reg.blobGets("bb/tamper-manifest") - before; n != 0 {
		t.Fatalf("a pull of a tampered manifest fetched %d blobs", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(cache, "blobs/sha256")); len(ents) != 0 {
		t.Fatalf("a pull of a tampered manifest left %d cache entries", len(ents))
	}
}

// writeLayout writes an OCI layout of imgs: one image (named tag), or a
// platform index of several.
func writeLayout(t *testing.T, dir, tag string, imgs map[string]v1.Image) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for plat, img := range imgs {
		pl, err := v1.ParsePlatform(plat)
		if err != nil {
			t.Fatal(err)
		}
		opts := []layout.Option{layout.WithPlatform(*pl)}
		if tag != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag}))
		}
		if err := p.AppendImage(img, opts...); err != nil {
			t.Fatal(err)
		}
	}
}

func archImage(t *testing.T, arch string, comp image.Compression) v1.Image {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "arch"), []byte(arch), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := image.BuildImage(dir, image.BuildOptions{Compression: comp, Platform: v1.Platform{OS: "linux", Architecture: arch}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestImageMultiArchAndHostile(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	lay := filepath.Join(t.TempDir(), "layout")
	writeLayout(t, lay, "", map[string]v1.Image{
		"linux/amd64": archImage(t, "amd64", image.CompressionGzip),
		"linux/arm64": archImage(t, "arm64", image.CompressionZstd),
	})
	wantOK(t, coffer(t, "", "image", "push", "oci:"+lay, reg.host+"/multi:v1"))
	for _, plat := range []string{"", "linux/arm64"} {
		dest := filepath.Join(t.TempDir(), "img")
		wantOK(t, coffer(t, "", "image", "pull", "--no-cache", "--platform", plat, reg.host+"/multi:v1", dest))
		want := "amd64"
		if plat != "" {
			want = "arm64"
		}
		if b, _ := os.ReadFile(filepath.Join(dest, "rootfs/arch")); string(b) != want {
			t.Fatalf("platform %q: got %q", plat, b)
		}
	}
	r := coffer(t, "", "image", "pull", "--no-cache", "--platform", "linux/riscv64", reg.host+"/multi:v1", filepath.Join(t.TempDir(), "img"))
	if r.code == 0 || !strings.Contains(r.stderr, "linux/arm64") {
		t.Fatalf("missing platform: exit %d %q", r.code, r.stderr)
	}
	// The layout itself pulls too.
	dest := filepath.Join(t.TempDir(), "img")
	wantOK(t, coffer(t, "", "image", "pull", "--no-cache", "oci:"+lay, dest))

	// Hostile layers, pushed to the registry, are refused on pull.
	for name, tc := range map[string]struct {
		entries []*tar.Header
		want    string
	}{
		"dotdot":   {[]*tar.Header{{Name: "../../../../escaped", Typeflag: tar.TypeReg, Mode: 0o644}}, `".." in path`},
		"absolute": {[]*tar.Header{{Name: "/escaped", Typeflag: tar.TypeReg, Mode: 0o644}}, "absolute path"},
		"hardlink": {[]*tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../../etc/passwd"}}, `hardlink target "../../../etc/passwd"`},
		"symlink": {[]*tar.Header{
			{Name: "x", Typeflag: tar.TypeSymlink, Linkname: "../.."},
			{Name: "x/escaped", Typeflag: tar.TypeReg, Mode: 0o644},
		}, `entry "x/escaped": unsafe layer: the path resolves through symlink "x" -> "../..", which points outside the rootfs`},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range tc.entries {
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
			}
			_ = tw.Close()
			img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer))
			if err != nil {
				t.Fatal(err)
			}
			img, _ = mutate.ConfigFile(img, mustConfig(t, img))
			hl := filepath.Join(t.TempDir(), "layout")
			writeLayout(t, hl, "v1", map[string]v1.Image{"linux/amd64": img})
			wantOK(t, coffer(t, "", "image", "push", "oci:"+hl+":v1", reg.host+"/hostile:"+name))
			parent := t.TempDir()
			dest := filepath.Join(parent, "img")
			if err := os.Mkdir(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			r := coffer(t, "", "image", "pull", "--no-cache", reg.host+"/hostile:"+name, dest)
			if r.code != 125 || !strings.Contains(r.stderr, "unsafe layer") || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("hostile layer: exit %d %q, want %q", r.code, r.stderr, tc.want)
			}
			destUntouched(t, parent, dest)
			if _, err := os.Stat(filepath.Join(parent, "escaped")); err == nil {
				t.Fatal("a file escaped the rootfs")
			}
		})
	}
}

func mustConfig(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	return cf
}

// `coffer run IMAGE` pulls the image on the host and runs it with the
// config's entrypoint, cmd, env, workdir and user; flags override them.
func TestImageRun(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	withConfig := pushBusybox(t, reg, "bb/run:v1", "--entrypoint", "sh", "--entrypoint=-c",
		"--cmd=echo $GREETING $(pwd) $(id -u):$(id -g)", "--user", "nobody")
	pushBusybox(t, reg, "bb/plain:v1")
	env := []string{"COFFER_IMAGE_CACHE=" + t.TempDir()}
	run := func(args ...string) result {
		return runCmd(t, env, "", cofferBin, append([]string{"run", "--rm"}, args...)...)
	}
	if r := run(reg.host + "/bb/run:v1"); r.code != 0 || r.stdout != "hello /tmp 65534:65534\n" {
		t.Fatalf("image config not applied: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := run("-e", "GREETING=bye", "-w", "/", "-u", "0:0", reg.host+"/bb/run@"+withConfig); r.code != 0 || r.stdout != "bye / 0:0\n" {
		t.Fatalf("flags do not override the image config: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := run(reg.host+"/bb/plain:v1", "sh", "-c", "echo over; exit 3"); r.code != 3 || r.stdout != "over\n" {
		t.Fatalf("command after the image: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := run(reg.host + "/bb/missing:v1"); r.code != 125 || !strings.Contains(r.stderr, "MANIFEST_UNKNOWN") && !strings.Contains(r.stderr, "NAME_UNKNOWN") {
		t.Fatalf("missing image: exit %d %q", r.code, r.stderr)
	}

	// --policy: an unsigned image is refused before any layer is fetched;
	// a signed one runs.
	dir := t.TempDir()
	privPEM, pubPEM, _ := imagetest.ECKeyPEM(t)
	key, pub := filepath.Join(dir, "sign.pem"), filepath.Join(dir, "sign.pub")
	for f, b := range map[string][]byte{key: privPEM, pub: pubPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	policy := sigstorePolicy(t, filepath.Join(dir, "policy.json"), reg.host+"/bb", pub, "")
	pushBusybox(t, reg, "bb/unsigned:v1", "--compression", "zstd")
	before := reg.blobGets("bb/unsigned")
	if r := run("--policy", policy, reg.host+"/bb/unsigned:v1", "true"); r.code != 125 || !strings.Contains(r.stderr, "signature policy denied") {
		t.Fatalf("unsigned image under --policy: exit %d %q", r.code, r.stderr)
	}
	if n := reg.blobGets("bb/unsigned") - before; n > 1 { // the config only
		t.Fatalf("a denied image fetched %d blobs, want only its config", n)
	}
	wantOK(t, coffer(t, "", "image", "sign", "--key", key, reg.host+"/bb/plain:v1"))
	if r := run("--policy", policy, reg.host+"/bb/plain:v1", "echo", "signed"); r.code != 0 || r.stdout != "signed\n" {
		t.Fatalf("signed image under --policy: exit %d %q %q", r.code, r.stdout, r.stderr)
	}

	// --decryption-key: an encrypted image runs with its key, the
	// plaintext is not left in the cache, and without the key it is refused.
	priv, rsaPub := rsaKeyFiles(t, dir)
	encDigest := wantOK(t, coffer(t, "", "image", "encrypt", "--recipient", "jwe:"+rsaPub, reg.host+"/bb/plain:v1", reg.host+"/bb/enc:v1"))
	if r := run(reg.host+"/bb/enc:v1", "true"); r.code != 125 || !strings.Contains(r.stderr, "give the private key with --decryption-key") {
		t.Fatalf("encrypted image without a key: exit %d %q", r.code, r.stderr)
	}
	if r := run("--decryption-key", priv, reg.host+"/bb/enc:v1", "echo", "decrypted"); r.code != 0 || r.stdout != "decrypted\n" {
		t.Fatalf("encrypted image with its key: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	ents, err := os.ReadDir(filepath.Join(strings.TrimPrefix(env[0], "COFFER_IMAGE_CACHE="), "unpacked"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || "sha256:"+e.Name() == encDigest {
			t.Fatalf("decrypted copy %s left in the image cache", e.Name())
		}
	}
	// The key is still needed after a run that had it.
	if r := run(reg.host+"/bb/enc:v1", "true"); r.code != 125 || !strings.Contains(r.stderr, "give the private key with --decryption-key") {
		t.Fatalf("encrypted image without a key after a run with it: exit %d %q", r.code, r.stderr)
	}

	// prune: recent entries stay under --older-than, everything goes without.
	cache := strings.TrimPrefix(env[0], "COFFER_IMAGE_CACHE=")
	if out := wantOK(t, coffer(t, "", "image", "prune", "--cache-dir", cache, "--older-than", "1h")); !strings.HasPrefix(out, "removed 0 blobs") {
		t.Fatalf("prune --older-than 1h: %q", out)
	}
	if out := wantOK(t, coffer(t, "", "image", "prune", "--cache-dir", cache)); strings.HasPrefix(out, "removed 0 blobs") || !strings.Contains(out, "unpacked images") {
		t.Fatalf("prune: %q", out)
	}
	for _, sub := range []string{"unpacked", "blobs/sha256"} {
		if ents, _ := os.ReadDir(filepath.Join(cache, sub)); len(ents) != 0 {
			t.Fatalf("prune left %d entries in %s", len(ents), sub)
		}
	}
	if r := run(reg.host+"/bb/plain:v1", "echo", "again"); r.code != 0 || r.stdout != "again\n" {
		t.Fatalf("run after prune: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// sigstorePolicy writes a containers-policy.json at path that rejects
// everything but scope, which needs a sigstore signature by the public key
// in pubFile; identity, if set, is the requirement's signedIdentity object.
func sigstorePolicy(t *testing.T, path, scope, pubFile, identity string) string {
	t.Helper()
	req := `{"type":"sigstoreSigned","keyPath":"` + pubFile + `"`
	if identity != "" {
		req += `,"signedIdentity":` + identity
	}
	doc := `{"default":[{"type":"reject"}],"transports":{"docker":{"` + scope + `":[` + req + `}]}}}`
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// rsaKeyFiles writes a PEM RSA private key (PKCS#8) and its public key.
func rsaKeyFiles(t *testing.T, dir string) (priv, pub string) {
	t.Helper()
	privPEM, pubPEM := imagetest.RSAKeyPEM(t)
	priv, pub = filepath.Join(dir, "priv.pem"), filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(priv, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func skopeo(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatalf("skopeo not found: install it (apt-get install skopeo; scripts/setup.sh does)")
	}
	if !strings.Contains(strings.Join(args, " "), "--policy") {
		args = append([]string{"--insecure-policy"}, args...)
	}
	if r := runCmd(t, nil, "", bin, args...); r.code != 0 {
		t.Fatalf("skopeo %v: exit %d: %s", args, r.code, r.stderr)
	}
}

// Layers encrypted by skopeo decrypt with Coffer, and the other way round
// (ocicrypt JWE, RSA recipients), through a registry and OCI layouts.
func TestImageEncryptedSkopeoInterop(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	dir := t.TempDir()
	priv, pub := rsaKeyFiles(t, dir)
	wrongPriv, _ := rsaKeyFiles(t, t.TempDir())
	pushBusybox(t, reg, "bb/plain:v1") // gzip: umoci 0.4.7 cannot read zstd
	plain := "oci:" + filepath.Join(dir, "plain") + ":v1"
	skopeo(t, "copy", "-q", "--src-tls-verify=false", "docker://"+reg.host+"/bb/plain:v1", plain)

	// skopeo encrypts → registry → coffer decrypts.
	skopeo(t, "copy", "-q", "--dest-tls-verify=false", "--encryption-key", "jwe:"+pub, plain, "docker://"+reg.host+"/bb/skopeo-enc:v1")
	dest := filepath.Join(t.TempDir(), "img")
	wantOK(t, coffer(t, "", "image", "pull", "--no-cache", "--decryption-key", priv, reg.host+"/bb/skopeo-enc:v1", dest))
	sameFile(t, "/bin/busybox", filepath.Join(dest, "rootfs/bin/busybox"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give the private key with --decryption-key"},
		{[]string{"--decryption-key", wrongPriv}, "decrypt layer"},
	} {
		parent := t.TempDir()
		dest := filepath.Join(parent, "img")
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		args := append(append([]string{"image", "pull", "--no-cache"}, tc.args...), reg.host+"/bb/skopeo-enc:v1", dest)
		if r := coffer(t, "", args...); r.code != 125 || !strings.Contains(r.stderr, tc.want) {
			t.Fatalf("%v: exit %d %q, want %q", tc.args, r.code, r.stderr, tc.want)
		}
		destUntouched(t, parent, dest)
	}

	// The same files as skopeo's own decryption unpacked by umoci.
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Fatalf("umoci not found: install it (apt-get install umoci; scripts/setup.sh does)")
	}
	skdec := filepath.Join(dir, "skdec")
	skopeo(t, "copy", "-q", "--src-tls-verify=false", "--decryption-key", priv, "docker://"+reg.host+"/bb/skopeo-enc:v1", "oci:"+skdec+":v1")
	bundle := filepath.Join(dir, "bundle")
	if r := runCmd(t, nil, "", umoci, "unpack", "--image", skdec+":v1", bundle); r.code != 0 {
		t.Fatalf("umoci unpack: %s", r.stderr)
	}
	if a, b := treeListing(t, filepath.Join(bundle, "rootfs")), treeListing(t, filepath.Join(dest, "rootfs")); a != b {
		t.Fatalf("coffer's rootfs differs from skopeo + umoci's:\numoci:\n%s\ncoffer:\n%s", clip(a), clip(b))
	}

	// coffer encrypts (registry → registry and layout → layout) → skopeo decrypts.
	wantOK(t, coffer(t, "", "image", "encrypt", "--recipient", "jwe:"+pub, reg.host+"/bb/plain:v1", reg.host+"/bb/coffer-enc:v1"))
	dec := "oci:" + filepath.Join(dir, "dec") + ":v1"
	skopeo(t, "copy", "-q", "--src-tls-verify=false", "--decryption-key", priv, "docker://"+reg.host+"/bb/coffer-enc:v1", dec)
	dest = filepath.Join(t.TempDir(), "img")
	wantOK(t, coffer(t, "", "image", "pull", "--no-cache", dec, dest))
	sameFile(t, "/bin/busybox", filepath.Join(dest, "rootfs/bin/busybox"))
	enc := "oci:" + filepath.Join(dir, "enc") + ":v1"
	wantOK(t, coffer(t, "", "image", "encrypt", "--recipient", "jwe:"+pub, plain, enc))
	skopeo(t, "copy", "-q", "--decryption-key", priv, enc, "oci:"+filepath.Join(dir, "dec2")+":v1")
}

// An image encrypted for a KBS key (the Confidential Containers key
// provider scheme) pulls only by attesting to the KBS that holds the key.
func TestImageKBSKeyProvider(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	home := t.TempDir()
	srv := startKbs(t, "http", filepath.Join(t.TempDir(), "data"), &http.Client{Timeout: 10 * time.Second}, "--dev", "--insecure-http")
	keyFile := filepath.Join(home, "kek")
	if err := os.WriteFile(keyFile, bytes.Repeat([]byte{0x42}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, kid := range []string{"k1", "revoked"} {
		wantOK(t, kbsCLI(t, home, srv.url, "set-resource", "--path", "default/image-key/"+kid, "--file", keyFile))
	}
	pushBusybox(t, reg, "bb/plain:v1")
	for _, kid := range []string{"k1", "missing", "revoked"} {
		wantOK(t, coffer(t, "", "image", "encrypt", "--kbs-key", "kbs:///default/image-key/"+kid, "--key-file", keyFile,
			reg.host+"/bb/plain:v1", reg.host+"/bb/kbs-"+kid+":v1"))
	}
	pullK1 := func() {
		t.Helper()
		dest := filepath.Join(t.TempDir(), "img")
		wantOK(t, coffer(t, "", "image", "pull", "--no-cache", "--kbs", srv.url, "--tee", "sample", reg.host+"/bb/kbs-k1:v1", dest))
		sameFile(t, "/bin/busybox", filepath.Join(dest, "rootfs/bin/busybox"))
	}
	pullK1()
	// A resource policy that refuses one key (held by the KBS) and serves
	// the others: the refusal reaches the pull with the KBS's reason.
	const revokedReason = "image key default/image-key/revoked is revoked for every workload"
	policyFile := filepath.Join(home, "revoke.rego")
	rego := `package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	not revoked
}

revoked if data["resource-path"] == ["default", "image-key", "revoked"]

deny_reasons contains "` + revokedReason + `" if revoked
`
	if err := os.WriteFile(policyFile, []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	wantOK(t, kbsCLI(t, home, srv.url, "set-resource-policy", "--policy-file", policyFile))
	pullK1()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{reg.host + "/bb/kbs-k1:v1"}, []string{"kbs:///default/image-key/k1", "--kbs URL"}},
		{[]string{"--kbs", srv.url, "--tee", "sample", reg.host + "/bb/kbs-missing:v1"}, []string{"kbs:///default/image-key/missing", "404"}},
		{[]string{"--kbs", srv.url, "--tee", "sample", reg.host + "/bb/kbs-revoked:v1"},
			[]string{"layer key kbs:///default/image-key/revoked", "KBS answered 401", "PolicyDeny", revokedReason}},
	} {
		parent := t.TempDir()
		dest := filepath.Join(parent, "img")
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		r := coffer(t, "", append(append([]string{"image", "pull", "--no-cache"}, tc.args...), dest)...)
		if r.code != 125 {
			t.Fatalf("%v: exit %d, want 125: %s", tc.args, r.code, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Fatalf("%v: stderr %q lacks %q", tc.args, r.stderr, w)
			}
		}
		destUntouched(t, parent, dest)
	}
}

// Sigstore (cosign-style, key-based) signatures made by coffer image sign,
// checked by coffer image verify and pull --policy before any layer is
// fetched. Interop with other tools is tested separately:
// TestImageSigstoreSkopeoInterop (skopeo 1.16 built with sigstore by
// scripts/setup.sh; Debian's skopeo has it disabled) and
// TestImageCosignInterop.
func TestImageSignVerify(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	dir := t.TempDir()
	privPEM, pubPEM, _ := imagetest.ECKeyPEM(t)
	_, otherPub, _ := imagetest.ECKeyPEM(t)
	for name, b := range map[string][]byte{"priv.pem": privPEM, "pub.pem": pubPEM, "other.pem": otherPub} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	policy := func(name, keyFile string) string {
		return sigstorePolicy(t, filepath.Join(dir, name), reg.host+"/bb", filepath.Join(dir, keyFile), "")
	}
	good, wrong := policy("policy.json", "pub.pem"), policy("wrong.json", "other.pem")
	pushBusybox(t, reg, "bb/signed:v1")
	pushBusybox(t, reg, "bb/plain:v1", "--compression", "zstd")
	pushBusybox(t, reg, "other/signed:v1")
	signed := wantOK(t, coffer(t, "", "image", "sign", "--key", filepath.Join(dir, "priv.pem"), reg.host+"/bb/signed:v1"))
	if !digestRE.MatchString(signed) {
		t.Fatalf("sign printed %q", signed)
	}
	wantOK(t, coffer(t, "", "image", "verify", "--no-cache", "--policy", good, reg.host+"/bb/signed:v1"))
	wantOK(t, coffer(t, "", "image", "verify", "--no-cache", "--policy", good, reg.host+"/bb/signed@"+signed))
	dest := filepath.Join(t.TempDir(), "img")
	wantOK(t, coffer(t, "", "image", "pull", "--no-cache", "--policy", good, reg.host+"/bb/signed:v1", dest))
	sameFile(t, "/bin/busybox", filepath.Join(dest, "rootfs/bin/busybox"))
	for _, tc := range []struct{ policy, ref, want string }{
		{wrong, "bb/signed:v1", "not made by a trusted key"},
		{good, "bb/plain:v1", "no sigstore signature"},
		{good, "other/signed:v1", "rejects every image"},
	} {
		if r := coffer(t, "", "image", "verify", "--no-cache", "--policy", tc.policy, reg.host+"/"+tc.ref); r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Fatalf("verify %s: exit %d %q, want %q", tc.ref, r.code, r.stderr, tc.want)
		}
		parent := t.TempDir()
		dest := filepath.Join(parent, "img")
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		before := reg.blobGets(strings.Split(tc.ref, ":")[0])
		if r := coffer(t, "", "image", "pull", "--no-cache", "--policy", tc.policy, reg.host+"/"+tc.ref, dest); r.code != 125 || !strings.Contains(r.stderr, "signature policy denied") {
			t.Fatalf("pull %s: exit %d %q", tc.ref, r.code, r.stderr)
		}
		destUntouched(t, parent, dest)
		// Only the config and signature payloads may have been read.
		if n := reg.blobGets(strings.Split(tc.ref, ":")[0]) - before; n > 2 {
			t.Fatalf("a denied pull fetched %d blobs", n)
		}
	}
}

// treeListing describes every entry below dir (not dir itself): path,
// mode, owner, mtime, symlink target and content digest.
func treeListing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := fi.Sys().(*syscall.Stat_t)
		extra := ""
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			extra, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			extra = fmt.Sprintf("%x", sha256.Sum256(data))
		}
		mtime := fi.ModTime().Unix()
		if fi.IsDir() {
			mtime = 0 // umoci and coffer both set them, but umoci's mtree pass may touch dirs
		}
		fmt.Fprintf(&b, "%s %v %d:%d %d %s\n", rel, fi.Mode(), st.Uid, st.Gid, mtime, extra)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// GPG simple signing: skopeo --sign-by (gpgme) writes the signature to a
// lookaside directory; coffer image verify/pull --policy (signedBy) with
// the same registries.d accepts it, and refuses a stranger's key.
func TestImageGPGSkopeoInterop(t *testing.T) {
	t.Parallel()
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		t.Fatalf("gpg not found: install gnupg")
	}
	reg := startRegistry(t)
	// gpg-agent's socket path must be short: not under the suite's TMPDIR.
	home, err := os.MkdirTemp("/tmp", "cgpg")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"GNUPGHOME=" + home}
	t.Cleanup(func() {
		_ = exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyring := func(uid string) string {
		if r := runCmd(t, env, "", gpg, "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, "rsa2048", "sign", "never"); r.code != 0 {
			t.Fatalf("gpg key: %s", r.stderr)
		}
		out := filepath.Join(dir, strings.Fields(uid)[0]+".gpg")
		if r := runCmd(t, env, "", gpg, "--batch", "--output", out, "--export", uid); r.code != 0 {
			t.Fatalf("gpg export: %s", r.stderr)
		}
		return out
	}
	signerRing, strangerRing := keyring("signer@example.com"), keyring("stranger@example.com")
	regd := filepath.Join(dir, "registries.d")
	if err := os.MkdirAll(regd, 0o755); err != nil {
		t.Fatal(err)
	}
	doc := "docker:\n  " + reg.host + ":\n    lookaside: file://" + filepath.Join(dir, "lookaside") + "\n"
	if err := os.WriteFile(filepath.Join(regd, "coffer.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	policy := func(name, ring string) string {
		p := filepath.Join(dir, name)
		doc := `{"default":[{"type":"reject"}],"transports":{"docker":{"` + reg.host + `/bb":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"` + ring + `"}]}}}`
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, stranger := policy("good.json", signerRing), policy("stranger.json", strangerRing)
	pushBusybox(t, reg, "bb/plain:v1")
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatalf("skopeo not found: install it (apt-get install skopeo; scripts/setup.sh does)")
	}
	if r := runCmd(t, env, "", bin, "--insecure-policy", "--registries.d", regd, "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
		"--sign-by", "signer@example.com", "docker://"+reg.host+"/bb/plain:v1", "docker://"+reg.host+"/bb/gpg-signed:v1"); r.code != 0 {
		t.Fatalf("skopeo --sign-by: %s", r.stderr)
	}
	wantOK(t, coffer(t, "", "image", "verify", "--no-cache", "--registries-d", regd, "--policy", good, reg.host+"/bb/gpg-signed:v1"))
	dest := filepath.Join(t.TempDir(), "img")
	wantOK(t, coffer(t, "", "image", "pull", "--no-cache", "--registries-d", regd, "--policy", good, reg.host+"/bb/gpg-signed:v1", dest))
	sameFile(t, "/bin/busybox", filepath.Join(dest, "rootfs/bin/busybox"))
	for _, tc := range []struct{ policy, ref, want string }{
		{stranger, "bb/gpg-signed:v1", "not made by a trusted key"},
		{good, "bb/plain:v1", "no GPG signature"},
	} {
		if r := coffer(t, "", "image", "verify", "--no-cache", "--registries-d", regd, "--policy", tc.policy, reg.host+"/"+tc.ref); r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Fatalf("verify %s: exit %d %q, want %q", tc.ref, r.code, r.stderr, tc.want)
		}
	}
}

// requireTool returns the path of a tool scripts/setup.sh installs into
// the tools dir, failing the test (with why setup.sh is needed) if absent.
func requireTool(t *testing.T, name, why string) string {
	t.Helper()
	p := filepath.Join(toolsDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found: run scripts/setup.sh (%s)", p, why)
	}
	return p
}

// Sigstore key-based signatures, both ways with skopeo built with sigstore
// (scripts/setup.sh builds skopeo 1.16 into the tools dir: Debian's has it
// disabled). skopeo --sign-by-sigstore-private-key → coffer verify/pull;
// coffer image sign (with skopeo's own encrypted key, and with a plain PEM
// key) → skopeo copy under a sigstoreSigned policy.json; wrong keys and
// unsigned images refused by both.
func TestImageSigstoreSkopeoInterop(t *testing.T) {
	t.Parallel()
	skopeo := requireTool(t, "skopeo", "it builds skopeo with sigstore support")
	reg := startRegistry(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pass := write("pass", []byte("correct horse"))
	if r := runCmd(t, nil, "", skopeo, "generate-sigstore-key", "--output-prefix", filepath.Join(dir, "sk"), "--passphrase-file", pass); r.code != 0 {
		t.Fatalf("skopeo generate-sigstore-key: %s", r.stderr)
	}
	skPriv, skPub := filepath.Join(dir, "sk.private"), filepath.Join(dir, "sk.pub")
	privPEM, pubPEM, _ := imagetest.ECKeyPEM(t)
	cPriv, cPub := write("c.pem", privPEM), write("c.pub", pubPEM)
	regd := filepath.Join(dir, "registries.d")
	if err := os.MkdirAll(regd, 0o755); err != nil {
		t.Fatal(err)
	}
	write("registries.d/coffer.yaml", []byte("docker:\n  "+reg.host+":\n    use-sigstore-attachments: true\n"))
	policy := func(name, pub string) string {
		return sigstorePolicy(t, filepath.Join(dir, name), reg.host+"/bb", pub, "")
	}
	skPolicy, cPolicy := policy("sk.json", skPub), policy("c.json", cPub)
	pushBusybox(t, reg, "bb/plain:v1")
	// skopeoCopy copies REF within the registry (to docker://…/dst) or,
	// with dst "", pulls it into a fresh OCI layout under policy.
	skopeoCopy := func(policy, ref, dst string, extra ...string) result {
		args := []string{"--registries.d", regd, "--insecure-policy"}
		if policy != "" {
			args = []string{"--registries.d", regd, "--policy", policy}
		}
		args = append(append(args, "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"), extra...)
		to := "oci:" + filepath.Join(t.TempDir(), "out") + ":x"
		if dst != "" {
			to = "docker://" + reg.host + "/" + dst
		}
		return runCmd(t, nil, "", skopeo, append(args, "docker://"+reg.host+"/"+ref, to)...)
	}
	// skopeo signs → coffer verifies.
	if r := skopeoCopy("", "bb/plain:v1", "bb/skopeo-signed:v1", "--sign-by-sigstore-private-key", skPriv, "--sign-passphrase-file", pass); r.code != 0 {
		t.Fatalf("skopeo --sign-by-sigstore-private-key: %s", r.stderr)
	}
	wantOK(t, coffer(t, "", "image", "verify", "--no-cache", "--policy", skPolicy, reg.host+"/bb/skopeo-signed:v1"))
	dest := filepath.Join(t.TempDir(), "img")
	wantOK(t, coffer(t, "", "image", "pull", "--no-cache", "--policy", skPolicy, reg.host+"/bb/skopeo-signed:v1", dest))
	sameFile(t, "/bin/busybox", filepath.Join(dest, "rootfs/bin/busybox"))
	if r := coffer(t, "", "image", "verify", "--no-cache", "--policy", cPolicy, reg.host+"/bb/skopeo-signed:v1"); r.code != 1 || !strings.Contains(r.stderr, "not made by a trusted key") {
		t.Fatalf("verify under the wrong key: exit %d %q", r.code, r.stderr)
	}

	// coffer signs (skopeo's encrypted key, then a plain PEM key) → skopeo verifies.
	for _, repo := range []string{"bb/coffer-signed:v1", "bb/coffer-signed-enc:v1"} {
		if r := skopeoCopy("", "bb/plain:v1", repo); r.code != 0 {
			t.Fatalf("skopeo copy: %s", r.stderr)
		}
	}
	if r := coffer(t, "", "image", "sign", "--key", skPriv, reg.host+"/bb/coffer-signed-enc:v1"); r.code != 125 || !strings.Contains(r.stderr, "is encrypted: give its passphrase") {
		t.Fatalf("sign with an encrypted key and no passphrase: exit %d %q", r.code, r.stderr)
	}
	wantOK(t, coffer(t, "", "image", "sign", "--key", skPriv, "--passphrase-file", pass, reg.host+"/bb/coffer-signed-enc:v1"))
	wantOK(t, coffer(t, "", "image", "sign", "--key", cPriv, reg.host+"/bb/coffer-signed:v1"))
	for _, tc := range []struct{ policy, ref, want string }{
		{skPolicy, "bb/coffer-signed-enc:v1", ""},
		{cPolicy, "bb/coffer-signed:v1", ""},
		{skPolicy, "bb/coffer-signed:v1", "signature verification failed"},
		{cPolicy, "bb/plain:v1", "no signature exists"},
	} {
		r := skopeoCopy(tc.policy, tc.ref, "", "--remove-signatures")
		if tc.want == "" && r.code != 0 {
			t.Fatalf("skopeo refused %s signed by coffer: %s", tc.ref, r.stderr)
		}
		if tc.want != "" && (r.code == 0 || !strings.Contains(r.stderr, tc.want)) {
			t.Fatalf("skopeo %s: exit %d %q, want %q", tc.ref, r.code, r.stderr, tc.want)
		}
	}
}

// cosign itself (v2, key-based, no transparency log): `cosign sign` →
// coffer verify (a digest reference under the default identity rule, a
// tag under matchRepository: cosign signs the repository for a digest);
// `coffer image sign` with cosign's encrypted key → `cosign verify`;
// another key refused by both.
func TestImageCosignInterop(t *testing.T) {
	t.Parallel()
	cosign := requireTool(t, "cosign", "it installs cosign")
	reg := startRegistry(t)
	dir := t.TempDir()
	env := []string{"COSIGN_PASSWORD=pw", "HOME=" + dir}
	if r := runCmd(t, env, "", cosign, "generate-key-pair", "--output-key-prefix", filepath.Join(dir, "co")); r.code != 0 {
		t.Fatalf("cosign generate-key-pair: %s", r.stderr)
	}
	key, pub := filepath.Join(dir, "co.key"), filepath.Join(dir, "co.pub")
	_, otherPub, _ := imagetest.ECKeyPEM(t)
	other := filepath.Join(dir, "other.pub")
	if err := os.WriteFile(other, otherPub, 0o644); err != nil {
		t.Fatal(err)
	}
	policy := func(name, pub, identity string) string {
		return sigstorePolicy(t, filepath.Join(dir, name), reg.host+"/bb", pub, identity)
	}
	exact, byRepo := policy("exact.json", pub, ""), policy("repo.json", pub, `{"type":"matchRepository"}`)
	wrong := policy("wrong.json", other, "")

	// cosign signs → coffer verifies.
	d := pushBusybox(t, reg, "bb/cosigned:v1")
	if r := runCmd(t, env, "", cosign, "sign", "--key", key, "--tlog-upload=false", "--allow-http-registry", "--yes", reg.host+"/bb/cosigned@"+d); r.code != 0 {
		t.Fatalf("cosign sign: %s", r.stderr)
	}
	wantOK(t, coffer(t, "", "image", "verify", "--no-cache", "--policy", exact, reg.host+"/bb/cosigned@"+d))
	wantOK(t, coffer(t, "", "image", "verify", "--no-cache", "--policy", byRepo, reg.host+"/bb/cosigned:v1"))
	if r := coffer(t, "", "image", "verify", "--no-cache", "--policy", wrong, reg.host+"/bb/cosigned@"+d); r.code != 1 || !strings.Contains(r.stderr, "not made by a trusted key") {
		t.Fatalf("verify under another key: exit %d %q", r.code, r.stderr)
	}

	// coffer signs with cosign's key → cosign verifies.
	pushBusybox(t, reg, "bb/coffer-signed:v1")
	wantOK(t, runCmd(t, env, "", cofferBin, "image", "sign", "--key", key, reg.host+"/bb/coffer-signed:v1"))
	verify := func(pub string) result {
		return runCmd(t, env, "", cosign, "verify", "--key", pub, "--insecure-ignore-tlog", "--allow-http-registry", reg.host+"/bb/coffer-signed:v1")
	}
	if r := verify(pub); r.code != 0 || !strings.Contains(r.stdout, "cosign container image signature") {
		t.Fatalf("cosign verify of coffer's signature: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := verify(other); r.code == 0 {
		t.Fatal("cosign verify accepted coffer's signature under another key")
	}
}

package testimage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteOCIImage: the tar is an OCI layout whose index names the ref
// and whose blobs match their digests.
func TestWriteOCIImage(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "hello"), []byte("hi"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("hello", filepath.Join(rootfs, "bin", "hi")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	if err := WriteOCIImage(rootfs, "example.test/x:1", []string{"/bin/hello"}, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 ||
		index.Manifests[0].Annotations["io.containerd.image.name"] != "example.test/x:1" {
		t.Fatalf("index.json = %s (%v)", files["index.json"], err)
	}
	blobs := 0
	for name, b := range files {
		if h, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			blobs++
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != h {
				t.Errorf("blob %s does not match its digest", name)
			}
		}
	}
	if blobs != 3 {
		t.Errorf("%d blobs, want layer, config and manifest", blobs)
	}
}

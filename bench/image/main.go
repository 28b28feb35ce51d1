package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coffer-project/coffer/bench/internal/benchutil"
	"github.com/coffer-project/coffer/internal/image"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

type config struct {
	coffer, registry, skopeo, umoci string
	runs, sizeMB, layers            int
	asJSON                          bool
	jsonFile                        string
}

func main() {
	var c config
	flag.StringVar(&c.coffer, "coffer", "bin/coffer", "coffer binary")
	flag.StringVar(&c.registry, "registry", "docker-registry", "docker-registry binary (Debian's distribution)")
	flag.StringVar(&c.skopeo, "skopeo", "skopeo", "skopeo binary")
	flag.StringVar(&c.umoci, "umoci", "umoci", "umoci binary")
	flag.IntVar(&c.runs, "n", 5, "runs of each variant (medians are reported)")
	flag.IntVar(&c.sizeMB, "size", 200, "uncompressed image size in MB")
	flag.IntVar(&c.layers, "layers", 5, "layers (each half random, half compressible)")
	flag.BoolVar(&c.asJSON, "json", false, "print JSON instead of a table")
	flag.StringVar(&c.jsonFile, "json-file", "", "also write the JSON report to this file")
	flag.Parse()
	r, err := run(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-image:", err)
		os.Exit(1)
	}
	os.Exit(benchutil.Emit(func() any { return r.json() }, r.table, c.asJSON, c.jsonFile))
}

func run(c config) (*report, error) {
	for _, b := range []*string{&c.coffer, &c.registry, &c.skopeo, &c.umoci} {
		p, err := exec.LookPath(*b)
		if err != nil {
			return nil, fmt.Errorf("%s not found (scripts/setup.sh installs docker-registry, skopeo and umoci; make build makes bin/coffer): %w", *b, err)
		}
		*b = p
	}
	dir, err := os.MkdirTemp("", "bench-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	host, stop, err := startRegistry(c.registry, dir)
	if err != nil {
		return nil, err
	}
	defer stop()
	priv, pub := filepath.Join(dir, "priv.pem"), filepath.Join(dir, "pub.pem")
	if err := writeKeys(priv, pub); err != nil {
		return nil, err
	}
	plainRef, encRef := host+"/bench/plain:v1", host+"/bench/enc:v1"
	fmt.Fprintf(os.Stderr, "bench-image: building a %d MB, %d-layer image…\n", c.sizeMB, c.layers)
	if err := pushImage(dir, plainRef, c.sizeMB, c.layers); err != nil {
		return nil, err
	}
	pubPEM, _ := os.ReadFile(pub)
	src, _ := image.ParseReference(plainRef, false)
	dst, _ := image.ParseReference(encRef, false)
	if _, err := image.Encrypt(context.Background(), src, dst, image.EncryptOptions{Recipients: [][]byte{pubPEM}}); err != nil {
		return nil, err
	}
	r := &report{SizeMB: c.sizeMB, Layers: c.layers, Runs: c.runs}
	n := 0
	fresh := func() string { n++; return filepath.Join(dir, fmt.Sprintf("out%d", n)) }
	cofferPull := func(ref string, extra ...string) func() error {
		return func() error {
			out := fresh()
			defer os.RemoveAll(out)
			return cmd(c.coffer, append(append([]string{"image", "pull", "--quiet", "--no-cache"}, extra...), ref, out)...)
		}
	}
	baseline := func(ref string, extra ...string) func() error {
		return func() error {
			lay, bundle := fresh(), fresh()
			defer os.RemoveAll(lay)
			defer os.RemoveAll(bundle)
			args := append([]string{"--insecure-policy", "copy", "-q", "--src-tls-verify=false"}, extra...)
			if err := cmd(c.skopeo, append(args, "docker://"+ref, "oci:"+lay+":v1")...); err != nil {
				return err
			}
			return cmd(c.umoci, "unpack", "--image", lay+":v1", bundle)
		}
	}
	cache := filepath.Join(dir, "cache")
	warm := func() error {
		out := fresh()
		defer os.RemoveAll(out)
		return cmd(c.coffer, "image", "pull", "--quiet", "--cache-dir", cache, plainRef, out)
	}
	if err := warm(); err != nil { // fills the cache
		return nil, err
	}
	variants := []struct {
		name            string
		coffer, base    func() error
		target          float64
		cofferD, baseDs []time.Duration
	}{
		{name: "plain", coffer: cofferPull(plainRef), base: baseline(plainRef), target: 1.5},
		{name: "encrypted (JWE)", coffer: cofferPull(encRef, "--decryption-key", priv), base: baseline(encRef, "--decryption-key", priv), target: 1.5},
	}
	var warmDs []time.Duration
	for i := 0; i < c.runs; i++ {
		fmt.Fprintf(os.Stderr, "bench-image: run %d/%d\n", i+1, c.runs)
		for vi := range variants {
			v := &variants[vi]
			order := []bool{true, false}
			if i%2 == 1 {
				order = []bool{false, true} // alternate who goes first
			}
			for _, isCoffer := range order {
				f := v.base
				if isCoffer {
					f = v.coffer
				}
				d, err := timed(f)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", v.name, err)
				}
				if isCoffer {
					v.cofferD = append(v.cofferD, d)
				} else {
					v.baseDs = append(v.baseDs, d)
				}
			}
		}
		d, err := timed(warm)
		if err != nil {
			return nil, fmt.Errorf("warm: %w", err)
		}
		warmDs = append(warmDs, d)
	}
	for _, v := range variants {
		r.Rows = append(r.Rows, row{Name: v.name, Coffer: median(v.cofferD), Baseline: median(v.baseDs), Target: v.target})
	}
	r.Warm = median(warmDs)
	return r, nil
}

func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func cmd(bin string, args ...string) error {
	c := exec.Command(bin, args...)
	var stderr strings.Builder
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return nil
}

// startRegistry runs docker-registry on a free loopback port.
func startRegistry(bin, dir string) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	host := l.Addr().String()
	l.Close()
	cfg := filepath.Join(dir, "registry.yml")
	doc := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "storage"), host)
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		return "", nil, err
	}
	p := exec.Command(bin, "serve", cfg)
	p.Stdout, p.Stderr = io.Discard, io.Discard
	if err := p.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = p.Process.Kill(); _ = p.Wait() }
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + host + "/v2/"); err == nil {
			resp.Body.Close()
			return host, stop, nil
		}
	}
	stop()
	return "", nil, fmt.Errorf("docker-registry did not start on %s", host)
}

// pushImage builds layers of half random, half compressible bytes.
func pushImage(dir, ref string, sizeMB, layers int) error {
	per := sizeMB << 20 / layers
	var img v1.Image
	for i := range layers {
		ld := filepath.Join(dir, fmt.Sprintf("layer%d", i))
		if err := os.MkdirAll(filepath.Join(ld, fmt.Sprintf("data%d", i)), 0o755); err != nil {
			return err
		}
		random := make([]byte, per/2)
		_, _ = rand.Read(random)
		line := fmt.Sprintf("layer %d line %d of compressible text\n", i, mrand.IntN(1000))
		text := []byte(strings.Repeat(line, per/2/len(line)+1)[:per/2])
		if err := os.WriteFile(filepath.Join(ld, fmt.Sprintf("data%d", i), "random"), random, 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(ld, fmt.Sprintf("data%d", i), "text"), text, 0o644); err != nil {
			return err
		}
		li, err := image.BuildImage(ld, image.BuildOptions{})
		if err != nil {
			return err
		}
		if img == nil {
			img = li
			continue
		}
		ls, _ := li.Layers()
		if img, err = mutate.AppendLayers(img, ls...); err != nil {
			return err
		}
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	return remote.Write(r, img)
}

func writeKeys(privFile, pubFile string) error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	pk, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err := os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk}), 0o644)
}

type row struct {
	Name             string
	Coffer, Baseline time.Duration
	Target           float64
}

type report struct {
	SizeMB, Layers, Runs int
	Rows                 []row
	Warm                 time.Duration
}

func (r *report) table(w io.Writer) {
	fmt.Fprintf(w, "image: %d MB in %d layers (half random, half text), gzip; medians of %d interleaved cold runs\n\n", r.SizeMB, r.Layers, r.Runs)
	fmt.Fprintf(w, "%-18s %14s %26s %8s %8s\n", "variant", "coffer pull", "skopeo copy + umoci unpack", "ratio", "target")
	for _, x := range r.Rows {
		ratio := float64(x.Baseline) / float64(x.Coffer)
		fmt.Fprintf(w, "%-18s %14s %26s %7.2fx %7.1fx %s\n", x.Name, benchutil.FmtDur(x.Coffer), benchutil.FmtDur(x.Baseline), ratio, x.Target, verdict(ratio >= x.Target))
	}
	fmt.Fprintf(w, "\nwarm-cache re-pull (coffer, by tag): %s (target < 1 s) %s\n", benchutil.FmtDur(r.Warm), verdict(r.Warm < time.Second))
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

func (r *report) json() any {
	type jrow struct {
		Name       string  `json:"name"`
		CofferMs   float64 `json:"coffer_ms"`
		BaselineMs float64 `json:"baseline_ms"`
		Ratio      float64 `json:"ratio"`
		Target     float64 `json:"target_ratio"`
	}
	out := struct {
		SizeMB int     `json:"size_mb"`
		Layers int     `json:"layers"`
		Runs   int     `json:"runs"`
		Rows   []jrow  `json:"variants"`
		WarmMs float64 `json:"warm_ms"`
	}{SizeMB: r.SizeMB, Layers: r.Layers, Runs: r.Runs, WarmMs: benchutil.Ms(r.Warm)}
	for _, x := range r.Rows {
		out.Rows = append(out.Rows, jrow{x.Name, benchutil.Ms(x.Coffer), benchutil.Ms(x.Baseline), float64(x.Baseline) / float64(x.Coffer), x.Target})
	}
	return out
}

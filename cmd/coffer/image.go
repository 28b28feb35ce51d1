package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer-project/coffer/internal/image"
	"github.com/coffer-project/coffer/internal/kbs/client"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// imageFlags are shared by the image verbs that read a registry.
type imageFlags struct {
	platform, caFile, authFile, cacheDir string
	insecure, noCache                    bool
	concurrency                          int
	decryptionKeys                       []string
	policy, registriesD                  string
	kbs                                  *kbsOpts // --kbs URL and attester flags (pull only)
}

func (f *imageFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.platform, "platform", "", "platform to select from a multi-arch image: os/arch[/variant] (default: this machine's)")
	fl.BoolVar(&f.insecure, "insecure", false, "allow plain HTTP to this registry (loopback registries may always use it)")
	fl.StringVar(&f.caFile, "ca-file", "", "extra CA certificate (PEM) to trust for the registry")
	fl.StringVar(&f.authFile, "auth-file", "", "Docker config file with registry credentials (default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or ~/.docker/config.json)")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "content cache directory (default: "+defaultImageCacheDir()+")")
	fl.BoolVar(&f.noCache, "no-cache", false, "neither read nor fill the content cache")
	fl.IntVar(&f.concurrency, "concurrency", 3, "layers to download at once")
}

// addRunFlags registers the image flags of `coffer run IMAGE` (the image
// cache is always used there: the unpacked rootfs is kept by digest).
func (f *imageFlags) addRunFlags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.platform, "platform", "", "IMAGE: platform to select from a multi-arch image (default: this machine's)")
	fl.BoolVar(&f.insecure, "insecure", false, "IMAGE: allow plain HTTP to its registry (loopback registries may always use it)")
	fl.StringVar(&f.caFile, "ca-file", "", "IMAGE: extra CA certificate (PEM) to trust for its registry")
	fl.StringVar(&f.authFile, "auth-file", "", "IMAGE: Docker config file with registry credentials")
	fl.StringVar(&f.policy, "policy", "", "IMAGE: signature policy (containers-policy.json) it must satisfy")
	fl.StringArrayVar(&f.decryptionKeys, "decryption-key", nil, "IMAGE: private key file for encrypted layers (repeatable; the plaintext is not cached)")
	f.concurrency = 3
	f.addRegistriesD(cmd)
}

func (f *imageFlags) addRegistriesD(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.registriesD, "registries-d", "", "registries.d directory locating GPG signatures for signedBy (default: "+image.DefaultRegistriesD+" if present)")
}

// defaultImageCacheDir follows the guest cache's conventions.
func defaultImageCacheDir() string {
	if d := os.Getenv("COFFER_IMAGE_CACHE"); d != "" {
		return d
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "coffer", "images")
	}
	if os.Geteuid() == 0 {
		return "/var/lib/coffer/images"
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "coffer", "images")
	}
	return filepath.Join(os.TempDir(), "coffer-images-"+strconv.Itoa(os.Geteuid()))
}

func (f *imageFlags) puller(g *globalOpts, progress func(image.Event)) (*image.Puller, error) {
	p, err := image.ParsePlatform(f.platform)
	if err != nil {
		return nil, err
	}
	o := image.Options{Platform: p, CAFile: f.caFile, AuthFile: f.authFile, Concurrency: f.concurrency, Progress: progress, Logger: g.logger()}
	for _, k := range f.decryptionKeys {
		b, err := os.ReadFile(k)
		if err != nil {
			return nil, fmt.Errorf("--decryption-key: %w", err)
		}
		o.DecryptKeys = append(o.DecryptKeys, b)
	}
	if f.policy != "" {
		if o.Policy, err = image.LoadPolicy(f.policy); err != nil {
			return nil, err
		}
	}
	if rd := f.registriesD; rd != "" {
		if o.Lookaside, err = image.LoadLookaside(rd); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(image.DefaultRegistriesD); err == nil {
		if o.Lookaside, err = image.LoadLookaside(image.DefaultRegistriesD); err != nil {
			return nil, err
		}
	}
	if f.kbs != nil && f.kbs.url != "" {
		o.KeyFetcher = kbsKeyFetcher(f.kbs)
	}
	if !f.noCache {
		o.CacheDir = f.cacheDir
		if o.CacheDir == "" {
			o.CacheDir = defaultImageCacheDir()
		}
	}
	return image.NewPuller(o)
}

func newImageCmd(g *globalOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Pull, inspect and push container images",
	}
	cmd.AddCommand(newImagePullCmd(g), newImageInspectCmd(g), newImagePushCmd(), newImageEncryptCmd(), newImageSignCmd(), newImageVerifyCmd(g), newImagePruneCmd())
	return cmd
}

func newImagePullCmd(g *globalOpts) *cobra.Command {
	f := &imageFlags{}
	var quiet bool
	cmd := &cobra.Command{
		Use:   "pull [flags] REF DEST",
		Short: "Pull an image and unpack it into DEST (DEST/rootfs, DEST/config.json)",
		Long: `Pull an image from a registry or an OCI image layout and unpack it into DEST,
which must not exist or be empty: DEST/rootfs is the root filesystem,
DEST/config.json the image config and DEST/manifest.json its manifest.

Every blob is checked against its digest and every layer against the
config's diff_ids; hostile layers (paths leaving the root, links out of it,
decompression bombs) are refused. A failed pull leaves DEST as it was.

REF is a registry reference (host[:port]/repo[:tag|@digest]) or an OCI
image layout (oci:DIR[:TAG]).`,
		Example: `  coffer image pull 127.0.0.1:5000/busybox:latest ./bb
  coffer image pull --platform linux/arm64 registry.example/app@sha256:… ./app
  coffer image pull oci:./layout:v1 ./out`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := image.ParseReference(args[0], f.insecure)
			if err != nil {
				return err
			}
			var pr *progressPrinter
			var cb func(image.Event)
			if !quiet {
				pr = newProgressPrinter(os.Stderr)
				cb = pr.event
			}
			p, err := f.puller(g, cb)
			if err != nil {
				return err
			}
			res, err := p.Pull(cmd.Context(), ref, args[1])
			if pr != nil {
				pr.stop()
			}
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Fprintf(os.Stderr, "pulled %s (%s) into %s: %d layers, %s downloaded, %s\n",
					ref, res.Digest, args[1], len(res.Layers), humanBytes(res.Downloaded), res.Duration.Round(time.Millisecond))
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing but errors")
	cmd.Flags().StringArrayVar(&f.decryptionKeys, "decryption-key", nil, "private key file (PEM/DER/JWK) for encrypted layers (repeatable)")
	cmd.Flags().StringVar(&f.policy, "policy", "", "signature policy (containers-policy.json) the image must satisfy before any layer is fetched")
	f.addRegistriesD(cmd)
	f.kbs = &kbsOpts{}
	cmd.Flags().StringVar(&f.kbs.url, "kbs", "", "KBS URL: attest and fetch the keys of layers encrypted for a KBS key (kbs:///…)")
	cmd.Flags().StringVar(&f.kbs.certFile, "kbs-cert", "", "PEM certificate to trust for an HTTPS KBS")
	attesterFlags(cmd, f.kbs)
	return cmd
}

func newImageInspectCmd(g *globalOpts) *cobra.Command {
	f := &imageFlags{}
	cmd := &cobra.Command{
		Use:   "inspect [flags] REF",
		Short: "Print an image's digest, platform, layers and config as JSON (no layer is downloaded)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := image.ParseReference(args[0], f.insecure)
			if err != nil {
				return err
			}
			p, err := f.puller(g, nil)
			if err != nil {
				return err
			}
			img, err := p.Resolve(cmd.Context(), ref)
			if err != nil {
				return err
			}
			type layer struct {
				Digest    string `json:"digest"`
				DiffID    string `json:"diffID"`
				Size      int64  `json:"size"`
				MediaType string `json:"mediaType"`
			}
			out := struct {
				Reference   string    `json:"reference"`
				Digest      string    `json:"digest"`
				IndexDigest string    `json:"indexDigest,omitempty"`
				Platforms   []string  `json:"platforms,omitempty"`
				MediaType   string    `json:"mediaType"`
				OS          string    `json:"os"`
				Arch        string    `json:"architecture"`
				Variant     string    `json:"variant,omitempty"`
				Layers      []layer   `json:"layers"`
				Config      v1.Config `json:"config"`
			}{Reference: ref.String(), Digest: img.Digest.String(), Platforms: img.Platforms, MediaType: img.MediaType,
				OS: img.Config.OS, Arch: img.Config.Architecture, Variant: img.Config.Variant, Config: img.Config.Config}
			if img.IndexDigest != nil {
				out.IndexDigest = img.IndexDigest.String()
			}
			for i, l := range img.Manifest.Layers {
				out.Layers = append(out.Layers, layer{Digest: l.Digest.String(), DiffID: img.Config.RootFS.DiffIDs[i].String(), Size: l.Size, MediaType: string(l.MediaType)})
			}
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	}
	f.add(cmd)
	return cmd
}

func newImagePushCmd() *cobra.Command {
	var insecure bool
	var caFile, authFile, comp, platform, workdir, user string
	var entrypoint, cmdArgs, env []string
	cmd := &cobra.Command{
		Use:   "push [flags] SRC REF",
		Short: "Push an OCI image layout (oci:DIR[:TAG]) or a directory (as a one-layer image) to a registry",
		Long: `Push SRC to the registry reference REF and print the pushed digest.

SRC is an OCI image layout (oci:DIR[:TAG]; a layout holding several unnamed
images is pushed as a multi-arch index) or a directory, which becomes a
one-layer image whose config is set by --entrypoint, --cmd, --env, --workdir,
--user and --platform.`,
		Example: `  coffer image push --cmd sh ./rootfs 127.0.0.1:5000/busybox:latest
  coffer image push --compression zstd oci:./layout:v1 127.0.0.1:5000/app:v1`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := image.ParseReference(args[1], insecure)
			if err != nil {
				return err
			}
			p, err := image.ParsePlatform(platform)
			if err != nil {
				return err
			}
			o := image.PushOptions{CAFile: caFile, AuthFile: authFile, Build: image.BuildOptions{
				Compression: image.Compression(comp), Platform: p,
				Config: v1.Config{Entrypoint: entrypoint, Cmd: cmdArgs, Env: env, WorkingDir: workdir, User: user},
			}}
			d, err := image.Push(cmd.Context(), args[0], ref, o)
			if err != nil {
				return err
			}
			fmt.Println(d)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&insecure, "insecure", false, "allow plain HTTP to this registry (loopback registries may always use it)")
	fl.StringVar(&caFile, "ca-file", "", "extra CA certificate (PEM) to trust for the registry")
	fl.StringVar(&authFile, "auth-file", "", "Docker config file with registry credentials")
	fl.StringVar(&comp, "compression", "gzip", "layer compression for a directory: gzip, zstd or none")
	fl.StringVar(&platform, "platform", "", "platform recorded for a directory: os/arch[/variant] (default: this machine's)")
	fl.StringArrayVar(&entrypoint, "entrypoint", nil, "entrypoint for a directory (repeat for each word)")
	fl.StringArrayVar(&cmdArgs, "cmd", nil, "command for a directory (repeat for each word)")
	fl.StringArrayVar(&env, "env", nil, "environment variable KEY=VALUE for a directory")
	fl.StringVar(&workdir, "workdir", "", "working directory for a directory")
	fl.StringVar(&user, "user", "", "user for a directory (UID[:GID])")
	return cmd
}

func newImageEncryptCmd() *cobra.Command {
	var insecure bool
	var caFile, authFile, platform string
	var recipients []string
	var kbsKey, keyFile string
	cmd := &cobra.Command{
		Use:   "encrypt (--recipient jwe:PUB.pem | --kbs-key kbs:///REPO/TYPE/TAG --key-file K) [flags] SRC DST",
		Short: "Copy an image with its layers encrypted (ocicrypt JWE, as skopeo --encryption-key does)",
		Long: `Copy SRC to DST with every layer encrypted for the given recipients:
AES-256-CTR + HMAC per layer, the layer key wrapped with each recipient's
public key (JWE) in the layer annotations, the config unchanged. The result
decrypts with ` + "`coffer image pull --decryption-key PRIV.pem`" + ` or with
skopeo/containerd imgcrypt.

With --kbs-key and --key-file the layer keys are wrapped instead with the
32-byte key in the file (AES-256-GCM), the Confidential Containers
key-provider scheme: store the same key in the KBS under that path and pull
with --kbs URL, which attests and fetches it.

SRC and DST are registry references or OCI layouts (oci:DIR[:TAG]); the
digest of the new manifest is printed.`,
		Example: `  coffer image encrypt --recipient jwe:pub.pem oci:./plain:v1 oci:./enc:v1
  coffer image encrypt --recipient jwe:pub.pem 127.0.0.1:5000/app:v1 127.0.0.1:5000/app:v1-enc`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := image.ParseReference(args[0], insecure)
			if err != nil {
				return err
			}
			dst, err := image.ParseReference(args[1], insecure)
			if err != nil {
				return err
			}
			p, err := image.ParsePlatform(platform)
			if err != nil {
				return err
			}
			o := image.EncryptOptions{Platform: p, CAFile: caFile, AuthFile: authFile}
			for _, r := range recipients {
				file, ok := strings.CutPrefix(r, "jwe:")
				if !ok {
					return fmt.Errorf("--recipient %q: only jwe:PUBKEY-FILE recipients are supported", r)
				}
				b, err := os.ReadFile(file)
				if err != nil {
					return fmt.Errorf("--recipient: %w", err)
				}
				o.Recipients = append(o.Recipients, b)
			}
			if kbsKey != "" || keyFile != "" {
				if o.KBSKey, err = os.ReadFile(keyFile); err != nil {
					return fmt.Errorf("--key-file: %w", err)
				}
				o.KBSKeyID = kbsKey
			}
			d, err := image.Encrypt(cmd.Context(), src, dst, o)
			if err != nil {
				return err
			}
			fmt.Println(d)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&recipients, "recipient", nil, "jwe:PUBLIC-KEY-FILE (PEM/DER/JWK) that can decrypt the image (repeatable)")
	fl.StringVar(&kbsKey, "kbs-key", "", "key id in the KBS (kbs:///repo/type/tag) of the key given by --key-file")
	fl.StringVar(&keyFile, "key-file", "", "file holding the 32-byte key encryption key for --kbs-key")
	fl.BoolVar(&insecure, "insecure", false, "allow plain HTTP to the registries (loopback registries may always use it)")
	fl.StringVar(&caFile, "ca-file", "", "extra CA certificate (PEM) to trust for the registries")
	fl.StringVar(&authFile, "auth-file", "", "Docker config file with registry credentials")
	fl.StringVar(&platform, "platform", "", "platform to take from a multi-arch source (default: this machine's)")
	return cmd
}

func newImageSignCmd() *cobra.Command {
	var insecure bool
	var caFile, authFile, keyFile, passFile string
	cmd := &cobra.Command{
		Use:   "sign --key PRIV.pem [flags] REF",
		Short: "Sign an image in a registry (sigstore/cosign-style signature with an ECDSA key)",
		Long: `Sign the manifest REF resolves to with an ECDSA private key (PEM, PKCS#8 or
SEC 1, or an encrypted key from cosign generate-key-pair or skopeo
generate-sigstore-key, opened with --passphrase-file or COSIGN_PASSWORD) and store the signature in the registry where cosign and
containers/image look for it (tag sha256-<digest>.sig). The signed identity
is REF's repository and tag (the repository alone for a digest). Verify with
` + "`coffer image verify --policy`" + ` or a sigstoreSigned requirement in
skopeo/podman's policy.json. Prints the signed digest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := image.ParseReference(args[0], insecure)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(keyFile)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			pass, err := signPassphrase(passFile)
			if err != nil {
				return err
			}
			key, err := image.ParsePrivateKey(b, pass)
			if err != nil {
				return fmt.Errorf("--key %s: %w", keyFile, err)
			}
			d, err := image.Sign(cmd.Context(), ref, key, image.SignOptions{CAFile: caFile, AuthFile: authFile})
			if err != nil {
				return err
			}
			fmt.Println(d)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&keyFile, "key", "", "ECDSA private key file (PEM; cosign/sigstore encrypted keys too)")
	fl.StringVar(&passFile, "passphrase-file", "", "file holding the passphrase of an encrypted --key (default: $COSIGN_PASSWORD)")
	fl.BoolVar(&insecure, "insecure", false, "allow plain HTTP to this registry (loopback registries may always use it)")
	fl.StringVar(&caFile, "ca-file", "", "extra CA certificate (PEM) to trust for the registry")
	fl.StringVar(&authFile, "auth-file", "", "Docker config file with registry credentials")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

func newImagePruneCmd() *cobra.Command {
	var cacheDir string
	var olderThan time.Duration
	cmd := &cobra.Command{
		Use:   "prune [flags]",
		Short: "Remove cached blobs and unpacked images (all, or those unused for --older-than)",
		Long: `Remove entries of the image content cache: blobs and the root filesystems
` + "`coffer run IMAGE`" + ` unpacked, all of them or those not used for --older-than,
and every leftover of an interrupted pull. Waits for pulls and runs that
use the cache, and blocks new ones while it works. Running pods are not
affected: each has its own copy of its root filesystem.`,
		Example: `  coffer image prune
  coffer image prune --older-than 168h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cacheDir == "" {
				cacheDir = defaultImageCacheDir()
			}
			if _, err := os.Stat(cacheDir); errors.Is(err, os.ErrNotExist) {
				fmt.Printf("nothing to prune: %s does not exist\n", cacheDir)
				return nil
			}
			c, err := image.OpenCache(cacheDir)
			if err != nil {
				return err
			}
			// Pulls and runs hold the cache shared; say why we wait.
			waiting := time.AfterFunc(time.Second, func() {
				fmt.Fprintf(os.Stderr, "waiting for the pulls and runs using %s to finish...\n", cacheDir)
			})
			st, err := c.Prune(cmd.Context(), olderThan)
			waiting.Stop()
			if err != nil {
				return err
			}
			fmt.Printf("removed %d blobs (%s), %d unpacked images, %d leftovers from %s\n", st.Blobs, humanBytes(st.Bytes), st.Unpacked, st.Stale, cacheDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "content cache directory (default: "+defaultImageCacheDir()+")")
	cmd.Flags().DurationVar(&olderThan, "older-than", 0, "only remove entries not used for this long (e.g. 24h; default: everything)")
	return cmd
}

// signPassphrase returns the passphrase of an encrypted signing key: the
// contents of file (one trailing newline dropped), else COSIGN_PASSWORD as
// cosign reads it, else nil (the key must then be unencrypted).
func signPassphrase(file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--passphrase-file: %w", err)
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
		return bytes.TrimSuffix(b, []byte("\r")), nil
	}
	if v, ok := os.LookupEnv("COSIGN_PASSWORD"); ok {
		return []byte(v), nil
	}
	return nil, nil
}

func newImageVerifyCmd(g *globalOpts) *cobra.Command {
	f := &imageFlags{}
	cmd := &cobra.Command{
		Use:   "verify --policy POLICY.json [flags] REF",
		Short: "Check an image against a signature policy (containers-policy.json) without pulling its layers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := image.ParseReference(args[0], f.insecure)
			if err != nil {
				return err
			}
			pol := f.policy
			f.policy = "" // checked below, not by the puller
			p, err := f.puller(g, nil)
			if err != nil {
				return err
			}
			policy, err := image.LoadPolicy(pol)
			if err != nil {
				return err
			}
			img, err := p.Resolve(cmd.Context(), ref)
			if err != nil {
				return err
			}
			if err := p.Verify(cmd.Context(), policy, img); err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Printf("%s (%s): accepted by %s\n", ref, img.Digest, pol)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&f.policy, "policy", "", "signature policy file (containers-policy.json)")
	f.addRegistriesD(cmd)
	_ = cmd.MarkFlagRequired("policy")
	return cmd
}

// kbsKeyFetcher attests to the KBS on first use and fetches layer keys,
// each key id once.
func kbsKeyFetcher(o *kbsOpts) image.KeyFetcher {
	var mu sync.Mutex
	var c *client.Client
	keys := map[string][]byte{}
	return func(ctx context.Context, kid string) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		if k, ok := keys[kid]; ok {
			return k, nil
		}
		if c == nil {
			var err error
			if c, err = o.client(); err != nil {
				return nil, fmt.Errorf("KBS client: %w", err)
			}
		}
		k, err := c.GetResource(ctx, kid)
		if err != nil {
			return nil, fmt.Errorf("KBS %s refused or failed: %w", o.url, err)
		}
		keys[kid] = k
		return k, nil
	}
}

// progressPrinter shows per-layer progress: redrawn lines on a terminal,
// one line per finished layer otherwise.
type progressPrinter struct {
	w      io.Writer
	tty    bool
	mu     sync.Mutex
	layers []image.Event
	drawn  int
	quit   chan struct{}
	wg     sync.WaitGroup
}

func newProgressPrinter(f *os.File) *progressPrinter {
	p := &progressPrinter{w: f, tty: term.IsTerminal(int(f.Fd())), quit: make(chan struct{})}
	if p.tty {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			t := time.NewTicker(150 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					p.draw()
				case <-p.quit:
					return
				}
			}
		}()
	}
	return p
}

func (p *progressPrinter) event(e image.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.layers) < e.Layers {
		p.layers = make([]image.Event, e.Layers)
	}
	prev := p.layers[e.Layer].State
	p.layers[e.Layer] = e
	if !p.tty && e.State == image.StateDone && prev != image.StateDone {
		how := "downloaded"
		if e.Cached {
			how = "cached"
		}
		fmt.Fprintf(p.w, "layer %d/%d %s %s %s\n", e.Layer+1, e.Layers, shortDigest(e.Digest), humanBytes(e.Size), how)
	}
}

func (p *progressPrinter) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.layers) == 0 {
		return
	}
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn)
	}
	for i, e := range p.layers {
		state := string(e.State)
		if e.Cached {
			state += " (cached)"
		}
		bar := ""
		if e.Size > 0 {
			n := int(20 * min(e.Done, e.Size) / e.Size)
			bar = "[" + strings.Repeat("=", n) + strings.Repeat(" ", 20-n) + "]"
		}
		fmt.Fprintf(&b, "\x1b[2Klayer %d/%d %s %s %9s/%-9s %s\n", i+1, len(p.layers), shortDigest(e.Digest), bar,
			humanBytes(e.Done), humanBytes(e.Size), state)
	}
	p.drawn = len(p.layers)
	_, _ = io.WriteString(p.w, b.String())
}

func (p *progressPrinter) stop() {
	close(p.quit)
	p.wg.Wait()
	if p.tty {
		p.draw()
	}
}

func shortDigest(h v1.Hash) string {
	if len(h.Hex) < 12 {
		return h.String()
	}
	return h.Algorithm + ":" + h.Hex[:12]
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fkB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// imageArgs handles `coffer run IMAGE [CMD [ARGS...]]`: without --rootfs
// and when the first argument does not follow "--", it pulls IMAGE (once:
// the unpacked rootfs is kept in the image cache by manifest digest), uses
// it as --rootfs and takes the command, environment, working directory and
// user from the image config (flags override). It returns the command.
func imageArgs(ctx context.Context, cmd *cobra.Command, g *globalOpts, o *runOpts, args []string) ([]string, func(), error) {
	nothing := func() {}
	if o.rootfs != "" || len(args) == 0 || cmd.ArgsLenAtDash() == 0 {
		return args, nothing, nil
	}
	ref, err := image.ParseReference(args[0], o.image.insecure)
	if err != nil {
		return nil, nothing, err
	}
	rest := args[1:]
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	var progress func(image.Event)
	var pr *progressPrinter
	if term.IsTerminal(int(os.Stderr.Fd())) {
		pr = newProgressPrinter(os.Stderr)
		progress = pr.event
	}
	stop := func() {
		if pr != nil {
			pr.stop()
			pr = nil
		}
	}
	defer stop()
	p, err := o.image.puller(g, progress) // with the cache: run has no --no-cache
	if err != nil {
		return nil, nothing, err
	}
	img, err := p.Resolve(ctx, ref)
	if err != nil {
		return nil, nothing, err
	}
	if err := p.CheckPolicy(ctx, img); err != nil {
		return nil, nothing, err
	}
	// The unpacked rootfs must stay until the run has built its disk from
	// it: hold the cache shared until cleanup (`coffer image prune` waits).
	unlock, err := p.Cache().Shared(ctx)
	if err != nil {
		return nil, nothing, err
	}
	unpacked := filepath.Join(p.Cache().Dir(), image.UnpackedDir)
	if err := os.MkdirAll(unpacked, 0o700); err != nil {
		unlock()
		return nil, nothing, err
	}
	dest, cleanup := filepath.Join(unpacked, img.Digest.Hex), unlock
	if img.Encrypted() {
		// Decrypted layers are unpacked for this run only (and removed
		// once the rootfs disk is built), so a later run without the
		// key cannot reuse the plaintext.
		// A run killed before its cleanup leaves its copy: the next such
		// run removes it (its lock is free), as does `coffer image prune`.
		if n, err := p.Cache().SweepRunDirs(); err != nil {
			g.logger().Warn("remove decrypted image copies of ended runs", "err", err)
		} else if n > 0 {
			g.logger().Info("removed decrypted image copies of ended runs", "count", n)
		}
		var release func() error
		if dest, release, err = p.Cache().RunDir(); err != nil {
			unlock()
			return nil, nothing, err
		}
		cleanup = func() {
			if err := release(); err != nil {
				g.logger().Warn("remove decrypted image copy", "dir", dest, "err", err)
			}
			unlock()
		}
		if _, err := p.Unpack(ctx, img, dest); err != nil {
			cleanup()
			return nil, nothing, err
		}
	} else if _, err := os.Stat(filepath.Join(dest, "rootfs")); err == nil {
		now := time.Now()
		_ = os.Chtimes(dest, now, now) // used: prune --older-than keeps it
	} else if _, err := p.Unpack(ctx, img, dest); err != nil {
		if _, serr := os.Stat(filepath.Join(dest, "rootfs")); serr != nil { // not a concurrent pull's win
			unlock()
			return nil, nothing, err
		}
	}
	stop()
	argv, err := imageRunConfig(ref, img, o, dest, rest)
	if err != nil {
		cleanup()
		return nil, nothing, err
	}
	return argv, cleanup, nil
}

// imageRunConfig applies the image config (entrypoint, cmd, env, workdir,
// user) under the run's flags, with the rootfs unpacked in dest.
func imageRunConfig(ref image.Reference, img *image.Image, o *runOpts, dest string, rest []string) ([]string, error) {
	var err error
	o.rootfs = filepath.Join(dest, "rootfs")
	c := img.Config.Config
	argv := append([]string{}, c.Entrypoint...)
	if len(rest) > 0 {
		argv = append(argv, rest...)
	} else {
		argv = append(argv, c.Cmd...)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("image %s has no entrypoint or cmd: give the command after the image", ref)
	}
	// The merged values are checked again as flags (checkProcessFlags):
	// the image's own must be right here, for an error that names it.
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return nil, fmt.Errorf("image %s: its config has a bad environment variable %q (not KEY=VALUE)", ref, e)
		}
	}
	o.env = append(append([]string{}, c.Env...), o.env...)
	if o.workdir == "" {
		if c.WorkingDir != "" && !strings.HasPrefix(c.WorkingDir, "/") {
			return nil, fmt.Errorf("image %s: its config's working directory %q is not absolute: pass -w DIR", ref, c.WorkingDir)
		}
		o.workdir = c.WorkingDir
	}
	if o.user == "" && c.User != "" {
		if o.user, err = resolveUser(o.rootfs, c.User); err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
	}
	return argv, nil
}

// resolveUser turns an image config user (uid, uid:gid, name, name:group)
// into UID:GID, reading etc/passwd and etc/group inside rootfs (never
// following links out of it).
func resolveUser(rootfs, user string) (string, error) {
	u, grp, hasGroup := strings.Cut(user, ":")
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return "", err
	}
	defer root.Close()
	lookup := func(file, name string, field int) (string, string, error) {
		if _, err := strconv.ParseUint(name, 10, 32); err == nil && field == 2 {
			return name, "", nil
		}
		f, err := root.Open(file)
		if err != nil {
			return "", "", fmt.Errorf("user %q: %s: %w", user, file, err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, 1<<20))
		if err != nil {
			return "", "", err
		}
		for _, line := range strings.Split(string(b), "\n") {
			fs := strings.Split(line, ":")
			if len(fs) > 3 && (fs[0] == name || fs[2] == name) {
				return fs[2], fs[3], nil
			}
		}
		return "", "", fmt.Errorf("user %q: %s not found in %s", user, name, file)
	}
	uid, gid, err := lookup("etc/passwd", u, 2)
	if err != nil {
		return "", err
	}
	if _, err := strconv.ParseUint(u, 10, 32); err == nil {
		gid = "0" // numeric user: primary group from passwd if listed
		if _, g, err := lookup("etc/passwd", u, 0); err == nil {
			gid = g
		}
	}
	if hasGroup {
		if _, err := strconv.ParseUint(grp, 10, 32); err == nil {
			gid = grp
		} else if gid, _, err = lookup("etc/group", grp, 0); err != nil {
			return "", err
		}
	}
	if gid == "" {
		gid = "0"
	}
	return uid + ":" + gid, nil
}

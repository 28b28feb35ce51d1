package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/coffer-project/coffer/internal/kbs/admintoken"
	builtinpolicy "github.com/coffer-project/coffer/internal/policy/builtin"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/client"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
	"github.com/spf13/cobra"
)

type kbsOpts struct {
	url, certFile, adminTokenFile string
	tee, simDir, measurement      string
	keyAlg, keyCurve              string
	initData                      string
}

func newKbsCmd(g *globalOpts) *cobra.Command {
	o := &kbsOpts{}
	cmd := &cobra.Command{
		Use:   "kbs",
		Short: "Talk to a KBS (coffer-kbs or Trustee): attest, fetch and manage resources, policies, reference values",
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.url, "url", "http://127.0.0.1:8080", "KBS URL")
	pf.StringVar(&o.certFile, "cert-file", "", "PEM certificate to trust for an HTTPS KBS")
	pf.StringVar(&o.adminTokenFile, "admin-token-file", "", "admin bearer token file (default: ~/.coffer/kbs-admin-token if present)")
	cmd.AddCommand(
		newKbsAttestCmd(g, o), newKbsGetResourceCmd(g, o),
		newKbsSetResourceCmd(o), newKbsDeleteResourceCmd(o), newKbsListResourcesCmd(o),
		newKbsSetAttestationPolicyCmd(o), newKbsSetResourcePolicyCmd(o),
		newKbsSetReferenceValueCmd(o), newKbsGetReferenceValueCmd(o),
		newKbsAdminTokenCmd(), newKbsAdminKeygenCmd(),
	)
	return cmd
}

// attesterFlags are shared by attest and get-resource.
func attesterFlags(cmd *cobra.Command, o *kbsOpts) {
	f := cmd.Flags()
	f.StringVar(&o.tee, "tee", "auto", "evidence to produce: auto (the platform's TEE, else sample), sample, snp, or sim-snp (simulated chip, dev)")
	f.StringVar(&o.simDir, "sim-dir", "", "simulated SNP chip directory for --tee sim-snp (a dev coffer-kbs keeps one in <data-dir>/sim-snp)")
	f.StringVar(&o.measurement, "measurement", "", "launch MEASUREMENT (hex, 48 bytes) of the simulated guest")
	f.StringVar(&o.keyAlg, "key-algorithm", "ECDH-ES+A256KW", "TEE key: ECDH-ES+A256KW, RSA-OAEP-256 or RSA1_5")
	f.StringVar(&o.keyCurve, "key-curve", "P-256", "curve for ECDH-ES+A256KW: P-256 or P-521")
	f.StringVar(&o.initData, "init-data", "", "init-data TOML file to send with the evidence")
}

func (o *kbsOpts) attester() (tee.Attester, error) {
	switch o.tee {
	case "auto":
		return tee.Detect(), nil
	case "sample":
		return tee.NewSample(), nil
	case "snp":
		return tee.NewSNP(), nil
	case "sim-snp":
		if o.simDir == "" {
			return nil, errors.New("--tee sim-snp needs --sim-dir (a dev coffer-kbs keeps its chip in <data-dir>/sim-snp)")
		}
		p, err := sim.Load(o.simDir)
		if err != nil {
			return nil, err
		}
		var lc sim.LaunchConfig
		if o.measurement != "" {
			m, err := hex.DecodeString(o.measurement)
			if err != nil || len(m) != len(lc.Measurement) {
				return nil, fmt.Errorf("--measurement must be %d bytes of hex", len(lc.Measurement))
			}
			copy(lc.Measurement[:], m)
		}
		if o.initData != "" {
			b, err := os.ReadFile(o.initData)
			if err != nil {
				return nil, err
			}
			digest, err := initDataHostData(b)
			if err != nil {
				return nil, err
			}
			copy(lc.HostData[:], digest)
		}
		gst, err := p.Launch(lc)
		if err != nil {
			return nil, err
		}
		return tee.NewSimSNP(gst), nil
	}
	return nil, fmt.Errorf("unknown --tee %q: use auto, sample, snp or sim-snp", o.tee)
}

// initDataHostData is what a host puts in HOST_DATA for init data: the
// digest of the raw TOML with the algorithm it names (the verifier
// compares it zero-padded or truncated to the 32-byte field).
func initDataHostData(toml []byte) ([]byte, error) {
	d, _, err := protocol.InitDataDigest(&protocol.InitData{Format: "toml", Body: string(toml)})
	return d, err
}

func (o *kbsOpts) client() (*client.Client, error) {
	att, err := o.attester()
	if err != nil {
		return nil, err
	}
	opts := client.Options{CertFile: o.certFile, KeyAlgorithm: o.keyAlg, KeyCurve: o.keyCurve}
	if o.keyAlg != "ECDH-ES+A256KW" {
		opts.KeyCurve = ""
	}
	if o.initData != "" {
		b, err := os.ReadFile(o.initData)
		if err != nil {
			return nil, err
		}
		opts.InitData = &protocol.InitData{Format: "toml", Body: string(b)}
	}
	return client.New(o.url, att, opts)
}

func (o *kbsOpts) admin() (*client.Admin, error) {
	hc, err := client.HTTPClient(o.certFile)
	if err != nil {
		return nil, err
	}
	tok := ""
	path := o.adminTokenFile
	if path == "" {
		if home, err := os.UserHomeDir(); err == nil {
			if _, err := os.Stat(filepath.Join(home, ".coffer", "kbs-admin-token")); err == nil {
				path = filepath.Join(home, ".coffer", "kbs-admin-token")
			}
		}
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read admin token: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	return client.NewAdmin(o.url, hc, tok), nil
}

func kbsErr(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: 1, err: err}
}

func newKbsAttestCmd(g *globalOpts, o *kbsOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attest",
		Short: "Run the attestation handshake and print the token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return kbsErr(err)
			}
			tok, err := c.Attest(cmd.Context())
			if err != nil {
				return kbsErr(err)
			}
			fmt.Println(tok)
			return nil
		},
	}
	attesterFlags(cmd, o)
	return cmd
}

func newKbsGetResourceCmd(g *globalOpts, o *kbsOpts) *cobra.Command {
	var path, output string
	cmd := &cobra.Command{
		Use:   "get-resource --path REPO/TYPE/TAG",
		Short: "Attest, fetch a resource and print it base64-encoded (or write it with --output)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return kbsErr(err)
			}
			data, err := c.GetResource(cmd.Context(), path)
			if err != nil {
				return kbsErr(err)
			}
			if output != "" {
				return kbsErr(os.WriteFile(output, data, 0o600))
			}
			fmt.Println(base64.StdEncoding.EncodeToString(data))
			return nil
		},
	}
	attesterFlags(cmd, o)
	cmd.Flags().StringVar(&path, "path", "", "resource path repo/type/tag (or kbs:///repo/type/tag)")
	cmd.Flags().StringVar(&output, "output", "", "write the plaintext to this file instead")
	_ = cmd.MarkFlagRequired("path")
	return cmd
}

func newKbsSetResourceCmd(o *kbsOpts) *cobra.Command {
	var path, file string
	cmd := &cobra.Command{
		Use: "set-resource --path REPO/TYPE/TAG --file FILE", Short: "Store a resource (admin)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(file)
			if err != nil {
				return kbsErr(err)
			}
			a, err := o.admin()
			if err != nil {
				return kbsErr(err)
			}
			return kbsErr(a.SetResource(cmd.Context(), path, data))
		},
	}
	cmd.Flags().StringVar(&path, "path", "", "resource path repo/type/tag")
	cmd.Flags().StringVar(&file, "file", "", "file with the resource's bytes")
	_ = cmd.MarkFlagRequired("path")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func newKbsDeleteResourceCmd(o *kbsOpts) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use: "delete-resource --path REPO/TYPE/TAG", Short: "Delete a resource (admin)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := o.admin()
			if err != nil {
				return kbsErr(err)
			}
			return kbsErr(a.DeleteResource(cmd.Context(), path))
		},
	}
	cmd.Flags().StringVar(&path, "path", "", "resource path repo/type/tag")
	_ = cmd.MarkFlagRequired("path")
	return cmd
}

func newKbsListResourcesCmd(o *kbsOpts) *cobra.Command {
	return &cobra.Command{
		Use: "list-resources", Short: "List resource paths (admin)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := o.admin()
			if err != nil {
				return kbsErr(err)
			}
			paths, err := a.ListResources(cmd.Context())
			if err != nil {
				return kbsErr(err)
			}
			for _, p := range paths {
				fmt.Println(p)
			}
			return nil
		},
	}
}

func newKbsSetAttestationPolicyCmd(o *kbsOpts) *cobra.Command {
	var file, id string
	cmd := &cobra.Command{
		Use: "set-attestation-policy --policy-file FILE [--id default_cpu]", Short: "Upload a Rego appraisal policy (admin)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rego, err := os.ReadFile(file)
			if err != nil {
				return kbsErr(err)
			}
			a, err := o.admin()
			if err != nil {
				return kbsErr(err)
			}
			return kbsErr(a.SetAttestationPolicy(cmd.Context(), id, rego))
		},
	}
	cmd.Flags().StringVar(&file, "policy-file", "", "Rego file")
	cmd.Flags().StringVar(&id, "id", "default_cpu", "policy id")
	_ = cmd.MarkFlagRequired("policy-file")
	return cmd
}

func newKbsSetResourcePolicyCmd(o *kbsOpts) *cobra.Command {
	var file, builtin string
	cmd := &cobra.Command{
		Use:   "set-resource-policy (--policy-file FILE | --builtin NAME)",
		Short: "Upload the Rego resource policy (admin)",
		Long:  "Upload the resource policy. Built-ins: " + strings.Join(builtinpolicy.Names(), ", ") + ".",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var rego []byte
			var err error
			switch {
			case file != "" && builtin != "":
				return kbsErr(errors.New("give --policy-file or --builtin, not both"))
			case file != "":
				rego, err = os.ReadFile(file)
			case builtin != "":
				var s string
				s, err = builtinpolicy.Text(strings.TrimSuffix(builtin, ".rego"))
				rego = []byte(s)
			default:
				return kbsErr(errors.New("give --policy-file FILE or --builtin NAME"))
			}
			if err != nil {
				return kbsErr(err)
			}
			a, err := o.admin()
			if err != nil {
				return kbsErr(err)
			}
			return kbsErr(a.SetResourcePolicy(cmd.Context(), rego))
		},
	}
	cmd.Flags().StringVar(&file, "policy-file", "", "Rego file")
	cmd.Flags().StringVar(&builtin, "builtin", "", "a built-in policy: default, dev, allow_all, deny_all, affirming")
	return cmd
}

func newKbsSetReferenceValueCmd(o *kbsOpts) *cobra.Command {
	var asInt, asBool, single bool
	cmd := &cobra.Command{
		Use:   "set-reference-value NAME VALUE",
		Short: "Register a reference value in the sample format (admin); stored as [VALUE] unless --as-single-value",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v any = args[1]
			switch {
			case asInt && asBool:
				return kbsErr(errors.New("--as-integer and --as-bool exclude each other"))
			case asInt:
				n, err := strconv.ParseInt(args[1], 10, 64)
				if err != nil {
					return kbsErr(fmt.Errorf("VALUE %q is not an integer", args[1]))
				}
				v = n
			case asBool:
				b, err := strconv.ParseBool(args[1])
				if err != nil {
					return kbsErr(fmt.Errorf("VALUE %q is not a boolean", args[1]))
				}
				v = b
			}
			a, err := o.admin()
			if err != nil {
				return kbsErr(err)
			}
			return kbsErr(a.SetSampleReferenceValue(cmd.Context(), args[0], v, single))
		},
	}
	cmd.Flags().BoolVar(&asInt, "as-integer", false, "store VALUE as an integer")
	cmd.Flags().BoolVar(&asBool, "as-bool", false, "store VALUE as a boolean")
	cmd.Flags().BoolVar(&single, "as-single-value", false, "store VALUE itself, not [VALUE]")
	return cmd
}

func newKbsGetReferenceValueCmd(o *kbsOpts) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "get-reference-value --id ID",
		Short: "Print a reference value (admin); the ID may also be given as an argument",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := referenceValueID(id, args)
			if err != nil {
				return kbsErr(err)
			}
			a, err := o.admin()
			if err != nil {
				return kbsErr(err)
			}
			v, err := a.GetReferenceValue(cmd.Context(), id)
			if err != nil {
				return kbsErr(err)
			}
			fmt.Println(strings.TrimSpace(string(v)))
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "reference value ID (as Trustee's kbs-client)")
	return cmd
}

// referenceValueID takes the ID from --id (Trustee's kbs-client) or the
// positional argument (Coffer's earlier form), not both.
func referenceValueID(flag string, args []string) (string, error) {
	switch {
	case flag != "" && len(args) > 0:
		return "", errors.New("give the reference value ID with --id or as an argument, not both")
	case flag != "":
		return flag, nil
	case len(args) > 0 && args[0] != "":
		return args[0], nil
	}
	return "", errors.New("give the reference value ID: --id ID")
}

func newKbsAdminTokenCmd() *cobra.Command {
	var key, role, issuer, audience string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "admin-token --key PRIVATE.pem",
		Short: "Mint an admin bearer token signed with a private key (Ed25519 or EC) the KBS trusts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(key)
			if err != nil {
				return kbsErr(err)
			}
			k, err := admintoken.ParsePrivateKeyPEM(b)
			if err != nil {
				return kbsErr(fmt.Errorf("%s: %w", key, err))
			}
			tok, err := admintoken.Mint(k, role, issuer, audience, ttl, time.Now())
			if err != nil {
				return kbsErr(err)
			}
			fmt.Println(tok)
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "PEM private key (PKCS#8 Ed25519, or EC)")
	cmd.Flags().StringVar(&role, "role", "admin", "role claim")
	cmd.Flags().StringVar(&issuer, "issuer", "", "iss claim (if the KBS checks one)")
	cmd.Flags().StringVar(&audience, "audience", "", "aud claim (if the KBS checks one)")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "token lifetime")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

func newKbsAdminKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "admin-keygen --out DIR",
		Short: "Create an Ed25519 admin key pair: DIR/admin-key.pem (keep secret) and DIR/admin-pub.pem (for the KBS config)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return kbsErr(err)
			}
			pk, _ := x509.MarshalPKCS8PrivateKey(priv)
			pb, _ := x509.MarshalPKIXPublicKey(pub)
			if err := os.MkdirAll(out, 0o700); err != nil {
				return kbsErr(err)
			}
			keyPath := filepath.Join(out, "admin-key.pem")
			if _, err := os.Stat(keyPath); err == nil {
				return kbsErr(fmt.Errorf("%s exists: not overwriting it", keyPath))
			}
			if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
				return kbsErr(err)
			}
			return kbsErr(os.WriteFile(filepath.Join(out, "admin-pub.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pb}), 0o644))
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for the key pair")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

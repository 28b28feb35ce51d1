package image

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// maxAuthFile bounds the Docker config file read.
const maxAuthFile = 1 << 20

// DefaultAuthFile is where credentials are read from when no file is
// given: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, then
// ~/.docker/config.json.
func DefaultAuthFile() string {
	if f := os.Getenv("REGISTRY_AUTH_FILE"); f != "" {
		return f
	}
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".docker", "config.json")
	}
	return ""
}

// fileKeychain resolves registry credentials from the "auths" section of
// a Docker config file. Credential helpers are not run.
type fileKeychain struct {
	auths map[string]authn.AuthConfig // by normalised host
}

// loadKeychain reads path; a missing file (when not required) means
// anonymous access.
func loadKeychain(path string, required bool) (*fileKeychain, error) {
	kc := &fileKeychain{auths: map[string]authn.AuthConfig{}}
	if path == "" {
		return kc, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return kc, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read registry credentials: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAuthFile+1))
	if err != nil {
		return nil, fmt.Errorf("read registry credentials %s: %w", path, err)
	}
	if len(b) > maxAuthFile {
		return nil, fmt.Errorf("registry credentials file %s is larger than %d bytes", path, maxAuthFile)
	}
	var cf struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
			RegistryToken string `json:"registrytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("registry credentials file %s is not a Docker config file: %w", path, err)
	}
	for host, a := range cf.Auths {
		ac := authn.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("registry credentials file %s: the auth field of %q is not base64", path, host)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return nil, fmt.Errorf("registry credentials file %s: the auth field of %q is not user:password", path, host)
			}
			ac.Username, ac.Password = user, pass
		}
		kc.auths[normHost(host)] = ac
	}
	return kc, nil
}

// normHost turns "https://index.docker.io/v1/" or "HOST:5000" into a
// lookup key.
func normHost(h string) string {
	h = strings.ToLower(h)
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	h, _, _ = strings.Cut(h, "/")
	if h == "docker.io" || h == "registry-1.docker.io" {
		h = "index.docker.io"
	}
	return h
}

// Resolve implements authn.Keychain.
func (k *fileKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if ac, ok := k.auths[normHost(r.RegistryStr())]; ok {
		return authn.FromConfig(ac), nil
	}
	return authn.Anonymous, nil
}

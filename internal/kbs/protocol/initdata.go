package protocol

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"

	"github.com/BurntSushi/toml"
)

// maxInitDataTOML bounds init data.
const maxInitDataTOML = 1 << 20

// InitDataDigest hashes the raw init-data TOML with the algorithm it names
// and returns its data map as claims.
func InitDataDigest(d *InitData) ([]byte, map[string]any, error) {
	if d.Format != "toml" {
		return nil, nil, fmt.Errorf("init-data format %q: only toml is supported", d.Format)
	}
	if len(d.Body) > maxInitDataTOML {
		return nil, nil, fmt.Errorf("init-data over %d bytes", maxInitDataTOML)
	}
	var doc struct {
		Version   string            `toml:"version"`
		Algorithm string            `toml:"algorithm"`
		Data      map[string]string `toml:"data"`
	}
	if _, err := toml.Decode(d.Body, &doc); err != nil {
		return nil, nil, fmt.Errorf("init-data is not valid TOML: %w", err)
	}
	var h hash.Hash
	switch strings.ToLower(doc.Algorithm) {
	case "sha256":
		h = sha256.New()
	case "sha384":
		h = sha512.New384()
	case "sha512":
		h = sha512.New()
	default:
		return nil, nil, fmt.Errorf("init-data algorithm %q: use sha256, sha384 or sha512", doc.Algorithm)
	}
	h.Write([]byte(d.Body))
	claims := map[string]any{}
	for k, v := range doc.Data {
		claims[k] = v
	}
	sum := h.Sum(nil)
	claims["digest"] = hex.EncodeToString(sum)
	return sum, claims, nil
}

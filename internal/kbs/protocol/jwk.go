package protocol

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"math/big"
)

// JWK member values accepted in a tee-pubkey.
const (
	KtyEC  = "EC"
	KtyRSA = "RSA"

	CurveP256 = "P-256"
	CurveP521 = "P-521"

	// AlgECDHESA256KW is the EC key-management algorithm (guest default).
	AlgECDHESA256KW = "ECDH-ES+A256KW"
	// AlgRSAOAEP256 is RSAES-OAEP with SHA-256 and MGF1-SHA-256.
	AlgRSAOAEP256 = "RSA-OAEP-256"
	// AlgRSA15 is RSAES-PKCS1-v1_5: deprecated, accepted for compatibility.
	AlgRSA15 = "RSA1_5"

	// EncA256GCM is the only content encryption the KBS uses.
	EncA256GCM = "A256GCM"
)

// RSA modulus bounds for tee-pubkey.
const (
	MinRSAModulusBits = 2048
	MaxRSAModulusBits = 8192
	// teeRSABits is the size NewTeeKey generates (guest-components uses 2048).
	teeRSABits = 2048
)

// b64 is the JOSE base64url encoding: no padding, canonical trailing bits.
var b64 = base64.RawURLEncoding.Strict()

// TeePubKey is the tee-pubkey JWK a guest sends in runtime-data: the key
// the KBS encrypts resources to. Only the canonical members are kept:
// EC: kty, crv, alg, x, y; RSA: kty, alg, n, e. X, Y, N and E hold the
// base64url strings exactly as received (the runtime-data digest is computed
// over them).
type TeePubKey struct {
	Kty string
	Alg string
	Crv string // EC only
	X   string // EC only
	Y   string // EC only
	N   string // RSA only
	E   string // RSA only
}

// members returns the members of the key's type as name/value pairs in
// kbs-types order ({"kty","crv","alg","x","y"} / {"kty","alg","n","e"});
// false for a key type other than EC and RSA.
func (k TeePubKey) members() ([][2]string, bool) {
	switch k.Kty {
	case KtyEC:
		return [][2]string{{"kty", k.Kty}, {"crv", k.Crv}, {"alg", k.Alg}, {"x", k.X}, {"y", k.Y}}, true
	case KtyRSA:
		return [][2]string{{"kty", k.Kty}, {"alg", k.Alg}, {"n", k.N}, {"e", k.E}}, true
	}
	return nil, false
}

// writeMembers writes {"name":value,...} for the pairs.
func writeMembers(buf *bytes.Buffer, members [][2]string) {
	buf.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			buf.WriteByte(',')
		}
		writeJSONString(buf, m[0])
		buf.WriteByte(':')
		writeJSONString(buf, m[1])
	}
	buf.WriteByte('}')
}

// MarshalJSON writes only the canonical members for the key type, in
// kbs-types order (see members). It does not validate the values (use
// Validate), so a digest can be computed over any key the peer sent.
func (k TeePubKey) MarshalJSON() ([]byte, error) {
	members, ok := k.members()
	if !ok {
		return nil, fmt.Errorf("%w: marshal tee-pubkey: unsupported kty %q", ErrInvalidKey, truncateForError(k.Kty))
	}
	var buf bytes.Buffer
	writeMembers(&buf, members)
	return buf.Bytes(), nil
}

// UnmarshalJSON decodes a tee-pubkey strictly: at most MaxJWKSize bytes,
// valid UTF-8, no duplicate members, exact member names, kty EC or RSA with
// all of that type's members present as strings, and then Validate.
// Unknown members are dropped.
func (k *TeePubKey) UnmarshalJSON(data []byte) error {
	if len(data) > MaxJWKSize {
		return fmt.Errorf("%w: tee-pubkey is %d bytes, limit %d", ErrTooLarge, len(data), MaxJWKSize)
	}
	v, err := parseJSONText(data)
	if err != nil {
		return fmt.Errorf("%w: tee-pubkey: %v", ErrMalformed, err)
	}
	if v.kind != jsonObject {
		return fmt.Errorf("%w: tee-pubkey must be a JSON object", ErrMalformed)
	}
	str := func(name string) (string, error) {
		m := v.member(name)
		if m == nil {
			return "", fmt.Errorf("%w: tee-pubkey: missing member %q", ErrInvalidKey, name)
		}
		if m.kind != jsonString {
			return "", fmt.Errorf("%w: tee-pubkey: member %q must be a string", ErrInvalidKey, name)
		}
		return m.str, nil
	}
	var out TeePubKey
	if out.Kty, err = str("kty"); err != nil {
		return err
	}
	var names []string
	switch out.Kty {
	case KtyEC:
		names = []string{"crv", "alg", "x", "y"}
	case KtyRSA:
		names = []string{"alg", "n", "e"}
	default:
		return fmt.Errorf("%w: tee-pubkey: unsupported kty %q (want %q or %q)", ErrInvalidKey, truncateForError(out.Kty), KtyEC, KtyRSA)
	}
	for _, name := range names {
		s, err := str(name)
		if err != nil {
			return err
		}
		switch name {
		case "crv":
			out.Crv = s
		case "alg":
			out.Alg = s
		case "x":
			out.X = s
		case "y":
			out.Y = s
		case "n":
			out.N = s
		case "e":
			out.E = s
		}
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*k = out
	return nil
}

// coordSize returns the fixed coordinate length for a supported curve.
func coordSize(crv string) (int, error) {
	switch crv {
	case CurveP256:
		return 32, nil
	case CurveP521:
		return 66, nil
	}
	return 0, fmt.Errorf("%w: unsupported curve %q (want %q or %q)", ErrInvalidKey, truncateForError(crv), CurveP256, CurveP521)
}

func ellipticCurve(crv string) elliptic.Curve {
	if crv == CurveP521 {
		return elliptic.P521()
	}
	return elliptic.P256()
}

// decodeB64 decodes a base64url (no padding, canonical) member.
func decodeB64(what, s string) ([]byte, error) {
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not unpadded base64url: %v", ErrInvalidKey, what, err)
	}
	return b, nil
}

// Validate checks the key: supported kty/alg/crv, base64url members of the
// right size, EC point on the curve, RSA modulus of MinRSAModulusBits to
// MaxRSAModulusBits bits and a sane odd public exponent.
func (k TeePubKey) Validate() error {
	_, err := k.PublicKey()
	return err
}

// PublicKey validates the key and returns it as *ecdsa.PublicKey or
// *rsa.PublicKey.
func (k TeePubKey) PublicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case KtyEC:
		if k.Alg != AlgECDHESA256KW {
			return nil, fmt.Errorf("%w: EC tee-pubkey alg %q not supported (want %q)", ErrInvalidKey, truncateForError(k.Alg), AlgECDHESA256KW)
		}
		size, err := coordSize(k.Crv)
		if err != nil {
			return nil, err
		}
		x, err := decodeB64("tee-pubkey x", k.X)
		if err != nil {
			return nil, err
		}
		y, err := decodeB64("tee-pubkey y", k.Y)
		if err != nil {
			return nil, err
		}
		if len(x) != size || len(y) != size {
			return nil, fmt.Errorf("%w: %s coordinates must be %d bytes each, got x=%d y=%d", ErrInvalidKey, k.Crv, size, len(x), len(y))
		}
		point := make([]byte, 0, 1+2*size)
		point = append(append(append(point, 4), x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(ellipticCurve(k.Crv), point)
		if err != nil {
			return nil, fmt.Errorf("%w: %s point is not on the curve: %v", ErrInvalidKey, k.Crv, err)
		}
		return pub, nil
	case KtyRSA:
		if k.Alg != AlgRSAOAEP256 && k.Alg != AlgRSA15 {
			return nil, fmt.Errorf("%w: RSA tee-pubkey alg %q not supported (want %q or %q)", ErrInvalidKey, truncateForError(k.Alg), AlgRSAOAEP256, AlgRSA15)
		}
		n, err := decodeB64("tee-pubkey n", k.N)
		if err != nil {
			return nil, err
		}
		e, err := decodeB64("tee-pubkey e", k.E)
		if err != nil {
			return nil, err
		}
		if len(n) == 0 || n[0] == 0 || len(e) == 0 || e[0] == 0 {
			return nil, fmt.Errorf("%w: RSA n and e must be non-empty and have no leading zero octets", ErrInvalidKey)
		}
		if len(n)*8 > MaxRSAModulusBits+7 {
			return nil, fmt.Errorf("%w: RSA modulus longer than %d bits", ErrInvalidKey, MaxRSAModulusBits)
		}
		mod := new(big.Int).SetBytes(n)
		if bits := mod.BitLen(); bits < MinRSAModulusBits || bits > MaxRSAModulusBits {
			return nil, fmt.Errorf("%w: RSA modulus is %d bits, want %d to %d", ErrInvalidKey, bits, MinRSAModulusBits, MaxRSAModulusBits)
		}
		if mod.Bit(0) == 0 {
			return nil, fmt.Errorf("%w: RSA modulus is even", ErrInvalidKey)
		}
		if len(e) > 4 {
			return nil, fmt.Errorf("%w: RSA public exponent too large", ErrInvalidKey)
		}
		var exp uint64
		for _, b := range e {
			exp = exp<<8 | uint64(b)
		}
		if exp < 3 || exp > 1<<31-1 || exp%2 == 0 {
			return nil, fmt.Errorf("%w: RSA public exponent %d must be odd and in [3, 2^31-1]", ErrInvalidKey, exp)
		}
		return &rsa.PublicKey{N: mod, E: int(exp)}, nil
	}
	return nil, fmt.Errorf("%w: unsupported kty %q (want %q or %q)", ErrInvalidKey, truncateForError(k.Kty), KtyEC, KtyRSA)
}

// NewTeePubKey describes an existing public key as a tee-pubkey for alg:
// an *ecdsa.PublicKey or *ecdh.PublicKey (P-256 or P-521) with
// AlgECDHESA256KW, or an *rsa.PublicKey with AlgRSAOAEP256 or AlgRSA15.
func NewTeePubKey(pub crypto.PublicKey, alg string) (TeePubKey, error) {
	var k TeePubKey
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		e, err := p.ECDH()
		if err != nil {
			return k, fmt.Errorf("%w: %v", ErrInvalidKey, err)
		}
		return NewTeePubKey(e, alg)
	case *ecdh.PublicKey:
		var crv string
		switch p.Curve() {
		case ecdh.P256():
			crv = CurveP256
		case ecdh.P521():
			crv = CurveP521
		default:
			return k, fmt.Errorf("%w: EC curve %v (want P-256 or P-521)", ErrUnsupportedAlgorithm, p.Curve())
		}
		if alg != AlgECDHESA256KW {
			return k, fmt.Errorf("%w: EC keys use %q, not %q", ErrUnsupportedAlgorithm, AlgECDHESA256KW, alg)
		}
		raw := p.Bytes() // 0x04 || X || Y
		size := (len(raw) - 1) / 2
		k = TeePubKey{Kty: KtyEC, Crv: crv, Alg: alg, X: b64.EncodeToString(raw[1 : 1+size]), Y: b64.EncodeToString(raw[1+size:])}
	case *rsa.PublicKey:
		if alg != AlgRSAOAEP256 && alg != AlgRSA15 {
			return k, fmt.Errorf("%w: RSA keys use %q or %q, not %q", ErrUnsupportedAlgorithm, AlgRSAOAEP256, AlgRSA15, alg)
		}
		e := big.NewInt(int64(p.E)).Bytes()
		k = TeePubKey{Kty: KtyRSA, Alg: alg, N: b64.EncodeToString(p.N.Bytes()), E: b64.EncodeToString(e)}
	default:
		return k, fmt.Errorf("%w: public key type %T", ErrUnsupportedAlgorithm, pub)
	}
	if err := k.Validate(); err != nil {
		return TeePubKey{}, err
	}
	return k, nil
}

// DecryptionKey returns the form of a TEE private key that
// DecryptResponse uses fastest: an *ecdsa.PrivateKey becomes its
// *ecdh.PrivateKey (converting it computes the public point, a scalar
// multiplication, so a client that keeps its key converts it once); other
// keys come back unchanged.
func DecryptionKey(priv crypto.PrivateKey) crypto.PrivateKey {
	if k, ok := priv.(*ecdsa.PrivateKey); ok {
		if e, err := k.ECDH(); err == nil {
			return e
		}
	}
	return priv
}

// NewTeeKey generates a TEE key pair for a client: alg AlgECDHESA256KW
// with crv CurveP256 (also when crv is "") or CurveP521 gives an
// *ecdsa.PrivateKey; AlgRSAOAEP256 or AlgRSA15 (crv must be "") gives a
// 2048-bit *rsa.PrivateKey. The private key is what DecryptResponse takes.
func NewTeeKey(alg, crv string) (crypto.PrivateKey, TeePubKey, error) {
	switch alg {
	case AlgECDHESA256KW:
		if crv == "" {
			crv = CurveP256
		}
		if _, err := coordSize(crv); err != nil {
			return nil, TeePubKey{}, err
		}
		priv, err := ecdsa.GenerateKey(ellipticCurve(crv), rand.Reader)
		if err != nil {
			return nil, TeePubKey{}, fmt.Errorf("generate %s TEE key: %w", crv, err)
		}
		pub, err := NewTeePubKey(&priv.PublicKey, alg)
		if err != nil {
			return nil, TeePubKey{}, err
		}
		return priv, pub, nil
	case AlgRSAOAEP256, AlgRSA15:
		if crv != "" {
			return nil, TeePubKey{}, fmt.Errorf("%w: RSA keys take no curve (got %q)", ErrUnsupportedAlgorithm, crv)
		}
		priv, err := rsa.GenerateKey(rand.Reader, teeRSABits)
		if err != nil {
			return nil, TeePubKey{}, fmt.Errorf("generate RSA TEE key: %w", err)
		}
		pub, err := NewTeePubKey(&priv.PublicKey, alg)
		if err != nil {
			return nil, TeePubKey{}, err
		}
		return priv, pub, nil
	}
	return nil, TeePubKey{}, fmt.Errorf("%w: TEE key algorithm %q (want %q, %q or %q)", ErrUnsupportedAlgorithm, truncateForError(alg), AlgECDHESA256KW, AlgRSAOAEP256, AlgRSA15)
}

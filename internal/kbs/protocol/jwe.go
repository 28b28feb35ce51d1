package protocol

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	josecipher "github.com/go-jose/go-jose/v4/cipher"
)

// JWE sizes (A256GCM, A256KW).
const (
	cekSize        = 32
	gcmIVSize      = 12
	gcmTagSize     = 16
	wrappedCEKSize = cekSize + 8
	// MaxResponseSize bounds a JWE Response body decoded by DecodeResponse.
	MaxResponseSize = 64 << 20
	// maxProtectedHeaderSize bounds the decoded protected header.
	maxProtectedHeaderSize = 16 << 10
)

// Response is a resource encrypted to the TEE key: RFC 7516 flattened JWE
// JSON serialization as Trustee emits it. All members are unpadded
// base64url. There is no "aad" member; the AAD is ASCII(Protected).
type Response struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

// UnmarshalJSON requires the five members to be strings; other members
// (such as "aad", which the guest ignores) are dropped.
func (r *Response) UnmarshalJSON(data []byte) error {
	m, err := objectMembers(data, "JWE response")
	if err != nil {
		return err
	}
	var out Response
	fields := []struct {
		name string
		dst  *string
	}{
		{"protected", &out.Protected},
		{"encrypted_key", &out.EncryptedKey},
		{"iv", &out.IV},
		{"ciphertext", &out.Ciphertext},
		{"tag", &out.Tag},
	}
	for _, f := range fields {
		if *f.dst, err = m.str(f.name, MaxResponseSize); err != nil {
			return err
		}
	}
	*r = out
	return nil
}

// epkHeader is the ephemeral public key member of an ECDH-ES header.
type epkHeader struct {
	Crv string `json:"crv"`
	Kty string `json:"kty"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// protectedHeader is what EncryptResponse emits: members in this order,
// compact, exactly as Trustee's serde_json output.
type protectedHeader struct {
	Alg string     `json:"alg"`
	Enc string     `json:"enc"`
	Epk *epkHeader `json:"epk,omitempty"`
}

// concatKDF derives the A256KW key-encryption key from the ECDH shared
// secret z per RFC 7518 §4.6.2: Concat KDF (NIST SP 800-56A) with SHA-256,
// AlgorithmID = len32("ECDH-ES+A256KW") || "ECDH-ES+A256KW", empty
// PartyUInfo and PartyVInfo (each a zero length prefix), SuppPubInfo =
// be32(256).
func concatKDF(z []byte) ([]byte, error) {
	lenPrefixed := func(b []byte) []byte {
		out := make([]byte, 4+len(b))
		binary.BigEndian.PutUint32(out, uint32(len(b)))
		copy(out[4:], b)
		return out
	}
	algID := lenPrefixed([]byte(AlgECDHESA256KW))
	suppPub := binary.BigEndian.AppendUint32(nil, cekSize*8)
	kdf := josecipher.NewConcatKDF(crypto.SHA256, z, algID, lenPrefixed(nil), lenPrefixed(nil), suppPub, nil)
	kek := make([]byte, cekSize)
	if _, err := kdf.Read(kek); err != nil {
		return nil, fmt.Errorf("concat KDF: %w", err)
	}
	return kek, nil
}

// EncryptResponse encrypts plaintext to the TEE key: A256GCM with a random
// 32-byte CEK and 12-byte IV, the CEK wrapped per pub.Alg
// (ECDH-ES+A256KW on P-256/P-521, RSA-OAEP-256 or RSA1_5). The protected
// header is compact JSON {"alg","enc"[,"epk":{"crv","kty","x","y"}]} and
// the AAD is its base64url form, byte-identical to Trustee's output.
func EncryptResponse(pub TeePubKey, plaintext []byte) (*Response, error) {
	key, err := pub.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("encrypt resource: %w", err)
	}
	cek := make([]byte, cekSize)
	if _, err := rand.Read(cek); err != nil {
		return nil, fmt.Errorf("encrypt resource: generate CEK: %w", err)
	}
	hdr := protectedHeader{Alg: pub.Alg, Enc: EncA256GCM}
	var encryptedKey []byte
	switch pub.Alg {
	case AlgECDHESA256KW:
		peer, err := key.(*ecdsa.PublicKey).ECDH()
		if err != nil {
			return nil, fmt.Errorf("encrypt resource: %w: %v", ErrInvalidKey, err)
		}
		eph, err := peer.Curve().GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("encrypt resource: generate ephemeral key: %w", err)
		}
		z, err := eph.ECDH(peer)
		if err != nil {
			return nil, fmt.Errorf("encrypt resource: ECDH: %w", err)
		}
		kek, err := concatKDF(z)
		if err != nil {
			return nil, fmt.Errorf("encrypt resource: %w", err)
		}
		block, err := aes.NewCipher(kek)
		if err != nil {
			return nil, fmt.Errorf("encrypt resource: %w", err)
		}
		if encryptedKey, err = josecipher.KeyWrap(block, cek); err != nil {
			return nil, fmt.Errorf("encrypt resource: AES key wrap: %w", err)
		}
		raw := eph.PublicKey().Bytes()
		size := (len(raw) - 1) / 2
		hdr.Epk = &epkHeader{Crv: pub.Crv, Kty: KtyEC, X: b64.EncodeToString(raw[1 : 1+size]), Y: b64.EncodeToString(raw[1+size:])}
	case AlgRSAOAEP256:
		if encryptedKey, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, key.(*rsa.PublicKey), cek, nil); err != nil {
			return nil, fmt.Errorf("encrypt resource: RSA-OAEP-256: %w", err)
		}
	case AlgRSA15:
		//lint:ignore SA1019 RSA1_5 is part of the KBS protocol; guests may still ask for it.
		if encryptedKey, err = rsa.EncryptPKCS1v15(rand.Reader, key.(*rsa.PublicKey), cek); err != nil {
			return nil, fmt.Errorf("encrypt resource: RSA1_5: %w", err)
		}
	default: // unreachable: PublicKey validated the algorithm
		return nil, fmt.Errorf("encrypt resource: %w: %q", ErrUnsupportedAlgorithm, pub.Alg)
	}
	hdrJSON, err := json.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("encrypt resource: marshal header: %w", err)
	}
	protected := b64.EncodeToString(hdrJSON)
	iv := make([]byte, gcmIVSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("encrypt resource: generate IV: %w", err)
	}
	gcm, err := newGCM(cek)
	if err != nil {
		return nil, fmt.Errorf("encrypt resource: %w", err)
	}
	sealed := gcm.Seal(nil, iv, plaintext, []byte(protected))
	ct, tag := sealed[:len(sealed)-gcmTagSize], sealed[len(sealed)-gcmTagSize:]
	return &Response{
		Protected:    protected,
		EncryptedKey: b64.EncodeToString(encryptedKey),
		IV:           b64.EncodeToString(iv),
		Ciphertext:   b64.EncodeToString(ct),
		Tag:          b64.EncodeToString(tag),
	}, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// ProtectedHeaderAAD returns the AAD a guest computes for a received
// protected header, the way kbs-types ProtectedHeader::generate_aad does:
// decode the header, re-serialize it compactly with "alg" and "enc" first
// and the other members in received order (serde_json with
// preserve_order), and base64url-encode the result. For headers Trustee
// or this package emit, the result equals the received protected string.
func ProtectedHeaderAAD(protected string) ([]byte, error) {
	aad, _, err := decodeProtectedHeader(protected)
	return aad, err
}

// decodeProtectedHeader is ProtectedHeaderAAD that also returns the parsed header.
func decodeProtectedHeader(protected string) (aad []byte, header *jsonValue, err error) {
	raw, err := b64.DecodeString(protected)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: protected header is not unpadded base64url: %v", ErrMalformed, err)
	}
	if len(raw) > maxProtectedHeaderSize {
		return nil, nil, fmt.Errorf("%w: protected header is %d bytes, limit %d", ErrTooLarge, len(raw), maxProtectedHeaderSize)
	}
	hdr, err := parseJSONText(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: protected header: %v", ErrMalformed, err)
	}
	if hdr.kind != jsonObject {
		return nil, nil, fmt.Errorf("%w: protected header must be a JSON object", ErrMalformed)
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, name := range []string{"alg", "enc"} {
		v := hdr.member(name)
		if v == nil || v.kind != jsonString {
			return nil, nil, fmt.Errorf("%w: protected header %q must be a string", ErrMalformed, name)
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		writeJSONString(&buf, name)
		buf.WriteByte(':')
		writeJSONString(&buf, v.str)
	}
	for _, m := range hdr.obj {
		if m.key == "alg" || m.key == "enc" {
			continue
		}
		buf.WriteByte(',')
		writeJSONString(&buf, m.key)
		buf.WriteByte(':')
		if err := writeSerdeJSON(&buf, m.val); err != nil {
			return nil, nil, fmt.Errorf("%w: protected header: %v", ErrMalformed, err)
		}
	}
	buf.WriteByte('}')
	return []byte(b64.EncodeToString(buf.Bytes())), hdr, nil
}

// writeSerdeJSON writes v as serde_json::to_string would after parsing it
// into a serde_json::Value (preserve_order, no arbitrary_precision):
// member order kept, strings escaped like JCS, integers that fit in
// i64/u64 kept, every other number printed as an f64 the way ryu does.
func writeSerdeJSON(buf *bytes.Buffer, v *jsonValue) error {
	switch v.kind {
	case jsonNull:
		buf.WriteString("null")
	case jsonBool:
		buf.WriteString(strconv.FormatBool(v.boolean))
	case jsonString:
		writeJSONString(buf, v.str)
	case jsonNumber:
		s, err := serdeNumber(v.str)
		if err != nil {
			return err
		}
		buf.WriteString(s)
	case jsonArray:
		buf.WriteByte('[')
		for i, el := range v.arr {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeSerdeJSON(buf, el); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case jsonObject:
		buf.WriteByte('{')
		for i, m := range v.obj {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeJSONString(buf, m.key)
			buf.WriteByte(':')
			if err := writeSerdeJSON(buf, m.val); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	}
	return nil
}

// serdeNumber re-prints a JSON number literal as serde_json does.
func serdeNumber(lit string) (string, error) {
	if lit == "-0" {
		return "-0.0", nil // serde_json parses -0 as the f64 -0.0
	}
	if !strings.ContainsAny(lit, ".eE") {
		if u, err := strconv.ParseUint(lit, 10, 64); err == nil {
			return strconv.FormatUint(u, 10), nil
		}
		if i, err := strconv.ParseInt(lit, 10, 64); err == nil {
			return strconv.FormatInt(i, 10), nil
		}
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil && !(errors.Is(err, strconv.ErrRange) && f == 0) {
		return "", fmt.Errorf("number %s out of range", truncateForError(lit))
	}
	return formatRyu(f), nil
}

// formatRyu formats a finite f64 like Rust's ryu crate (used by serde_json):
// shortest round-trip digits, decimal notation for exponents in [-5, 16),
// otherwise "d.ddde±x" without a '+' sign; integral values keep ".0".
func formatRyu(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "null" // serde_json writes non-finite floats as null
	}
	var sb strings.Builder
	if math.Signbit(f) {
		sb.WriteByte('-')
		f = -f
	}
	if f == 0 {
		sb.WriteString("0.0")
		return sb.String()
	}
	d, kk := shortestDigits(f) // value = 0.d × 10^kk
	length := len(d)
	switch {
	case length <= kk && kk <= 16:
		sb.WriteString(d)
		sb.WriteString(strings.Repeat("0", kk-length))
		sb.WriteString(".0")
	case 0 < kk && kk <= 16:
		sb.WriteString(d[:kk])
		sb.WriteByte('.')
		sb.WriteString(d[kk:])
	case -5 < kk && kk <= 0:
		sb.WriteString("0.")
		sb.WriteString(strings.Repeat("0", -kk))
		sb.WriteString(d)
	default:
		sb.WriteByte(d[0])
		if length > 1 {
			sb.WriteByte('.')
			sb.WriteString(d[1:])
		}
		sb.WriteByte('e')
		sb.WriteString(strconv.Itoa(kk - 1))
	}
	return sb.String()
}

// DecryptResponse decrypts a JWE Response with the TEE private key from
// NewTeeKey (*ecdsa.PrivateKey or *ecdh.PrivateKey for ECDH-ES+A256KW,
// *rsa.PrivateKey for RSA-OAEP-256 and RSA1_5). Like the Rust guest it
// computes the AAD by re-serializing the decoded protected header (see
// ProtectedHeaderAAD). enc must be A256GCM. Failures wrap ErrDecrypt,
// ErrMalformed or ErrUnsupportedAlgorithm.
func DecryptResponse(priv crypto.PrivateKey, r *Response) ([]byte, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: nil response", ErrMalformed)
	}
	aad, hdr, err := decodeProtectedHeader(r.Protected)
	if err != nil {
		return nil, fmt.Errorf("decrypt resource: %w", err)
	}
	alg, enc := hdr.member("alg").str, hdr.member("enc").str
	if enc != EncA256GCM {
		return nil, fmt.Errorf("decrypt resource: %w: content encryption %q (want %q)", ErrUnsupportedAlgorithm, truncateForError(enc), EncA256GCM)
	}
	encryptedKey, err := decodeMember("encrypted_key", r.EncryptedKey)
	if err != nil {
		return nil, err
	}
	iv, err := decodeMember("iv", r.IV)
	if err != nil {
		return nil, err
	}
	ct, err := decodeMember("ciphertext", r.Ciphertext)
	if err != nil {
		return nil, err
	}
	tag, err := decodeMember("tag", r.Tag)
	if err != nil {
		return nil, err
	}
	if len(iv) != gcmIVSize || len(tag) != gcmTagSize {
		return nil, fmt.Errorf("decrypt resource: %w: iv must be %d bytes and tag %d, got %d and %d", ErrMalformed, gcmIVSize, gcmTagSize, len(iv), len(tag))
	}
	cek, err := unwrapCEK(priv, alg, hdr, encryptedKey)
	if err != nil {
		return nil, fmt.Errorf("decrypt resource: %w", err)
	}
	gcm, err := newGCM(cek)
	if err != nil {
		return nil, fmt.Errorf("decrypt resource: %w: %v", ErrDecrypt, err)
	}
	sealed := make([]byte, 0, len(ct)+len(tag))
	sealed = append(append(sealed, ct...), tag...)
	pt, err := gcm.Open(nil, iv, sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("decrypt resource: %w: authentication failed (wrong key or tampered response)", ErrDecrypt)
	}
	return pt, nil
}

func decodeMember(name, s string) ([]byte, error) {
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decrypt resource: %w: %s is not unpadded base64url: %v", ErrMalformed, name, err)
	}
	return b, nil
}

// unwrapCEK recovers the content-encryption key for alg with priv.
func unwrapCEK(priv crypto.PrivateKey, alg string, hdr *jsonValue, encryptedKey []byte) ([]byte, error) {
	switch alg {
	case AlgECDHESA256KW:
		var key *ecdh.PrivateKey
		switch k := priv.(type) {
		case *ecdsa.PrivateKey:
			var err error
			if key, err = k.ECDH(); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
			}
		case *ecdh.PrivateKey:
			key = k
		default:
			return nil, fmt.Errorf("%w: alg %s needs an EC private key, have %T", ErrDecrypt, alg, priv)
		}
		var crv string
		switch key.Curve() {
		case ecdh.P256():
			crv = CurveP256
		case ecdh.P521():
			crv = CurveP521
		default:
			return nil, fmt.Errorf("%w: private key curve %v", ErrUnsupportedAlgorithm, key.Curve())
		}
		epk := hdr.member("epk")
		if epk == nil || epk.kind != jsonObject {
			return nil, fmt.Errorf("%w: ECDH-ES header without an epk object", ErrMalformed)
		}
		field := func(name string) (string, error) {
			v := epk.member(name)
			if v == nil || v.kind != jsonString {
				return "", fmt.Errorf("%w: epk member %q must be a string", ErrMalformed, name)
			}
			return v.str, nil
		}
		ecrv, err := field("crv")
		if err != nil {
			return nil, err
		}
		if ecrv != crv {
			return nil, fmt.Errorf("%w: epk curve %q does not match the TEE key curve %s", ErrDecrypt, truncateForError(ecrv), crv)
		}
		if kty := epk.member("kty"); kty != nil && (kty.kind != jsonString || kty.str != KtyEC) {
			return nil, fmt.Errorf("%w: epk kty must be %q", ErrMalformed, KtyEC)
		}
		x, err := field("x")
		if err != nil {
			return nil, err
		}
		y, err := field("y")
		if err != nil {
			return nil, err
		}
		pubKey, err := TeePubKey{Kty: KtyEC, Crv: crv, Alg: AlgECDHESA256KW, X: x, Y: y}.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("epk: %w", err)
		}
		peer, err := pubKey.(*ecdsa.PublicKey).ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: epk: %v", ErrInvalidKey, err)
		}
		z, err := key.ECDH(peer)
		if err != nil {
			return nil, fmt.Errorf("%w: ECDH: %v", ErrDecrypt, err)
		}
		kek, err := concatKDF(z)
		if err != nil {
			return nil, err
		}
		if len(encryptedKey) != wrappedCEKSize {
			return nil, fmt.Errorf("%w: wrapped key is %d bytes, want %d", ErrDecrypt, len(encryptedKey), wrappedCEKSize)
		}
		block, err := aes.NewCipher(kek)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
		}
		cek, err := josecipher.KeyUnwrap(block, encryptedKey)
		if err != nil {
			return nil, fmt.Errorf("%w: AES key unwrap: integrity check failed", ErrDecrypt)
		}
		return cek, nil
	case AlgRSAOAEP256, AlgRSA15:
		key, ok := priv.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: alg %s needs an RSA private key, have %T", ErrDecrypt, alg, priv)
		}
		if alg == AlgRSAOAEP256 {
			cek, err := rsa.DecryptOAEP(sha256.New(), nil, key, encryptedKey, nil)
			if err != nil {
				return nil, fmt.Errorf("%w: RSA-OAEP-256: %v", ErrDecrypt, err)
			}
			if len(cek) != cekSize {
				return nil, fmt.Errorf("%w: CEK is %d bytes, want %d", ErrDecrypt, len(cek), cekSize)
			}
			return cek, nil
		}
		if len(encryptedKey) != key.Size() {
			return nil, fmt.Errorf("%w: RSA1_5 encrypted key is %d bytes, want %d", ErrDecrypt, len(encryptedKey), key.Size())
		}
		// Bleichenbacher-safe: on bad padding the CEK stays random and the
		// GCM tag check fails, with no distinguishable error.
		cek := make([]byte, cekSize)
		if _, err := rand.Read(cek); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
		}
		//lint:ignore SA1019 RSA1_5 is part of the KBS protocol; guests may still ask for it.
		if err := rsa.DecryptPKCS1v15SessionKey(nil, key, encryptedKey, cek); err != nil {
			return nil, fmt.Errorf("%w: RSA1_5: %v", ErrDecrypt, err)
		}
		return cek, nil
	}
	return nil, fmt.Errorf("%w: key management algorithm %q", ErrUnsupportedAlgorithm, truncateForError(alg))
}

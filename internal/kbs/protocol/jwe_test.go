package protocol

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	josecipher "github.com/go-jose/go-jose/v4/cipher"
)

type testKey struct {
	name string
	priv crypto.PrivateKey
	pub  TeePubKey
}

func testKeys(t testing.TB) []testKey {
	t.Helper()
	var keys []testKey
	for _, crv := range []string{CurveP256, CurveP521} {
		priv, pub, err := NewTeeKey(AlgECDHESA256KW, crv)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, testKey{"ECDH-ES+A256KW/" + crv, priv, pub})
	}
	for _, alg := range []string{AlgRSAOAEP256, AlgRSA15} {
		pub, err := NewTeePubKey(&testRSAKey().PublicKey, alg)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, testKey{alg, testRSAKey(), pub})
	}
	return keys
}

// kbs-types protected_header_generate_aad test vector.
func TestProtectedHeaderAADVector(t *testing.T) {
	aad, err := ProtectedHeaderAAD("eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9")
	if err != nil {
		t.Fatal(err)
	}
	if string(aad) != "eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9" {
		t.Fatalf("aad %s", aad)
	}
	// Same header with members reversed and whitespace: the guest
	// re-serializes, so the AAD is the canonical vector again.
	aad, err = ProtectedHeaderAAD(b64.EncodeToString([]byte(`{ "enc" : "fakeenc", "alg" : "fakealg" }`)))
	if err != nil || string(aad) != "eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9" {
		t.Fatalf("reordered: %s %v", aad, err)
	}
	// kbs-types parse_response_nested_protected_header: other members keep
	// their received order (serde_json preserve_order).
	hdr := `{"alg":"fakealg","enc":"fakeenc","epk":{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}}`
	aad, err = ProtectedHeaderAAD(b64.EncodeToString([]byte(hdr + "\n")))
	if err != nil || string(aad) != b64.EncodeToString([]byte(hdr)) {
		t.Fatalf("nested: %s %v", aad, err)
	}
	for _, bad := range []string{
		"eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9==",              // padding
		b64.EncodeToString([]byte(`{"alg":"a"}`)),                     // no enc
		b64.EncodeToString([]byte(`{"alg":1,"enc":"e"}`)),             // alg not string
		b64.EncodeToString([]byte(`["alg"]`)),                         // not object
		b64.EncodeToString([]byte(`{"alg":"a","enc":"e","alg":"b"}`)), // duplicate
	} {
		if _, err := ProtectedHeaderAAD(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestSerdeNumberFormatting(t *testing.T) {
	for lit, want := range map[string]string{
		"0": "0", "-0": "-0.0", "42": "42", "-42": "-42", "18446744073709551615": "18446744073709551615",
		"18446744073709551616": "1.8446744073709552e19", "1.0": "1.0", "1e2": "100.0", "1.5": "1.5",
		"1e16": "1e16", "1e15": "1000000000000000.0", "0.0001": "0.0001", "0.00001": "0.00001", "0.000001": "1e-6",
		"1.25e-7": "1.25e-7", "-2.5E+20": "-2.5e20", "1e-400": "0.0", "123456.789": "123456.789",
		"-9223372036854775808": "-9223372036854775808", "-9223372036854775809": "-9.223372036854776e18",
	} {
		got, err := serdeNumber(lit)
		if err != nil || got != want {
			t.Errorf("%s: got %s %v, want %s", lit, got, err, want)
		}
	}
	if _, err := serdeNumber("1e400"); err == nil {
		t.Error("1e400 accepted")
	}
}

var b64urlRE = regexp.MustCompile(`^[A-Za-z0-9_-]*$`)

func TestEncryptDecryptAllAlgorithms(t *testing.T) {
	plaintext := []byte("the secret resource \x00\xff")
	for _, k := range testKeys(t) {
		t.Run(k.name, func(t *testing.T) {
			resp, err := EncryptResponse(k.pub, plaintext)
			if err != nil {
				t.Fatal(err)
			}
			// Wire shape: exactly the five members, unpadded base64url.
			b, _ := json.Marshal(resp)
			var members map[string]string
			if err := json.Unmarshal(b, &members); err != nil || len(members) != 5 {
				t.Fatalf("members %v %v", members, err)
			}
			for name, v := range members {
				if !b64urlRE.MatchString(v) {
					t.Errorf("%s not unpadded base64url: %q", name, v)
				}
			}
			hdr, _ := b64.DecodeString(resp.Protected)
			iv, _ := b64.DecodeString(resp.IV)
			tag, _ := b64.DecodeString(resp.Tag)
			ek, _ := b64.DecodeString(resp.EncryptedKey)
			if len(iv) != 12 || len(tag) != 16 {
				t.Fatalf("iv %d tag %d", len(iv), len(tag))
			}
			switch k.pub.Alg {
			case AlgECDHESA256KW:
				re := regexp.MustCompile(`^\{"alg":"ECDH-ES\+A256KW","enc":"A256GCM","epk":\{"crv":"` + k.pub.Crv + `","kty":"EC","x":"[A-Za-z0-9_-]+","y":"[A-Za-z0-9_-]+"\}\}$`)
				if !re.Match(hdr) {
					t.Fatalf("header %s", hdr)
				}
				if len(ek) != 40 {
					t.Fatalf("wrapped key %d bytes", len(ek))
				}
			default:
				if want := `{"alg":"` + k.pub.Alg + `","enc":"A256GCM"}`; string(hdr) != want {
					t.Fatalf("header %s, want %s", hdr, want)
				}
				if len(ek) != 256 {
					t.Fatalf("encrypted key %d bytes", len(ek))
				}
			}
			// The AAD the guest recomputes equals the protected string.
			aad, err := ProtectedHeaderAAD(resp.Protected)
			if err != nil || string(aad) != resp.Protected {
				t.Fatalf("aad %s vs %s (%v)", aad, resp.Protected, err)
			}

			// Through JSON, as a client receives it.
			got, err := DecodeResponse(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			pt, err := DecryptResponse(k.priv, got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pt, plaintext) {
				t.Fatalf("plaintext %q", pt)
			}

			// go-jose's generic JWE parser decrypts it too.
			obj, err := jose.ParseEncryptedJSON(string(b),
				[]jose.KeyAlgorithm{jose.ECDH_ES_A256KW, jose.RSA_OAEP_256, jose.RSA1_5},
				[]jose.ContentEncryption{jose.A256GCM})
			if err != nil {
				t.Fatalf("go-jose parse: %v", err)
			}
			pt, err = obj.Decrypt(k.priv)
			if err != nil {
				t.Fatalf("go-jose decrypt: %v", err)
			}
			if !bytes.Equal(pt, plaintext) {
				t.Fatalf("go-jose plaintext %q", pt)
			}

			// Empty plaintext works.
			r0, err := EncryptResponse(k.pub, nil)
			if err != nil {
				t.Fatal(err)
			}
			if pt, err := DecryptResponse(k.priv, r0); err != nil || len(pt) != 0 {
				t.Fatalf("empty: %q %v", pt, err)
			}
		})
	}
}

// go-jose's encrypter output must decrypt with DecryptResponse (the reverse
// interop direction: a generic JOSE producer, e.g. another KBS).
func TestDecryptGoJoseOutput(t *testing.T) {
	plaintext := []byte("from go-jose")
	for _, k := range testKeys(t) {
		t.Run(k.name, func(t *testing.T) {
			var pub any
			switch p := k.priv.(type) {
			case *ecdsa.PrivateKey:
				pub = &p.PublicKey
			default:
				pub = &testRSAKey().PublicKey
			}
			enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.KeyAlgorithm(k.pub.Alg), Key: pub}, nil)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := enc.Encrypt(plaintext)
			if err != nil {
				t.Fatal(err)
			}
			var resp Response
			if err := json.Unmarshal([]byte(obj.FullSerialize()), &resp); err != nil {
				t.Fatalf("flattened JSON %s: %v", obj.FullSerialize(), err)
			}
			pt, err := DecryptResponse(k.priv, &resp)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pt, plaintext) {
				t.Fatalf("plaintext %q", pt)
			}
		})
	}
}

// The ECDH-ES KDF matches go-jose's independent DeriveECDHES (RFC 7518 §4.6).
func TestConcatKDFMatchesGoJose(t *testing.T) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P521()} {
		a, _ := ecdsa.GenerateKey(curve, rand.Reader)
		b, _ := ecdsa.GenerateKey(curve, rand.Reader)
		ea, _ := a.ECDH()
		eb, _ := b.PublicKey.ECDH()
		z, err := ea.ECDH(eb)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := concatKDF(z)
		if err != nil {
			t.Fatal(err)
		}
		theirs := josecipher.DeriveECDHES(AlgECDHESA256KW, nil, nil, a, &b.PublicKey, 32)
		if !bytes.Equal(ours, theirs) {
			t.Fatalf("%s: KDF mismatch", curve.Params().Name)
		}
	}
	// RFC 7518 Appendix C shape check: one SHA-256 block over
	// be32(1) || Z || AlgorithmID || PartyU || PartyV || SuppPubInfo.
	z := bytes.Repeat([]byte{7}, 32)
	h := sha256.New()
	h.Write([]byte{0, 0, 0, 1})
	h.Write(z)
	h.Write([]byte{0, 0, 0, 14})
	h.Write([]byte("ECDH-ES+A256KW"))
	h.Write([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	got, _ := concatKDF(z)
	if !bytes.Equal(got, h.Sum(nil)) {
		t.Fatal("concat KDF input layout differs from RFC 7518 §4.6.2")
	}
}

// A header whose received byte form differs from its re-serialization:
// the guest authenticates the re-serialized form, and so do we.
func TestDecryptUsesReserializedHeader(t *testing.T) {
	priv := testRSAKey()
	pub, _ := NewTeePubKey(&priv.PublicKey, AlgRSAOAEP256)
	resp, err := EncryptResponse(pub, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	// Re-encode the same header with other member order and whitespace.
	// The ciphertext was sealed with AAD = b64(`{"alg":…,"enc":…}`), which is
	// what the guest recomputes, so decryption still succeeds.
	resp.Protected = b64.EncodeToString([]byte(`{"enc": "A256GCM", "alg": "RSA-OAEP-256"}`))
	if pt, err := DecryptResponse(priv, resp); err != nil || string(pt) != "x" {
		t.Fatalf("reordered header: %q %v", pt, err)
	}
	// An extra member changes the re-serialized form, so it fails.
	resp.Protected = b64.EncodeToString([]byte(`{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"1"}`))
	if _, err := DecryptResponse(priv, resp); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("extra member: %v", err)
	}
}

func TestDecryptRejects(t *testing.T) {
	keys := testKeys(t)
	plaintext := []byte("secret")
	other := map[string]crypto.PrivateKey{}
	for _, crv := range []string{CurveP256, CurveP521} {
		p, _, _ := NewTeeKey(AlgECDHESA256KW, crv)
		other[crv] = p
	}
	flip := func(s string) string {
		b, _ := b64.DecodeString(s)
		if len(b) == 0 {
			return s
		}
		b[len(b)/2] ^= 0x01
		return b64.EncodeToString(b)
	}
	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			fresh := func() *Response {
				r, err := EncryptResponse(k.pub, plaintext)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			tamper := map[string]func(*Response){
				"ciphertext":    func(r *Response) { r.Ciphertext = flip(r.Ciphertext) },
				"tag":           func(r *Response) { r.Tag = flip(r.Tag) },
				"iv":            func(r *Response) { r.IV = flip(r.IV) },
				"encrypted key": func(r *Response) { r.EncryptedKey = flip(r.EncryptedKey) },
				"short iv":      func(r *Response) { r.IV = r.IV[:8] },
				"short tag":     func(r *Response) { r.Tag = r.Tag[:10] },
				"padded tag":    func(r *Response) { r.Tag += "==" },
				"enc":           func(r *Response) { r.Protected = replaceHeader(r.Protected, `"enc":"A256GCM"`, `"enc":"A128GCM"`) },
				"alg":           func(r *Response) { r.Protected = replaceHeader(r.Protected, `"alg":"`+k.pub.Alg+`"`, `"alg":"dir"`) },
				"truncated key": func(r *Response) { r.EncryptedKey = r.EncryptedKey[:len(r.EncryptedKey)-4] },
			}
			if k.pub.Alg == AlgECDHESA256KW {
				tamper["epk x"] = func(r *Response) {
					hdr, _ := b64.DecodeString(r.Protected)
					var h struct {
						Alg, Enc string
						Epk      map[string]string
					}
					_ = json.Unmarshal(hdr, &h)
					// Another valid point of the same curve: unwrap must fail.
					_, p, _ := NewTeeKey(AlgECDHESA256KW, k.pub.Crv)
					r.Protected = replaceHeader(r.Protected, h.Epk["x"], p.X)
					r.Protected = replaceHeader(r.Protected, h.Epk["y"], p.Y)
				}
				tamper["epk off curve"] = func(r *Response) {
					hdr, _ := b64.DecodeString(r.Protected)
					i := bytes.Index(hdr, []byte(`"y":"`)) + 5
					if hdr[i] == 'A' {
						hdr[i] = 'B'
					} else {
						hdr[i] = 'A'
					}
					r.Protected = b64.EncodeToString(hdr)
				}
				tamper["epk crv"] = func(r *Response) {
					r.Protected = replaceHeader(r.Protected, `"crv":"`+k.pub.Crv+`"`, `"crv":"P-384"`)
				}
				tamper["no epk"] = func(r *Response) {
					r.Protected = b64.EncodeToString([]byte(`{"alg":"ECDH-ES+A256KW","enc":"A256GCM"}`))
				}
			}
			for name, f := range tamper {
				r := fresh()
				f(r)
				pt, err := DecryptResponse(k.priv, r)
				if err == nil {
					t.Errorf("%s: tampered response decrypted to %q", name, pt)
				}
			}
			// Wrong private key of the right type.
			var wrong crypto.PrivateKey
			if k.pub.Kty == KtyEC {
				wrong = other[k.pub.Crv]
			} else {
				w, _, err := NewTeeKey(AlgRSAOAEP256, "")
				if err != nil {
					t.Fatal(err)
				}
				wrong = w
			}
			if _, err := DecryptResponse(wrong, fresh()); !errors.Is(err, ErrDecrypt) {
				t.Errorf("wrong key: %v", err)
			}
			// Key of the wrong type entirely.
			var mismatched crypto.PrivateKey = testRSAKey()
			if k.pub.Kty == KtyRSA {
				mismatched = other[CurveP256]
			}
			if _, err := DecryptResponse(mismatched, fresh()); err == nil {
				t.Error("mismatched key type accepted")
			}
		})
	}
	if _, err := DecryptResponse(keys[0].priv, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("nil response: %v", err)
	}
	// EC key on the wrong curve for the epk.
	r, _ := EncryptResponse(keys[0].pub, plaintext) // P-256
	if _, err := DecryptResponse(keys[1].priv, r); !errors.Is(err, ErrDecrypt) {
		t.Errorf("P-521 key for P-256 epk: %v", err)
	}
	if _, err := EncryptResponse(TeePubKey{Kty: KtyEC, Crv: CurveP256, Alg: AlgECDHESA256KW, X: "AA", Y: "AA"}, plaintext); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("invalid key encrypt: %v", err)
	}
	if _, err := DecodeResponse(strings.NewReader(`{"protected":"e30","encrypted_key":"","iv":"","ciphertext":""}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("response without tag: %v", err)
	}
}

func replaceHeader(protected, old, new string) string {
	hdr, _ := b64.DecodeString(protected)
	if !bytes.Contains(hdr, []byte(old)) {
		panic(fmt.Sprintf("header %s lacks %s", hdr, old))
	}
	return b64.EncodeToString(bytes.Replace(hdr, []byte(old), []byte(new), 1))
}

func BenchmarkEncryptResponseP256(b *testing.B) {
	_, pub, err := NewTeeKey(AlgECDHESA256KW, CurveP256)
	if err != nil {
		b.Fatal(err)
	}
	secret := bytes.Repeat([]byte{1}, 64)
	for b.Loop() {
		if _, err := EncryptResponse(pub, secret); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecryptResponseP256(b *testing.B) {
	priv, pub, err := NewTeeKey(AlgECDHESA256KW, CurveP256)
	if err != nil {
		b.Fatal(err)
	}
	r, err := EncryptResponse(pub, bytes.Repeat([]byte{1}, 64))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := DecryptResponse(priv, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRuntimeDataDigest(b *testing.B) {
	_, pub, err := NewTeeKey(AlgECDHESA256KW, CurveP256)
	if err != nil {
		b.Fatal(err)
	}
	nonce, _ := NewNonce()
	empty := ""
	for b.Loop() {
		if _, err := RuntimeDataDigest(HashSHA384, nonce, pub, &empty); err != nil {
			b.Fatal(err)
		}
	}
}

// DecryptionKey's form of an EC key decrypts what the ecdsa form does;
// other keys pass through.
func TestDecryptionKey(t *testing.T) {
	priv, pub, err := NewTeeKey(AlgECDHESA256KW, CurveP256)
	if err != nil {
		t.Fatal(err)
	}
	dk := DecryptionKey(priv)
	if _, ok := dk.(*ecdh.PrivateKey); !ok {
		t.Fatalf("DecryptionKey(%T) = %T, want *ecdh.PrivateKey", priv, dk)
	}
	resp, err := EncryptResponse(pub, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []crypto.PrivateKey{priv, dk} {
		if got, err := DecryptResponse(k, resp); err != nil || string(got) != "secret" {
			t.Fatalf("DecryptResponse with %T = %q, %v", k, got, err)
		}
	}
	rsaKey := testRSAKey()
	if DecryptionKey(rsaKey) != crypto.PrivateKey(rsaKey) {
		t.Fatal("an RSA key was changed")
	}
}

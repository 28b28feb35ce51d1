package guest

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// signed appends a PKCS#7-style signature trailer to body.
func signed(body, sig []byte) []byte {
	info := make([]byte, 12)
	info[2] = 2 // PKEY_ID_PKCS7
	binary.BigEndian.PutUint32(info[8:], uint32(len(sig)))
	out := append(append(append([]byte{}, body...), sig...), info...)
	return append(out, moduleSigMagic...)
}

func TestStripModuleSignature(t *testing.T) {
	body := []byte("\x7fELF module body")
	got, err := stripModuleSignature(signed(body, bytes.Repeat([]byte{0xAB}, 500)))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("strip = %q, %v; want the body", got, err)
	}
	// Unsigned modules pass through unchanged.
	if got, err := stripModuleSignature(body); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("unsigned: %q, %v", got, err)
	}
	// A trailer that claims more signature than there is file is an error.
	bad := signed(body, []byte("sig"))
	binary.BigEndian.PutUint32(bad[len(bad)-len(moduleSigMagic)-4:], 1<<20)
	if _, err := stripModuleSignature(bad); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("oversized signature length: err = %v", err)
	}
	if _, err := stripModuleSignature([]byte("x" + moduleSigMagic)); err == nil {
		t.Fatal("truncated trailer accepted")
	}
}

func FuzzStripModuleSignature(f *testing.F) {
	f.Add(signed([]byte("body"), []byte("signature")))
	f.Add([]byte(moduleSigMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := stripModuleSignature(b)
		if err == nil && (len(out) > len(b) || !bytes.Equal(out, b[:len(out)])) {
			t.Fatalf("stripped output is not a prefix of the input")
		}
	})
}

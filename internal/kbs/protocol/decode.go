package protocol

import (
	"encoding/json"
	"fmt"
	"io"
)

// readLimited reads all of r, failing with ErrTooLarge past limit bytes.
func readLimited(r io.Reader, limit int64, what string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrTooLarge, what, limit)
	}
	return data, nil
}

// decodeBody reads at most limit bytes from r and unmarshals them into v
// (whose UnmarshalJSON does the strict checks).
func decodeBody(r io.Reader, limit int64, what string, v json.Unmarshaler) error {
	data, err := readLimited(r, limit, what)
	if err != nil {
		return err
	}
	if !json.Valid(data) {
		return fmt.Errorf("%w: %s is not valid JSON", ErrMalformed, what)
	}
	if err := v.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("decode %s: %w", what, err)
	}
	return nil
}

// DecodeRequest reads a POST /auth body (at most MaxRequestBody bytes).
// Errors wrap ErrTooLarge, ErrMalformed or ErrUnknownTee. The version is
// not checked here: call CheckVersion.
func DecodeRequest(r io.Reader) (*Request, error) {
	var req Request
	if err := decodeBody(r, MaxRequestBody, "KBS auth request", &req); err != nil {
		return nil, err
	}
	return &req, nil
}

// DecodeAttestation reads a POST /attest body (at most MaxRequestBody
// bytes). The tee-pubkey is fully validated. Errors wrap ErrTooLarge,
// ErrMalformed or ErrInvalidKey. Unknown members are ignored.
func DecodeAttestation(r io.Reader) (*Attestation, error) {
	var a Attestation
	if err := decodeBody(r, MaxRequestBody, "KBS attestation", &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// DecodeChallenge reads a POST /auth response (client side).
func DecodeChallenge(r io.Reader) (*Challenge, error) {
	var c Challenge
	if err := decodeBody(r, MaxRequestBody, "KBS challenge", &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// DecodeAttestResponse reads a POST /attest response (client side).
func DecodeAttestResponse(r io.Reader) (*AttestResponse, error) {
	var a AttestResponse
	if err := decodeBody(r, MaxTokenSize+1024, "KBS attest response", &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// DecodeResponse reads a JWE resource response (client side, at most
// MaxResponseSize bytes).
func DecodeResponse(r io.Reader) (*Response, error) {
	var resp Response
	if err := decodeBody(r, MaxResponseSize, "KBS resource response", &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

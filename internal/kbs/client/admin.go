package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Admin is a client for the KBS admin API.
type Admin struct {
	base  string
	http  *http.Client
	token string
}

// NewAdmin returns an admin client; token may be empty (dev KBS).
func NewAdmin(url string, hc *http.Client, token string) *Admin {
	return &Admin{base: strings.TrimRight(url, "/"), http: hc, token: strings.TrimSpace(token)}
}

func (a *Admin) do(ctx context.Context, method, path string, body []byte, contentType string, out any) ([]byte, error) {
	hdr := http.Header{}
	if a.token != "" {
		hdr.Set("Authorization", "Bearer "+a.token)
	}
	if contentType != "" {
		hdr.Set("Content-Type", contentType)
	}
	return do(ctx, a.http, nil, time.Time{}, method, a.base+"/kbs/v0/"+path, body, hdr, out)
}

// SetResource stores a resource at repo/type/tag.
func (a *Admin) SetResource(ctx context.Context, path string, data []byte) error {
	_, err := a.do(ctx, http.MethodPost, "resource/"+path, data, "application/octet-stream", nil)
	return err
}

// DeleteResource deletes a resource.
func (a *Admin) DeleteResource(ctx context.Context, path string) error {
	_, err := a.do(ctx, http.MethodDelete, "resource/"+path, nil, "", nil)
	return err
}

// ListResources lists resource paths.
func (a *Admin) ListResources(ctx context.Context) ([]string, error) {
	var out []string
	_, err := a.do(ctx, http.MethodGet, "resource", nil, "", &out)
	return out, err
}

// SetAttestationPolicy uploads a Rego appraisal policy (id default_cpu by
// default, as kbs-client).
func (a *Admin) SetAttestationPolicy(ctx context.Context, id string, rego []byte) error {
	if id == "" {
		id = "default_cpu"
	}
	body, _ := json.Marshal(map[string]string{"type": "rego", "policy_id": id, "policy": base64.RawURLEncoding.EncodeToString(rego)})
	_, err := a.do(ctx, http.MethodPost, "attestation-policy", body, "", nil)
	return err
}

// SetResourcePolicy uploads the Rego resource policy.
func (a *Admin) SetResourcePolicy(ctx context.Context, rego []byte) error {
	body, _ := json.Marshal(map[string]string{"policy": base64.RawURLEncoding.EncodeToString(rego)})
	_, err := a.do(ctx, http.MethodPost, "resource-policy", body, "", nil)
	return err
}

// GetResourcePolicy returns the Rego resource policy.
func (a *Admin) GetResourcePolicy(ctx context.Context) ([]byte, error) {
	var out struct {
		Policy string `json:"policy"`
	}
	if _, err := a.do(ctx, http.MethodGet, "resource-policy", nil, "", &out); err != nil {
		return nil, err
	}
	return base64.RawURLEncoding.DecodeString(out.Policy)
}

// SetSampleReferenceValue registers NAME = [VALUE] in Trustee's sample
// RVPS format, as kbs-client's set-sample-reference-value does.
func (a *Admin) SetSampleReferenceValue(ctx context.Context, name string, value any, single bool) error {
	v := value
	if !single {
		v = []any{value}
	}
	payload, err := json.Marshal(map[string]any{name: v})
	if err != nil {
		return err
	}
	msg, _ := json.Marshal(map[string]string{"version": "0.1.0", "type": "sample", "payload": base64.StdEncoding.EncodeToString(payload)})
	_, err = a.do(ctx, http.MethodPost, "reference-value", msg, "", nil)
	return err
}

// GetReferenceValue returns a reference value's JSON.
func (a *Admin) GetReferenceValue(ctx context.Context, id string) (json.RawMessage, error) {
	b, err := a.do(ctx, http.MethodGet, "reference-value/"+id, nil, "", nil)
	if err != nil {
		return nil, fmt.Errorf("get reference value %s: %w", id, err)
	}
	return json.RawMessage(b), nil
}

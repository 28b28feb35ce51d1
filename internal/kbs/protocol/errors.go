package protocol

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// ErrorTypePrefix prefixes ErrorInformation.Type; the rest is the Trustee
// KBS error variant name.
const ErrorTypePrefix = "https://github.com/confidential-containers/kbs/errors/"

// ErrorKind is a Trustee KBS top-level error variant name
// (kbs/src/error.rs), the suffix of ErrorInformation.Type.
type ErrorKind string

// The Trustee KBS error variants.
const (
	KindAdminAuthInitialization     ErrorKind = "AdminAuthInitialization"
	KindAdminAuthAccess             ErrorKind = "AdminAuthAccess"
	KindAttestationError            ErrorKind = "AttestationError"
	KindHTTPFailed                  ErrorKind = "HTTPFailed"
	KindHTTPSFailed                 ErrorKind = "HTTPSFailed"
	KindInvalidRequestPath          ErrorKind = "InvalidRequestPath"
	KindJweError                    ErrorKind = "JweError"
	KindPluginManagerInitialization ErrorKind = "PluginManagerInitialization"
	KindPluginNotFound              ErrorKind = "PluginNotFound"
	KindPluginInternalError         ErrorKind = "PluginInternalError"
	KindPolicyDeny                  ErrorKind = "PolicyDeny"
	KindParsePolicyError            ErrorKind = "ParsePolicyError"
	KindPolicyEngineError           ErrorKind = "PolicyEngineError"
	KindRvpsError                   ErrorKind = "RvpsError"
	KindSerdeError                  ErrorKind = "SerdeError"
	KindStorageBackendInit          ErrorKind = "StorageBackendInitialization"
	KindTokenNotFound               ErrorKind = "TokenNotFound"
	KindTokenVerifierError          ErrorKind = "TokenVerifierError"
	KindPrometheusError             ErrorKind = "PrometheusError"
)

// TrusteeStatus is the HTTP status Trustee returns for this kind: 404 for
// InvalidRequestPath and PluginNotFound, 401 for everything else (guests
// re-attest on 401 and report "not found" on 404). A server may choose
// differently for specific cases; this is only Trustee's mapping.
func (k ErrorKind) TrusteeStatus() int {
	switch k {
	case KindInvalidRequestPath, KindPluginNotFound:
		return http.StatusNotFound
	}
	return http.StatusUnauthorized
}

// ErrorInformation is the JSON body of every non-200 KBS response.
type ErrorInformation struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// NewErrorInformation builds an ErrorInformation of the given kind.
func NewErrorInformation(kind ErrorKind, detail string) ErrorInformation {
	return ErrorInformation{Type: ErrorTypePrefix + string(kind), Detail: detail}
}

// Kind returns the variant name (Type without ErrorTypePrefix), or "" if
// Type does not carry the prefix.
func (e ErrorInformation) Kind() ErrorKind {
	k, ok := strings.CutPrefix(e.Type, ErrorTypePrefix)
	if !ok {
		return ""
	}
	return ErrorKind(k)
}

// Error makes ErrorInformation usable as an error on the client side.
func (e ErrorInformation) Error() string {
	if k := e.Kind(); k != "" {
		return fmt.Sprintf("KBS error %s: %s", k, e.Detail)
	}
	return fmt.Sprintf("KBS error %s: %s", e.Type, e.Detail)
}

// ParseErrorInformation decodes an error body; both members are required.
func ParseErrorInformation(body []byte) (*ErrorInformation, error) {
	m, err := objectMembers(body, "error information")
	if err != nil {
		return nil, err
	}
	var out ErrorInformation
	if out.Type, err = m.str("type", 4096); err != nil {
		return nil, err
	}
	if out.Detail, err = m.str("detail", MaxRequestBody); err != nil {
		return nil, err
	}
	return &out, nil
}

// MarshalErrorInformation returns the JSON body for an error response.
func MarshalErrorInformation(kind ErrorKind, detail string) []byte {
	b, err := json.Marshal(NewErrorInformation(kind, detail))
	if err != nil { // cannot happen: two strings
		return []byte(`{"type":"` + ErrorTypePrefix + string(kind) + `","detail":""}`)
	}
	return b
}

package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
)

// kbsError is an error with the Trustee error variant and HTTP status a
// guest expects: 401 makes guests re-attest, 404 means not found.
type kbsError struct {
	status  int
	variant string
	detail  string
}

func (e *kbsError) Error() string { return e.variant + ": " + e.detail }

func errorf(status int, variant, format string, args ...any) *kbsError {
	return &kbsError{status: status, variant: variant, detail: fmt.Sprintf(format, args...)}
}

// Error variants used here (Trustee's names; see protocol.ErrorKind).
const (
	errAdminAuth      = string(protocol.KindAdminAuthAccess)
	errAttestation    = string(protocol.KindAttestationError)
	errInvalidPath    = string(protocol.KindInvalidRequestPath)
	errJwe            = string(protocol.KindJweError)
	errPluginNotFound = string(protocol.KindPluginNotFound)
	errPluginInternal = string(protocol.KindPluginInternalError)
	errPolicyDeny     = string(protocol.KindPolicyDeny)
	errParsePolicy    = string(protocol.KindParsePolicyError)
	errRvps           = string(protocol.KindRvpsError)
	errSerde          = string(protocol.KindSerdeError)
	errTokenNotFound  = string(protocol.KindTokenNotFound)
	errTokenVerifier  = string(protocol.KindTokenVerifierError)
)

func writeError(w http.ResponseWriter, err error) {
	var ke *kbsError
	if !errors.As(err, &ke) {
		ke = &kbsError{status: http.StatusInternalServerError, variant: errPluginInternal, detail: err.Error()}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ke.status)
	_ = json.NewEncoder(w).Encode(protocol.NewErrorInformation(protocol.ErrorKind(ke.variant), ke.detail))
}

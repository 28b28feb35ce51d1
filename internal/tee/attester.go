package tee

import (
	"context"
	"encoding/json"
)

// Attester produces TEE evidence inside the guest.
type Attester interface {
	// Tee is the Trustee TEE name ("sample", "snp").
	Tee() string
	// Evidence returns the evidence JSON (the KBS primary_evidence) with
	// reportData (up to 64 bytes; shorter input is zero-padded where the
	// TEE's field is larger) bound into it.
	Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error)
}

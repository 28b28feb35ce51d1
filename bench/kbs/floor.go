package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coffer-project/coffer/internal/attestation"
	"github.com/coffer-project/coffer/internal/attestation/ear"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
)

// step is one piece of the crypto floor's per-handshake work.
type step int

const (
	stepNonce step = iota
	stepTeeKey
	stepDigest
	stepEvidence
	stepVerify
	stepSign
	stepTokenVerify
	stepEncrypt
	stepDecrypt
	numSteps
)

// Sides of the handshake a step belongs to.
const (
	sideClient = "client"
	sideServer = "server"
)

var stepInfo = [numSteps]struct{ name, side, what string }{
	stepNonce:       {"nonce", sideServer, "32-byte challenge nonce"},
	stepTeeKey:      {"tee-key", sideClient, "generate the P-256 TEE key"},
	stepDigest:      {"digest", sideClient, "SHA-384 of the JCS runtime data, the guest's (the server computes its own in verify)"},
	stepEvidence:    {"evidence", sideClient, "produce evidence (sample JSON / sim SNP report signed with P-384)"},
	stepVerify:      {"verify", sideServer, "recompute the runtime-data digest and verify the evidence against it (attestation verifier)"},
	stepSign:        {"ear-sign", sideServer, "build and sign the EAR token (ES256)"},
	stepTokenVerify: {"ear-verify", sideServer, "verify the EAR token (ES256): only with -floor-token-verify (the server checks Bearer tokens; the client's cookie session needs none)"},
	stepEncrypt:     {"jwe-encrypt", sideServer, "encrypt the resource (ECDH-ES+A256KW, A256GCM)"},
	stepDecrypt:     {"jwe-decrypt", sideClient, "decrypt the resource"},
}

// floorKit holds what the crypto floor of one TEE needs: the attester, the
// verifier the server uses, a token signer and verifier.
type floorKit struct {
	tee      string
	attester tee.Attester
	verifier attestation.Verifier
	signer   *ear.Signer
	tokens   *ear.Verifier
	resource []byte
	// freshKey generates a TEE key pair per handshake (-fresh-client);
	// otherwise each goroutine keeps one, as the load's client workers do.
	freshKey bool
	// verifyToken adds the ES256 check of the token to each handshake.
	verifyToken bool
}

// teeKey is a client's TEE key pair.
type teeKey struct {
	priv crypto.PrivateKey
	pub  protocol.TeePubKey
}

func newTeeKey() (*teeKey, error) {
	priv, pub, err := protocol.NewTeeKey(protocol.AlgECDHESA256KW, protocol.CurveP256)
	if err != nil {
		return nil, err
	}
	// As the KBS client keeps it: converted once for decryption.
	return &teeKey{priv: protocol.DecryptionKey(priv), pub: pub}, nil
}

// newFloorKit builds the floor for a TEE; chip is the server's simulated
// SNP chip (for snp).
func newFloorKit(teeName string, chip *sim.Processor, resource []byte) (*floorKit, error) {
	k := &floorKit{tee: teeName, resource: resource}
	switch teeName {
	case teeSample:
		k.attester, k.verifier = tee.NewSample(), attestation.NewSampleVerifier()
	case teeSNP:
		if chip == nil {
			return nil, errors.New("no simulated SNP chip for the snp crypto floor")
		}
		g, err := chip.Launch(sim.LaunchConfig{Measurement: benchMeasurement()})
		if err != nil {
			return nil, fmt.Errorf("launch a simulated SNP guest: %w", err)
		}
		v, err := attestation.NewSNPVerifier(attestation.SNPOptions{TrustedSimulatedRoots: [][]byte{chip.RootCertsPEM()}})
		if err != nil {
			return nil, fmt.Errorf("SNP verifier for the floor: %w", err)
		}
		k.attester, k.verifier = tee.NewSimSNP(g), v
	default:
		return nil, fmt.Errorf("unknown TEE %q", teeName)
	}
	var err error
	if k.signer, err = ear.NewSigner(); err != nil {
		return nil, fmt.Errorf("token signer for the floor: %w", err)
	}
	if k.tokens, err = ear.NewVerifier(ear.VerifierOptions{TrustedKeys: []*ecdsa.PublicKey{k.signer.PublicKey()}}); err != nil {
		return nil, fmt.Errorf("token verifier for the floor: %w", err)
	}
	return k, nil
}

// once does one handshake's crypto, adding each step's time to t. key is
// the goroutine's TEE key pair, nil to generate one (as part of the
// handshake).
func (k *floorKit) once(ctx context.Context, t *[numSteps]time.Duration, key *teeKey) error {
	mark := time.Now()
	lap := func(s step) {
		now := time.Now()
		t[s] += now.Sub(mark)
		mark = now
	}
	nonce, err := protocol.NewNonce()
	if err != nil {
		return err
	}
	lap(stepNonce)
	if key == nil {
		if key, err = newTeeKey(); err != nil {
			return err
		}
	}
	priv, pub := key.priv, key.pub
	lap(stepTeeKey)
	additional := ""
	digest, err := protocol.RuntimeDataDigest("sha384", nonce, pub, &additional)
	if err != nil {
		return err
	}
	lap(stepDigest)
	ev, err := k.attester.Evidence(ctx, digest)
	if err != nil {
		return fmt.Errorf("%s evidence: %w", k.tee, err)
	}
	lap(stepEvidence)
	claims, err := k.verify(ctx, nonce, pub, ev)
	if err != nil {
		return err
	}
	lap(stepVerify)
	token, err := k.signer.Sign(k.earClaims(claims, nonce, pub))
	if err != nil {
		return err
	}
	lap(stepSign)
	if err := k.checkToken(token); err != nil {
		return err
	}
	lap(stepTokenVerify)
	resp, err := protocol.EncryptResponse(pub, k.resource)
	if err != nil {
		return err
	}
	lap(stepEncrypt)
	plain, err := protocol.DecryptResponse(priv, resp)
	if err != nil {
		return err
	}
	if !bytes.Equal(plain, k.resource) {
		return errors.New("the floor's JWE round trip returned other bytes")
	}
	lap(stepDecrypt)
	return nil
}

// verify is the server's verification step: it does not take the guest's
// digest but recomputes it from the nonce it issued and the key the guest
// sent (attestation.Service.Attest), and checks the evidence against its
// own.
func (k *floorKit) verify(ctx context.Context, nonce string, pub protocol.TeePubKey, ev json.RawMessage) (attestation.Claims, error) {
	additional := ""
	bound, err := protocol.RuntimeDataDigest("sha384", nonce, pub, &additional)
	if err != nil {
		return nil, err
	}
	claims, err := k.verifier.Verify(ctx, attestation.VerifyInput{Evidence: ev, ReportData: bound})
	if err != nil {
		return nil, fmt.Errorf("%s verification: %w", k.tee, err)
	}
	return claims, nil
}

// checkToken is the token's ES256 check, with -floor-token-verify only.
func (k *floorKit) checkToken(token string) error {
	if !k.verifyToken {
		return nil
	}
	if _, err := k.tokens.VerifyPayload(token, time.Now()); err != nil {
		return fmt.Errorf("token verification: %w", err)
	}
	return nil
}

// earClaims builds a token shaped like the server's: the verifier's claims
// as annotated evidence with the runtime data claims (nonce, tee-pubkey).
func (k *floorKit) earClaims(claims attestation.Claims, nonce string, pub protocol.TeePubKey) *ear.Claims {
	teeClaims := map[string]any{}
	annotated := map[string]any{}
	for n, v := range claims {
		if n == "report_data" || n == "init_data" {
			annotated[n] = v
		} else {
			teeClaims[n] = v
		}
	}
	annotated[k.tee] = teeClaims
	var jwk any
	if b, err := json.Marshal(pub); err == nil {
		_ = json.Unmarshal(b, &jwk)
	}
	annotated["runtime_data_claims"] = map[string]any{"nonce": nonce, "tee-pubkey": jwk, "additional-evidence": ""}
	vec := ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 3, Hardware: 2}
	c := ear.NewClaims(time.Now(), ear.DefaultTTL, ear.DefaultIssuer, ear.VerifierID{Developer: ear.DefaultDeveloper, Build: "coffer bench/kbs"})
	simulated, _ := claims["simulated"].(bool)
	c.Submods["cpu0"] = ear.Appraisal{Status: ear.Status(vec), TrustVector: vec, PolicyID: "default",
		AnnotatedEvidence: annotated, Identifiers: map[string]any{"validated": map[string]any{}}, Simulated: simulated}
	return c
}

// floorResult is the crypto floor of one TEE at one parallelism.
type floorResult struct {
	TEE        string
	Goroutines int
	Window     time.Duration
	Ops        int
	// Steps is the summed time of each step over the Ops handshakes
	// completed in the window, over all goroutines.
	Steps [numSteps]time.Duration
	// CPU is the benchmark process's CPU time within the window, Host the
	// whole host's.
	CPU  time.Duration
	Host hostCPU
	// Quiet says how quiet the host was.
	Quiet quietStats
}

// otherCores is the CPU (in cores) other processes used during the window.
func (f *floorResult) otherCores() float64 {
	return cores(max(0, f.Host.busy-f.CPU), f.Window)
}

func (f *floorResult) rate() float64 {
	if f == nil || f.Window <= 0 {
		return 0
	}
	return float64(f.Ops) / f.Window.Seconds()
}

// stepPerOp is the mean time of a step per handshake.
func (f *floorResult) stepPerOp(s step) time.Duration {
	if f == nil || f.Ops == 0 {
		return 0
	}
	return f.Steps[s] / time.Duration(f.Ops)
}

// sidePerOp is the mean time per handshake of one side's steps.
func (f *floorResult) sidePerOp(side string) time.Duration {
	var d time.Duration
	for s := range numSteps {
		if stepInfo[s].side == side {
			d += f.stepPerOp(s)
		}
	}
	return d
}

// runFloor runs k's crypto in n goroutines for the warm-up plus dur.
func runFloor(ctx context.Context, k *floorKit, n int, warmup, dur time.Duration) (*floorResult, error) {
	var probe [numSteps]time.Duration
	if err := k.once(ctx, &probe, nil); err != nil {
		return nil, fmt.Errorf("%s crypto floor: %w", k.tee, err)
	}
	winStart := time.Now().Add(warmup)
	winEnd := winStart.Add(dur)
	type result struct {
		ops   int
		steps [numSteps]time.Duration
		err   error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			var key *teeKey
			if !k.freshKey {
				if key, r.err = newTeeKey(); r.err != nil {
					return
				}
			}
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(winEnd) {
					return
				}
				var st [numSteps]time.Duration
				if err := k.once(ctx, &st, key); err != nil {
					r.err = err
					return
				}
				t1 := time.Now()
				if !t1.Before(winStart) && !t1.After(winEnd) {
					r.ops++
					for s := range numSteps {
						r.steps[s] += st[s]
					}
				}
			}
		}()
	}
	sleepUntil(ctx, winStart)
	c0, h0 := selfCPUTime(), readHostCPU()
	sleepUntil(ctx, winEnd)
	c1, h1 := selfCPUTime(), readHostCPU()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f := &floorResult{TEE: k.tee, Goroutines: n, Window: dur, CPU: c1 - c0, Host: h1.sub(h0)}
	for _, r := range results {
		if r.err != nil {
			return nil, fmt.Errorf("%s crypto floor: %w", k.tee, r.err)
		}
		f.Ops += r.ops
		for s := range numSteps {
			f.Steps[s] += r.steps[s]
		}
	}
	return f, nil
}

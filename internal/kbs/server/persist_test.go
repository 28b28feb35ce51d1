package server_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/client"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	"github.com/coffer-project/coffer/internal/kbs/server"
	"github.com/coffer-project/coffer/internal/policy"
	"github.com/coffer-project/coffer/internal/store"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
)

// openDaemon opens a daemon on dataDir with Open (the real wiring: bbolt
// store, persisted signer key, simulated chip from <dataDir>/sim-snp) and
// serves it on an httptest server. The shared chip is saved there first so
// Open does not generate one.
func openDaemon(t *testing.T, dataDir string, dev bool) (*server.Daemon, *httptest.Server) {
	t.Helper()
	return openDaemonWith(t, dataDir, func(c *server.Config) { c.Dev = dev })
}

// openDaemonWith is openDaemon with the configuration set by configure
// (a loopback HTTP listener, the data dir and a simulated chip saved in it
// are set up here).
func openDaemonWith(t *testing.T, dataDir string, configure func(*server.Config)) (*server.Daemon, *httptest.Server) {
	t.Helper()
	simDir := filepath.Join(dataDir, "sim-snp")
	if _, err := os.Stat(filepath.Join(simDir, "chip.json")); err != nil {
		if err := simChip(t).Save(simDir); err != nil {
			t.Fatal(err)
		}
	}
	cfg := server.DefaultConfig()
	cfg.DataDir = dataDir
	cfg.InsecureHTTP = true
	cfg.Listen = "127.0.0.1:0"
	configure(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := server.Open(context.Background(), cfg, quietLog)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	ts := httptest.NewServer(d.Server)
	return d, ts
}

// Everything the operator set survives a restart on the bbolt store:
// resources, reference values, the resource policy, the attestation
// (appraisal) policy, and the audit log written before the restart; and an
// attestation token issued before the restart still verifies (the signer
// key is kept in the data dir) and still releases the resource to its key.
func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d, ts := openDaemon(t, dir, true)
	if d.SimRoots == nil {
		t.Fatal("dev daemon has no simulated roots")
	}
	adm := client.NewAdmin(ts.URL, ts.Client(), "")
	want := secret("persisted")
	if err := adm.SetResource(ctx, "keep/me/please", want); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{"svn": "1", "launch_digest": "abcde"} {
		if err := adm.SetSampleReferenceValue(ctx, name, v, false); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range map[string]any{"major_version": 1, "minimum_minor_version": 1} {
		if err := adm.SetSampleReferenceValue(ctx, name, v, true); err != nil {
			t.Fatal(err)
		}
	}
	affirming, _ := policy.Default(policy.ResourceAffirming)
	if err := adm.SetResourcePolicy(ctx, []byte(affirming)); err != nil {
		t.Fatal(err)
	}
	// The built-in appraisal policy plus an extension that marks tokens
	// appraised by the operator's policy.
	cpu, _ := policy.Default(policy.DefaultCPU)
	marked := cpu + "\nextensions := [{\"name\": \"example.operator-policy\", \"key\": 4242, \"value\": \"v2\"}]\n"
	if err := adm.SetAttestationPolicy(ctx, policy.DefaultAppraisalPolicyID, []byte(marked)); err != nil {
		t.Fatal(err)
	}
	operatorMark := func(tok string) any {
		return cpu0Claims(t, tok)["example.operator-policy"]
	}
	// A guest attests (sample, affirming with the reference values) and
	// keeps its token; a simulated SNP guest too, through Open's trust of
	// the saved chip (measurement and TCB registered for it).
	g := newGuest(t, ts.URL, tee.NewSample(), protocol.AlgRSAOAEP256, "")
	tok := g.handshake()
	if got := g.open(g.getNoCookie("keep/me/please", tok)); !bytes.Equal(got, want) {
		t.Fatalf("before restart: got %q", got)
	}
	if m := operatorMark(tok); m != "v2" {
		t.Fatalf("before restart: token appraised without the operator's policy (mark %v)", m)
	}
	// A refusal for the audit log.
	wantError(t, g.getNoCookie("keep/me/please", ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
	m := measurement(0x77)
	tcb := simChip(t).TCB()
	for name, v := range map[string]any{"snp_bootloader": tcb.Bootloader, "snp_tee_svn": tcb.TEE, "snp_snp_svn": tcb.SNP, "snp_microcode": tcb.Microcode} {
		if err := adm.SetSampleReferenceValue(ctx, name, v, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := adm.SetSampleReferenceValue(ctx, "snp_launch_measurement", hex.EncodeToString(m[:]), false); err != nil {
		t.Fatal(err)
	}
	sg := newGuest(t, ts.URL, simGuest(t, sim.LaunchConfig{Measurement: m}), protocol.AlgECDHESA256KW, protocol.CurveP521)
	snpTok := sg.handshake()
	if s := earStatus(t, snpTok); s != "affirming" {
		t.Fatalf("sim-snp through Open: ear.status %q", s)
	}
	ts.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	restart := time.Now()

	d2, ts2 := openDaemon(t, dir, true)
	defer func() {
		ts2.Close()
		d2.Close()
	}()
	adm = client.NewAdmin(ts2.URL, ts2.Client(), "")
	list, err := adm.ListResources(ctx)
	if err != nil || strings.Join(list, ",") != "keep/me/please" {
		t.Fatalf("resources after restart: %v %v", list, err)
	}
	rv, err := adm.GetReferenceValue(ctx, "launch_digest")
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	if err := json.Unmarshal(rv, &digests); err != nil || len(digests) != 1 || digests[0] != "abcde" {
		t.Fatalf("launch_digest after restart: %s (%v)", rv, err)
	}
	got, err := adm.GetResourcePolicy(ctx)
	if err != nil || string(got) != affirming {
		t.Fatalf("resource policy after restart is not the affirming policy (%v):\n%s", err, got)
	}
	// The old token, new server process: verified and released.
	g.base = ts2.URL
	if got := g.open(g.getNoCookie("keep/me/please", tok)); !bytes.Equal(got, want) {
		t.Fatalf("old token after restart: got %q", got)
	}
	sg.base = ts2.URL
	if got := sg.open(sg.getNoCookie("keep/me/please", snpTok)); !bytes.Equal(got, want) {
		t.Fatalf("old sim-snp token after restart: got %q", got)
	}
	// Sessions are not persisted: the old cookie is unknown, not accepted.
	wantError(t, g.get("keep/me/please", ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
	// The operator's appraisal policy is the one in force for a new
	// handshake (loaded from the store: this process never had it).
	if m := operatorMark(newGuest(t, ts2.URL, tee.NewSample(), "", "").handshake()); m != "v2" {
		t.Errorf("after restart: token appraised without the operator's policy (mark %v)", m)
	}
	// The audit log written before the restart is still there, in order.
	var before []string
	for _, ev := range storedAudit(t, d2.Store) {
		if ev.Time.Before(restart) {
			before = append(before, ev.Kind+":"+ev.Tee+":"+ev.Outcome+":"+ev.Path)
		}
		if ev.Kind == "release" && ev.Outcome == "denied" && ev.Time.Before(restart) && !strings.Contains(ev.Detail, "no attestation token") {
			t.Errorf("audit record of the refused release lost its reason: %q", ev.Detail)
		}
	}
	wantBefore := "attest:sample:success: release::released:keep/me/please release::denied:keep/me/please attest:snp:success:"
	if got := strings.Join(before, " "); got != wantBefore {
		t.Errorf("audit log from before the restart:\n got %s\nwant %s", got, wantBefore)
	}
	// And the signer key file is what made that work; secrets in the data
	// dir are private to the KBS user.
	for path, mode := range map[string]os.FileMode{
		filepath.Join(dir, "token-signer.pem"): 0o600,
		filepath.Join(dir, "kbs.db"):           0o600,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if st.Mode().Perm()&^mode != 0 {
			t.Errorf("%s has mode %o, want at most %o", path, st.Mode().Perm(), mode)
		}
	}
	// A token from another data dir (another signer) is refused.
	d3, ts3 := openDaemon(t, t.TempDir(), true)
	defer func() {
		ts3.Close()
		d3.Close()
	}()
	g3 := newGuest(t, ts3.URL, tee.NewSample(), "", "")
	foreign := g3.handshake()
	wantError(t, g3.getNoCookie("keep/me/please", "x"), http.StatusUnauthorized, protocol.KindTokenVerifierError)
	g3.base = ts2.URL
	wantError(t, g3.getNoCookie("keep/me/please", foreign), http.StatusUnauthorized, protocol.KindTokenVerifierError, "not trusted")
}

// A data dir first used in dev mode does not keep the dev resource policy
// when restarted without --dev; a policy the operator set is kept.
func TestDevPolicyNotKeptWithoutDev(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d, ts := openDaemon(t, dir, true)
	adm := client.NewAdmin(ts.URL, ts.Client(), "")
	if err := adm.SetResource(ctx, "x/y/z", secret("dev")); err != nil {
		t.Fatal(err)
	}
	g := newGuest(t, ts.URL, tee.NewSample(), "", "")
	tok := g.handshake()
	g.open(g.getNoCookie("x/y/z", tok))
	ts.Close()
	d.Close()

	// Non-dev: admin needs a token; use deny-all to keep it simple and
	// only check the release path.
	d2, ts2 := openDaemonWith(t, dir, func(c *server.Config) { c.Admin.Mode = server.AdminDenyAll })
	defer d2.Close()
	defer ts2.Close()
	if d2.SimRoots != nil {
		t.Error("a non-dev daemon trusts the simulated chip")
	}
	g.base = ts2.URL
	wantError(t, g.getNoCookie("x/y/z", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "sample TEE")
	// Simulated evidence is not even verified without --dev.
	sg := newGuest(t, ts2.URL, simGuest(t, sim.LaunchConfig{}), "", "")
	nonce := sg.auth()
	wantError(t, sg.attestRaw(attestBody(t, nonce, sg.pub, sg.evidence(nonce, sg.pub))), http.StatusUnauthorized, protocol.KindAttestationError, "vcek-chain")
	// deny-all admin.
	r := send(t, &http.Client{}, http.MethodGet, ts2.URL, "/kbs/v0/resource", nil, nil)
	wantError(t, r, http.StatusUnauthorized, protocol.KindAdminAuthAccess, "deny-all")
}

// Daemon.Serve in dev mode without --insecure-http generates a self-signed
// certificate in the data dir; a guest trusting it fetches a resource over
// HTTPS; cancelling the context shuts the server down.
func TestServeDevTLS(t *testing.T) {
	dir := t.TempDir()
	if err := simChip(t).Save(filepath.Join(dir, "sim-snp")); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.Dev, cfg.Listen = dir, true, "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := server.Open(ctx, cfg, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- d.Serve(ctx, func(addr string) { addrc <- addr }) }()
	var url string
	select {
	case url = <-addrc:
	case err := <-errc:
		t.Fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not report its address")
	}
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("address %q", url)
	}
	certFile := filepath.Join(dir, "kbs-cert.pem")
	hc, err := client.HTTPClient(certFile)
	if err != nil {
		t.Fatal(err)
	}
	want := secret("tls")
	if err := client.NewAdmin(url, hc, "").SetResource(ctx, "t/l/s", want); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(url, simGuest(t, sim.LaunchConfig{}), client.Options{CertFile: certFile, Log: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetResource(ctx, "t/l/s")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("over TLS: %q %v", got, err)
	}
	// Plain HTTP to the TLS port does not get a resource.
	resp, err := http.Get(strings.Replace(url, "https", "http", 1) + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP served on the TLS port")
		}
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serve returned %v after cancel", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop after cancel")
	}
}

// [attestation] trust_simulated_roots without --dev: Open trusts the
// simulated chip saved in the data dir, so simulated SNP evidence verifies
// and its token says simulated (coffer.simulated and snp.simulated); the
// production resource policy still refuses to release to it. The same
// configuration without the option refuses the evidence (vcek-chain).
func TestTrustSimulatedRootsWithoutDev(t *testing.T) {
	ctx := context.Background()
	open := func(trust bool) (*server.Daemon, *httptest.Server) {
		d, ts := openDaemonWith(t, t.TempDir(), func(c *server.Config) {
			c.Admin.Mode = server.AdminDenyAll
			c.Attestation.TrustSimulatedRoots = trust
		})
		t.Cleanup(func() {
			ts.Close()
			d.Close()
		})
		if _, err := d.Store.Put(ctx, store.NSResources, "sim/secret/key", secret("sim"), true); err != nil {
			t.Fatal(err)
		}
		return d, ts
	}

	d, ts := open(true)
	if d.SimRoots == nil {
		t.Fatal("trust_simulated_roots: the daemon does not trust the simulated chip")
	}
	if !bytes.Equal(d.SimRoots.RootCertsPEM(), simChip(t).RootCertsPEM()) {
		t.Fatal("trust_simulated_roots: the daemon trusts another chip than the one in <data-dir>/sim-snp")
	}
	g := newGuest(t, ts.URL, simGuest(t, sim.LaunchConfig{Measurement: measurement(0x5a)}), "", "")
	tok := g.handshake()
	cpu0 := cpu0Claims(t, tok)
	if cpu0["coffer.simulated"] != true {
		t.Errorf(`token submods.cpu0["coffer.simulated"] = %v, want true`, cpu0["coffer.simulated"])
	}
	ae, _ := cpu0["ear.veraison.annotated-evidence"].(map[string]any)
	if snp, _ := ae["snp"].(map[string]any); snp["simulated"] != true {
		t.Errorf("token annotated-evidence snp.simulated = %v, want true", snp["simulated"])
	}
	wantError(t, g.getNoCookie("sim/secret/key", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "simulated secure processor")
	wantError(t, g.get("sim/secret/key", ""), http.StatusUnauthorized, protocol.KindPolicyDeny, "simulated secure processor")

	d, ts = open(false)
	if d.SimRoots != nil {
		t.Fatal("without trust_simulated_roots the daemon trusts the simulated chip")
	}
	g = newGuest(t, ts.URL, simGuest(t, sim.LaunchConfig{Measurement: measurement(0x5a)}), "", "")
	nonce := g.auth()
	wantError(t, g.attestRaw(attestBody(t, nonce, g.pub, g.evidence(nonce, g.pub))), http.StatusUnauthorized, protocol.KindAttestationError, "vcek-chain")
	wantError(t, g.get("sim/secret/key", ""), http.StatusUnauthorized, protocol.KindTokenNotFound)
}

// A resource policy an admin set is kept across restarts even when its
// text is a built-in policy of the other mode (a start replaces only a
// built-in that a start wrote): here the default policy set on a --dev
// server stays in force after a --dev restart.
func TestAdminResourcePolicyKeptAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d, ts := openDaemon(t, dir, true)
	adm := client.NewAdmin(ts.URL, ts.Client(), "")
	if err := adm.SetResource(ctx, "x/y/z", secret("kept")); err != nil {
		t.Fatal(err)
	}
	def, err := policy.Default(policy.ResourceDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := adm.SetResourcePolicy(ctx, []byte(def)); err != nil {
		t.Fatal(err)
	}
	g := newGuest(t, ts.URL, tee.NewSample(), "", "")
	tok := g.handshake()
	wantError(t, g.getNoCookie("x/y/z", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "sample TEE")
	ts.Close()
	d.Close()

	d2, ts2 := openDaemon(t, dir, true)
	defer d2.Close()
	defer ts2.Close()
	adm2 := client.NewAdmin(ts2.URL, ts2.Client(), "")
	got, err := adm2.GetResourcePolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != def {
		t.Fatalf("after a --dev restart the resource policy is not the one the admin set:\n%s", got)
	}
	g = newGuest(t, ts2.URL, tee.NewSample(), "", "")
	tok = g.handshake()
	wantError(t, g.getNoCookie("x/y/z", tok), http.StatusUnauthorized, protocol.KindPolicyDeny, "sample TEE")
}

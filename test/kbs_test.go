//go:build integration

package test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/client"
	"github.com/coffer-project/coffer/internal/kbs/protocol"
	builtinpolicy "github.com/coffer-project/coffer/internal/policy/builtin"
	"github.com/coffer-project/coffer/internal/tee"
	"github.com/coffer-project/coffer/internal/tee/sim"
	jose "github.com/go-jose/go-jose/v4"
)

// The coffer-kbs integration tests run the real coffer-kbs binary (next to
// COFFER_BIN: bin/coffer-kbs) on loopback and drive it with the real
// `coffer kbs` CLI.

// kbsBin returns the coffer-kbs binary built next to the coffer binary.
func kbsBin(t *testing.T) string {
	t.Helper()
	p := filepath.Join(filepath.Dir(cofferBin), "coffer-kbs")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("coffer-kbs binary not found at %s (next to COFFER_BIN): run `make build`", p)
	}
	return p
}

// kbsServer is a running coffer-kbs.
type kbsServer struct {
	url     string
	dataDir string
	cmd     *exec.Cmd
	log     *syncBuffer
	done    chan struct{}
	exitErr error
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startKbs starts coffer-kbs with args plus --data-dir and --listen on a
// free loopback port (retrying on a port collision), waits for /healthz
// and stops it (SIGTERM, then SIGKILL) at cleanup. hc must trust the
// server's certificate for an HTTPS server.
func startKbs(t *testing.T, scheme, dataDir string, hc *http.Client, args ...string) *kbsServer {
	t.Helper()
	var lastLog string
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		s := &kbsServer{url: scheme + "://" + addr, dataDir: dataDir, log: &syncBuffer{}, done: make(chan struct{})}
		full := append([]string{"--data-dir", dataDir, "--listen", addr}, args...)
		s.cmd = exec.Command(kbsBin(t), full...)
		s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("start coffer-kbs: %v", err)
		}
		go func() {
			s.exitErr = s.cmd.Wait()
			close(s.done)
		}()
		if s.waitHealthy(hc, 60*time.Second) {
			t.Cleanup(func() { s.stop(t) })
			t.Logf("coffer-kbs %s up at %s", strings.Join(args, " "), s.url)
			return s
		}
		s.kill()
		lastLog = s.log.String()
		if !strings.Contains(lastLog, "address already in use") {
			break
		}
	}
	t.Fatalf("coffer-kbs did not become healthy; its output:\n%s", lastLog)
	return nil
}

// waitHealthy polls /healthz until 200, the process exits or d passes.
func (s *kbsServer) waitHealthy(hc *http.Client, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return false
		default:
		}
		resp, err := hc.Get(s.url + "/healthz")
		if err == nil {
			ok := resp.StatusCode == http.StatusOK
			resp.Body.Close()
			if ok {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (s *kbsServer) kill() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// stop sends SIGTERM and expects a clean exit (graceful shutdown).
func (s *kbsServer) stop(t *testing.T) {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		if s.exitErr != nil {
			t.Errorf("coffer-kbs exited with %v after SIGTERM; output:\n%s", s.exitErr, clip(s.log.String()))
		}
	case <-time.After(15 * time.Second):
		t.Errorf("coffer-kbs did not stop within 15 s of SIGTERM; killing it")
		s.kill()
	}
}

// kbsCLI runs `coffer kbs --url URL ARGS...` with HOME set to home (so no
// ~/.coffer/kbs-admin-token of the machine's user is picked up).
func kbsCLI(t *testing.T, home, url string, args ...string) result {
	t.Helper()
	return runCmd(t, []string{"HOME=" + home}, "", cofferBin, append([]string{"kbs", "--url", url}, args...)...)
}

// wantOK fails unless the CLI exited 0.
func wantOK(t *testing.T, r result) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// wantFail fails unless the CLI exited 1 with every want in stderr and
// printed no resource on stdout.
func wantFail(t *testing.T, r result, want ...string) {
	t.Helper()
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if strings.TrimSpace(r.stdout) != "" {
		t.Errorf("a failed command printed %q", r.stdout)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q does not contain %q", r.stderr, w)
		}
	}
}

// kbsKeyAlgs are the CLI's --key-algorithm/--key-curve combinations.
var kbsKeyAlgs = [][]string{
	{"--key-algorithm", "ECDH-ES+A256KW", "--key-curve", "P-256"},
	{"--key-algorithm", "ECDH-ES+A256KW", "--key-curve", "P-521"},
	{"--key-algorithm", "RSA-OAEP-256"},
	{"--key-algorithm", "RSA1_5"},
}

// A dev coffer-kbs on plain HTTP, driven by the coffer kbs CLI: resources,
// sample and simulated SNP guests with every key type, reference values,
// a deny_all resource policy, traversal, oversized bodies, metrics, and a
// restart on the same data dir.
func TestKbsDevCLI(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	data := filepath.Join(t.TempDir(), "data")
	hc := &http.Client{Timeout: 10 * time.Second}
	srv := startKbs(t, "http", data, hc, "--dev", "--insecure-http")
	url := srv.url
	// --dev says so loudly in the log, naming the open address.
	if log := srv.log.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "DEVELOPMENT MODE") ||
		!strings.Contains(log, strings.TrimPrefix(url, "http://")) || !strings.Contains(log, "Never run --dev with real secrets") {
		t.Errorf("no dev-mode warning in the coffer-kbs log:\n%s", log)
	}

	secretBytes := make([]byte, 100)
	if _, err := rand.Read(secretBytes); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(home, "secret.bin")
	if err := os.WriteFile(secretFile, secretBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	wantB64 := base64.StdEncoding.EncodeToString(secretBytes)

	wantOK(t, kbsCLI(t, home, url, "set-resource", "--path", "repo/type/tag", "--file", secretFile))
	wantOK(t, kbsCLI(t, home, url, "set-resource", "--path", "repo/type/other", "--file", secretFile))
	if got := wantOK(t, kbsCLI(t, home, url, "list-resources")); got != "repo/type/other\nrepo/type/tag" {
		t.Fatalf("list-resources: %q", got)
	}

	simDir := filepath.Join(data, "sim-snp")
	tees := [][]string{{"--tee", "sample"}, {"--tee", "sim-snp", "--sim-dir", simDir}}
	for _, teeArgs := range tees {
		for _, alg := range kbsKeyAlgs {
			args := append(append([]string{"get-resource", "--path", "repo/type/tag"}, teeArgs...), alg...)
			if got := wantOK(t, kbsCLI(t, home, url, args...)); got != wantB64 {
				t.Fatalf("%v: got %q, want %q", args, got, wantB64)
			}
		}
	}
	// kbs:/// URIs and --output.
	out := filepath.Join(home, "out.bin")
	wantOK(t, kbsCLI(t, home, url, "get-resource", "--path", "kbs:///repo/type/tag", "--tee", "sample", "--output", out))
	if b, err := os.ReadFile(out); err != nil || !bytes.Equal(b, secretBytes) {
		t.Fatalf("--output wrote %q (%v)", b, err)
	}
	// attest prints an EAR token.
	if tok := wantOK(t, kbsCLI(t, home, url, "attest", "--tee", "sample")); strings.Count(tok, ".") != 2 {
		t.Fatalf("attest printed %q, not a JWT", tok)
	}

	// Reference values.
	wantOK(t, kbsCLI(t, home, url, "set-reference-value", "svn", "1"))
	if got := wantOK(t, kbsCLI(t, home, url, "get-reference-value", "svn")); got != `["1"]` {
		t.Fatalf("get-reference-value svn: %q", got)
	}
	wantOK(t, kbsCLI(t, home, url, "set-reference-value", "major_version", "1", "--as-integer", "--as-single-value"))
	if got := wantOK(t, kbsCLI(t, home, url, "get-reference-value", "major_version")); got != `1` {
		t.Fatalf("get-reference-value major_version: %q", got)
	}
	wantFail(t, kbsCLI(t, home, url, "get-reference-value", "nope"), "404")

	// Not found, and traversal: refused with exit 1, nothing printed.
	wantFail(t, kbsCLI(t, home, url, "get-resource", "--path", "repo/type/none", "--tee", "sample"), "404", "not found")
	wantFail(t, kbsCLI(t, home, url, "get-resource", "--path", "repo/../type/tag", "--tee", "sample"), "404", "InvalidRequestPath")
	wantFail(t, kbsCLI(t, home, url, "get-resource", "--path", "repo/type/tag/x", "--tee", "sample"), "404", "InvalidRequestPath")
	wantFail(t, kbsCLI(t, home, url, "set-resource", "--path", "../../etc/x", "--file", secretFile), "404", "InvalidRequestPath")

	// deny_all: get-resource fails with PolicyDeny, for both TEEs.
	wantOK(t, kbsCLI(t, home, url, "set-resource-policy", "--builtin", "deny_all"))
	for _, teeArgs := range tees {
		args := append([]string{"get-resource", "--path", "repo/type/tag"}, teeArgs...)
		wantFail(t, kbsCLI(t, home, url, args...), "PolicyDeny")
	}
	wantOK(t, kbsCLI(t, home, url, "set-resource-policy", "--builtin", "dev"))
	wantOK(t, kbsCLI(t, home, url, "get-resource", "--path", "repo/type/tag", "--tee", "sample"))

	// Raw protocol checks against the real binary: oversized body, bad
	// version, ErrorInformation bodies.
	big := bytes.NewReader(make([]byte, 2<<20+1))
	resp, err := hc.Post(url+"/kbs/v0/auth", "application/json", big)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !bytes.Contains(body, []byte("/errors/SerdeError")) {
		t.Errorf("oversized /auth: %d %s", resp.StatusCode, body)
	}
	resp, err = hc.Post(url+"/kbs/v0/auth", "application/json", strings.NewReader(`{"version":"0.3.0","tee":"sample","extra-params":""}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte("/errors/AttestationError")) || !bytes.Contains(body, []byte("Version Mismatch")) {
		t.Errorf("bad version: %d %s", resp.StatusCode, body)
	}

	// Metrics saw the handshakes.
	resp, err = hc.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kbs_attestations_total{outcome="success",tee="sample"}`,
		`kbs_attestations_total{outcome="success",tee="snp"}`,
		`kbs_resource_releases_total{outcome="released"}`,
		`kbs_resource_releases_total{outcome="denied"}`,
		`kbs_resource_releases_total{outcome="not_found"}`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics has no %s", want)
		}
	}

	// Restart on the same data dir: resources, reference values and the
	// simulated chip are still there.
	srv.stop(t)
	srv2 := startKbs(t, "http", data, hc, "--dev", "--insecure-http")
	if got := wantOK(t, kbsCLI(t, home, srv2.url, "list-resources")); got != "repo/type/other\nrepo/type/tag" {
		t.Fatalf("list-resources after restart: %q", got)
	}
	if got := wantOK(t, kbsCLI(t, home, srv2.url, "get-reference-value", "svn")); got != `["1"]` {
		t.Fatalf("get-reference-value after restart: %q", got)
	}
	if got := wantOK(t, kbsCLI(t, home, srv2.url, "get-resource", "--path", "repo/type/tag", "--tee", "sim-snp", "--sim-dir", simDir)); got != wantB64 {
		t.Fatalf("sim-snp after restart: %q", got)
	}
}

// selfSignedTLS writes a certificate and key for 127.0.0.1.
func selfSignedTLS(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kbs integration test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls-cert.pem"), filepath.Join(dir, "tls-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// A production-style coffer-kbs: HTTPS with the operator's certificate,
// admin mode jwt with a key from `coffer kbs admin-keygen`, tokens from
// `coffer kbs admin-token`. Admin verbs fail without a token, with a token
// of an untrusted key and with a role whose ACL lacks the endpoint; they
// work with a valid token. The default resource policy refuses the sample
// TEE.
func TestKbsAdminHTTPS(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	wantOK(t, kbsCLI(t, home, "", "admin-keygen", "--out", keys))
	for _, f := range []string{"admin-key.pem", "admin-pub.pem"} {
		if _, err := os.Stat(filepath.Join(keys, f)); err != nil {
			t.Fatalf("admin-keygen did not write %s: %v", f, err)
		}
	}
	if st, err := os.Stat(filepath.Join(keys, "admin-key.pem")); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("admin-key.pem mode %o, want 600", st.Mode().Perm())
	}
	// admin-keygen refuses to overwrite the private key.
	wantFail(t, kbsCLI(t, home, "", "admin-keygen", "--out", keys), "exists")
	otherKeys := filepath.Join(dir, "other-keys")
	wantOK(t, kbsCLI(t, home, "", "admin-keygen", "--out", otherKeys))

	cfgFile := filepath.Join(dir, "kbs.toml")
	cfg := fmt.Sprintf(`[admin]
mode = "jwt"
public_keys = [%q]

[[admin.acls]]
role = "admin"
allowed_endpoints = "^/kbs/v0/.+$"

[[admin.acls]]
role = "reader"
allowed_endpoints = "^/kbs/v0/reference-value/.+$"
`, filepath.Join(keys, "admin-pub.pem"))
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, pool := selfSignedTLS(t, dir)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	srv := startKbs(t, "https", filepath.Join(dir, "data"), hc, "--config", cfgFile, "--tls-cert", certFile, "--tls-key", keyFile)
	url := srv.url
	if strings.Contains(srv.log.String(), "DEVELOPMENT MODE") {
		t.Errorf("a production coffer-kbs logged the dev-mode warning:\n%s", srv.log.String())
	}

	tokenFile := func(name, keyDir string, extra ...string) string {
		args := append([]string{"admin-token", "--key", filepath.Join(keyDir, "admin-key.pem")}, extra...)
		tok := wantOK(t, kbsCLI(t, home, "", args...))
		if strings.Count(tok, ".") != 2 {
			t.Fatalf("admin-token printed %q", tok)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	adminTok := tokenFile("admin.tok", keys)
	readerTok := tokenFile("reader.tok", keys, "--role", "reader")
	untrustedTok := tokenFile("untrusted.tok", otherKeys)
	expiredTok := tokenFile("expired.tok", keys, "--ttl=-2m")

	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("prod-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	certArgs := []string{"--cert-file", certFile}
	admin := func(tok string, args ...string) result {
		full := append(append([]string{}, certArgs...), args...)
		if tok != "" {
			full = append([]string{"--admin-token-file", tok}, full...)
		}
		return kbsCLI(t, home, url, full...)
	}
	verbs := [][]string{
		{"set-resource", "--path", "prod/keys/disk", "--file", secretFile},
		{"list-resources"},
		{"set-reference-value", "svn", "1"},
		{"get-reference-value", "svn"},
		{"set-resource-policy", "--builtin", "allow_all"},
		{"delete-resource", "--path", "prod/keys/disk"},
	}
	for _, v := range verbs {
		wantFail(t, admin("", v...), "AdminAuthAccess")
		wantFail(t, admin(untrustedTok, v...), "AdminAuthAccess", "not from a trusted key")
		wantFail(t, admin(expiredTok, v...), "AdminAuthAccess", "expired")
		if v[0] != "get-reference-value" {
			wantFail(t, admin(readerTok, v...), "AdminAuthAccess", `role "reader" may not`)
		}
	}
	// Nothing was written by the refused calls.
	if got := wantOK(t, admin(adminTok, "list-resources")); got != "" {
		t.Fatalf("resources after refused calls: %q", got)
	}
	// Valid token: every verb works.
	wantOK(t, admin(adminTok, "set-resource", "--path", "prod/keys/disk", "--file", secretFile))
	if got := wantOK(t, admin(adminTok, "list-resources")); got != "prod/keys/disk" {
		t.Fatalf("list-resources: %q", got)
	}
	wantOK(t, admin(adminTok, "set-reference-value", "svn", "1"))
	if got := wantOK(t, admin(readerTok, "get-reference-value", "svn")); got != `["1"]` {
		t.Fatalf("reader get-reference-value: %q", got)
	}

	// The default (production) resource policy refuses the sample TEE.
	wantFail(t, kbsCLI(t, home, url, "get-resource", "--path", "prod/keys/disk", "--tee", "sample", "--cert-file", certFile), "PolicyDeny", "sample TEE")
	// Without trusting the certificate the client does not talk to it.
	wantFail(t, kbsCLI(t, home, url, "get-resource", "--path", "prod/keys/disk", "--tee", "sample"), "certificate")
	wantFail(t, kbsCLI(t, home, url, "--admin-token-file", adminTok, "list-resources"), "certificate")
	// Plain HTTP to the HTTPS port gets nothing.
	if resp, err := http.Get(strings.Replace(url, "https://", "http://", 1) + "/kbs/v0/resource"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("the HTTPS port answered plain HTTP with 200")
		}
	}
	// An admin token is not an attestation token.
	tok, _ := os.ReadFile(adminTok)
	req, _ := http.NewRequest(http.MethodGet, url+"/kbs/v0/resource/prod/keys/disk", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte("/errors/TokenVerifierError")) || bytes.Contains(body, []byte("ciphertext")) {
		t.Errorf("admin token as attestation token: %d %s", resp.StatusCode, body)
	}
	// allow_all, then the sample guest gets the resource.
	wantOK(t, admin(adminTok, "set-resource-policy", "--builtin", "allow_all"))
	if got := wantOK(t, kbsCLI(t, home, url, "get-resource", "--path", "prod/keys/disk", "--tee", "sample", "--cert-file", certFile)); got != base64.StdEncoding.EncodeToString([]byte("prod-secret")) {
		t.Fatalf("after allow_all: %q", got)
	}
	wantOK(t, admin(adminTok, "delete-resource", "--path", "prod/keys/disk"))
	wantFail(t, kbsCLI(t, home, url, "get-resource", "--path", "prod/keys/disk", "--tee", "sample", "--cert-file", certFile), "404")
}

// coffer-kbs refuses configurations that would be unsafe or broken, with
// exit 1 and a clear message, before listening.
func TestKbsRefusesBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"https without cert", []string{"--data-dir", dir}, "--tls-cert"},
		{"allow-all without dev", []string{"--insecure-http", "--config", write("allowall.toml", "[admin]\nmode = \"allow-all\"\n")}, "allow-all"},
		{"jwt without keys", []string{"--insecure-http", "--data-dir", dir, "--config", write("nokeys.toml", "[admin]\nmode = \"jwt\"\n")}, "public key"},
		{"unknown key", []string{"--insecure-http", "--config", write("unknown.toml", "bogus = 1\n")}, "unknown keys"},
		{"bad flag", []string{"--bogus"}, "bogus"},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, kbsBin(t), append(c.args, "--listen", "127.0.0.1:1")...)
		out, err := cmd.CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("%s: err %v, want a non-zero exit; output %s", c.name, err, out)
			continue
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("%s: output %q does not mention %q", c.name, out, c.want)
		}
	}
}

// resourceBearerOnly fetches a resource from the KBS at url with only
// Authorization: Bearer token (none if token is ""): a client without a
// cookie jar, so no session cookie goes with it.
func resourceBearerOnly(t *testing.T, url, path, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/kbs/v0/resource/"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	status, body, _ := kbsDo(t, &http.Client{Timeout: 10 * time.Second}, req)
	return status, body
}

// kbsDo sends req with hc and returns the answer's status and body, and
// the request as it went out (with the cookies hc added).
func kbsDo(t *testing.T, hc *http.Client, req *http.Request) (int, []byte, *http.Request) {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body, resp.Request
}

// The Bearer path on the real binary (CDH's token client uses it): a
// guest attests, then fetches the resource with only its token as Bearer,
// no session cookie, and decrypts it. The token with its tee-pubkey
// swapped for an attacker's, under the original signature (tampered) or
// signed again by the attacker's key with that key in the header jwk
// (re-signed, as the server's own header carries its key), is refused
// with 401 TokenVerifierError and no secret.
func TestKbsBearerOnly(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	hc := &http.Client{Timeout: 10 * time.Second}
	srv := startKbs(t, "http", filepath.Join(t.TempDir(), "data"), hc, "--dev", "--insecure-http")
	secret := []byte("bearer-only-secret")
	secretFile := filepath.Join(home, "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	wantOK(t, kbsCLI(t, home, srv.url, "set-resource", "--path", "bear/er/only", "--file", secretFile))

	// The guest keeps its TEE key to open the JWE itself.
	priv, _, err := protocol.NewTeeKey(protocol.AlgECDHESA256KW, protocol.CurveP256)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.url, tee.NewSample(), client.Options{TeeKey: priv.(crypto.Signer)})
	if err != nil {
		t.Fatal(err)
	}
	token, err := c.Attest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	status, body := resourceBearerOnly(t, srv.url, "bear/er/only", token)
	if status != http.StatusOK {
		t.Fatalf("Bearer-only resource request: %d %s", status, body)
	}
	var jwe protocol.Response
	if err := json.Unmarshal(body, &jwe); err != nil {
		t.Fatalf("not a JWE: %v: %s", err, body)
	}
	got, err := protocol.DecryptResponse(priv, &jwe)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("decrypted %q (%v), want %q", got, err, secret)
	}

	// The attacker's TEE key and token signing key.
	_, attackerPub, err := protocol.NewTeeKey(protocol.AlgECDHESA256KW, protocol.CurveP256)
	if err != nil {
		t.Fatal(err)
	}
	signKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	var pubJSON any
	pb, _ := json.Marshal(attackerPub)
	_ = json.Unmarshal(pb, &pubJSON)
	sub, _ := claims["submods"].(map[string]any)
	cpu, _ := sub["cpu0"].(map[string]any)
	ev, _ := cpu["ear.veraison.annotated-evidence"].(map[string]any)
	rd, _ := ev["runtime_data_claims"].(map[string]any)
	if rd == nil || rd["tee-pubkey"] == nil {
		t.Fatalf("the token has no runtime_data_claims.tee-pubkey: %s", payload)
	}
	rd["tee-pubkey"] = pubJSON
	forged, _ := json.Marshal(claims)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: signKey, Algorithm: "ES256"}},
		(&jose.SignerOptions{EmbedJWK: true}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := sig.Sign(forged)
	if err != nil {
		t.Fatal(err)
	}
	resigned, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"tampered": tampered, "re-signed": resigned} {
		status, body := resourceBearerOnly(t, srv.url, "bear/er/only", tok)
		t.Logf("%s token: %d %s", name, status, body)
		if status != http.StatusUnauthorized || !bytes.Contains(body, []byte("/errors/TokenVerifierError")) {
			t.Errorf("%s token: %d %s, want 401 TokenVerifierError", name, status, body)
		}
		if bytes.Contains(body, []byte("ciphertext")) || bytes.Contains(body, secret) {
			t.Errorf("%s token: the answer carries the resource: %s", name, body)
		}
	}
	// No token at all: 401 TokenNotFound; the genuine token still works.
	status, body = resourceBearerOnly(t, srv.url, "bear/er/only", "")
	if status != http.StatusUnauthorized || !bytes.Contains(body, []byte("/errors/TokenNotFound")) {
		t.Errorf("no token: %d %s", status, body)
	}
	if status, body := resourceBearerOnly(t, srv.url, "bear/er/only", token); status != http.StatusOK {
		t.Errorf("the genuine token after the forgeries: %d %s", status, body)
	}
}

// kbsTeeKey is one TEE key type of the protocol with its key pair, made
// once per test (RSA generation is the slow part).
type kbsTeeKey struct {
	name, alg string
	priv      crypto.Signer
}

// kbsTeeKeys generates a key pair of every TEE key type the protocol
// supports: EC P-256 and P-521 with ECDH-ES+A256KW, RSA with RSA-OAEP-256
// and with RSA1_5.
func kbsTeeKeys(t *testing.T) []kbsTeeKey {
	t.Helper()
	keys := []kbsTeeKey{
		{name: "EC-P-256", alg: protocol.AlgECDHESA256KW},
		{name: "EC-P-521", alg: protocol.AlgECDHESA256KW},
		{name: "RSA-OAEP-256", alg: protocol.AlgRSAOAEP256},
		{name: "RSA1_5", alg: protocol.AlgRSA15},
	}
	curves := []string{protocol.CurveP256, protocol.CurveP521, "", ""}
	for i := range keys {
		priv, _, err := protocol.NewTeeKey(keys[i].alg, curves[i])
		if err != nil {
			t.Fatal(err)
		}
		keys[i].priv = priv.(crypto.Signer)
	}
	return keys
}

// kbsPostJSON posts body to the KBS with hc (whose cookie jar carries the
// session) and decodes a 200 answer into out.
func kbsPostJSON(t *testing.T, hc *http.Client, url string, body, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	status, ans, _ := kbsDo(t, hc, req)
	if status != http.StatusOK {
		t.Fatalf("POST %s: %d %s", url, status, ans)
	}
	if err := json.Unmarshal(ans, out); err != nil {
		t.Fatalf("POST %s: %v: %s", url, err, ans)
	}
}

// kbsCookieSession is an RCAR session driven by hand, as a guest with a
// cookie store does: its cookie jar holds the kbs-session-id cookie and
// nothing else goes with a request.
type kbsCookieSession struct {
	hc    *http.Client
	url   string
	nonce string
	hash  string
}

// kbsAuth starts a session: POST /kbs/v0/auth, which must set the session
// cookie.
func kbsAuth(t *testing.T, url, teeName string) *kbsCookieSession {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &kbsCookieSession{hc: &http.Client{Timeout: 10 * time.Second, Jar: jar}, url: url}
	var ch protocol.Challenge
	kbsPostJSON(t, s.hc, url+"/kbs/v0/auth", protocol.NewRequest(teeName), &ch)
	if s.hash, err = ch.HashAlgorithm(); err != nil {
		t.Fatal(err)
	}
	s.nonce = ch.Nonce
	if s.cookie(t) == "" {
		t.Fatal("/auth set no kbs-session-id cookie")
	}
	return s
}

// cookie returns the session cookie the jar sends with a resource
// request (the server sets no Path, so the cookie's path is /kbs/v0).
func (s *kbsCookieSession) cookie(t *testing.T) string {
	t.Helper()
	u, err := neturl.Parse(s.url + "/kbs/v0/resource/")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range s.hc.Jar.Cookies(u) {
		if c.Name == "kbs-session-id" {
			return c.Value
		}
	}
	return ""
}

// attest answers the session's challenge with att's evidence binding
// priv's public key (alg) and returns the token.
func (s *kbsCookieSession) attest(t *testing.T, att tee.Attester, priv crypto.Signer, alg string) string {
	t.Helper()
	pub, err := protocol.NewTeePubKey(priv.Public(), alg)
	if err != nil {
		t.Fatal(err)
	}
	additional := ""
	digest, err := protocol.RuntimeDataDigest(s.hash, s.nonce, pub, &additional)
	if err != nil {
		t.Fatal(err)
	}
	evidence, err := att.Evidence(context.Background(), digest)
	if err != nil {
		t.Fatal(err)
	}
	var ar protocol.AttestResponse
	kbsPostJSON(t, s.hc, s.url+"/kbs/v0/attest", protocol.Attestation{
		RuntimeData: protocol.RuntimeData{Nonce: s.nonce, TeePubKey: pub},
		TeeEvidence: protocol.TeeEvidence{PrimaryEvidence: evidence, AdditionalEvidence: additional},
	}, &ar)
	return ar.Token
}

// resource fetches a resource with the session cookie alone: no
// Authorization header.
func (s *kbsCookieSession) resource(t *testing.T, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.url+"/kbs/v0/resource/"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	status, body, sent := kbsDo(t, s.hc, req)
	if sent.Header.Get("Authorization") != "" {
		t.Fatalf("the cookie-only request carried Authorization: %q", sent.Header.Get("Authorization"))
	}
	return status, body
}

// openResource checks a 200 resource answer: a JWE whose protected header
// names alg, which priv decrypts to want.
func openResource(t *testing.T, status int, body []byte, priv crypto.PrivateKey, alg string, want []byte) {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("resource request: %d %s", status, body)
	}
	var jwe protocol.Response
	if err := json.Unmarshal(body, &jwe); err != nil {
		t.Fatalf("not a JWE: %v: %s", err, body)
	}
	hdr, err := base64.RawURLEncoding.DecodeString(jwe.Protected)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil || h.Alg != alg {
		t.Errorf("JWE protected header %s (%v): want alg %q", hdr, err, alg)
	}
	got, err := protocol.DecryptResponse(priv, &jwe)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("decrypted %q (%v), want %q", got, err, want)
	}
}

// Both ways a guest presents its attestation on the real binary, for the
// sample TEE and a simulated SNP guest (on the dev server's own chip in
// <data-dir>/sim-snp), each with every TEE key type: Bearer-only (the
// client attests, then the resource request carries only Authorization:
// Bearer, no cookie) and cookie-only (/auth and /attest by hand with a
// cookie jar, then the resource request carries only the session cookie,
// no Authorization). Each guest is affirming (reference values
// registered) and the resource policy is affirming.rego, so what is
// released is decided by the claims the token or the session carries; the
// JWE names the key's algorithm and the guest's key opens it. A cookie of
// a session that did not attest, and one the server never issued, get 401
// TokenNotFound and no resource.
func TestKbsCookieAndBearer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	hc := &http.Client{Timeout: 10 * time.Second}
	srv := startKbs(t, "http", data, hc, "--dev", "--insecure-http")
	const path = "cookie/and/bearer"
	secret := []byte("cookie-and-bearer-secret")
	admin := client.NewAdmin(srv.url, hc, "")
	if err := admin.SetResource(ctx, path, secret); err != nil {
		t.Fatal(err)
	}

	// A simulated SNP guest on the server's chip, and reference values
	// that affirm it and the sample TEE under the default appraisal policy.
	chip, err := sim.Load(filepath.Join(data, "sim-snp"))
	if err != nil {
		t.Fatal(err)
	}
	measurement := sha512.Sum384([]byte("coffer test/kbs simulated guest"))
	guest, err := chip.Launch(sim.LaunchConfig{Measurement: measurement})
	if err != nil {
		t.Fatal(err)
	}
	tcb := chip.TCB()
	for _, rv := range []struct {
		name   string
		value  any
		single bool
	}{
		{"launch_digest", "abcde", false}, {"svn", "1", false},
		{"major_version", 1, true}, {"minimum_minor_version", 1, true},
		{"snp_launch_measurement", hex.EncodeToString(measurement[:]), false},
		{"snp_bootloader", tcb.Bootloader, true}, {"snp_tee_svn", tcb.TEE, true},
		{"snp_snp_svn", tcb.SNP, true}, {"snp_microcode", tcb.Microcode, true},
	} {
		if err := admin.SetSampleReferenceValue(ctx, rv.name, rv.value, rv.single); err != nil {
			t.Fatal(err)
		}
	}
	affirming, err := builtinpolicy.Text(builtinpolicy.ResourceAffirming)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.SetResourcePolicy(ctx, []byte(affirming)); err != nil {
		t.Fatal(err)
	}

	keys := kbsTeeKeys(t)
	tees := []struct {
		name string
		att  tee.Attester
	}{
		{"sample", tee.NewSample()},
		{"sim-snp", tee.NewSimSNP(guest)},
	}
	for _, tt := range tees {
		for _, k := range keys {
			t.Run(tt.name+"/"+k.name+"/bearer-only", func(t *testing.T) {
				t.Parallel()
				c, err := client.New(srv.url, tt.att, client.Options{TeeKey: k.priv, KeyAlgorithm: k.alg})
				if err != nil {
					t.Fatal(err)
				}
				token, err := c.Attest(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if s := earStatusOf(t, token); s != "affirming" {
					t.Fatalf("ear.status %q, want affirming", s)
				}
				status, body := resourceBearerOnly(t, srv.url, path, token)
				openResource(t, status, body, k.priv, k.alg, secret)
			})
			t.Run(tt.name+"/"+k.name+"/cookie-only", func(t *testing.T) {
				t.Parallel()
				// A session that did not attest: its cookie alone is refused.
				idle := kbsAuth(t, srv.url, tt.att.Tee())
				status, body := idle.resource(t, path)
				if status != http.StatusUnauthorized || !bytes.Contains(body, []byte("/errors/TokenNotFound")) {
					t.Errorf("cookie of a session that did not attest: %d %s, want 401 TokenNotFound", status, body)
				}
				if bytes.Contains(body, []byte("ciphertext")) || bytes.Contains(body, secret) {
					t.Errorf("cookie of a session that did not attest: the answer carries the resource: %s", body)
				}

				s := kbsAuth(t, srv.url, tt.att.Tee())
				if s.cookie(t) == idle.cookie(t) {
					t.Fatalf("two /auth calls got the same session cookie %q", s.cookie(t))
				}
				token := s.attest(t, tt.att, k.priv, k.alg)
				if st := earStatusOf(t, token); st != "affirming" {
					t.Fatalf("ear.status %q, want affirming", st)
				}
				status, body = s.resource(t, path)
				openResource(t, status, body, k.priv, k.alg, secret)
			})
		}
	}
	t.Run("unknown-session-cookie", func(t *testing.T) {
		t.Parallel()
		req, err := http.NewRequest(http.MethodGet, srv.url+"/kbs/v0/resource/"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.AddCookie(&http.Cookie{Name: "kbs-session-id", Value: "0123456789abcdef0123456789abcdef"})
		status, body, _ := kbsDo(t, hc, req)
		if status != http.StatusUnauthorized || !bytes.Contains(body, []byte("/errors/TokenNotFound")) {
			t.Errorf("an unknown session cookie: %d %s, want 401 TokenNotFound", status, body)
		}
		if bytes.Contains(body, []byte("ciphertext")) || bytes.Contains(body, secret) {
			t.Errorf("an unknown session cookie: the answer carries the resource: %s", body)
		}
	})
}

// `coffer kbs admin-token` mints with an EC P-256 key (SEC 1 PEM, as
// `openssl ecparam -genkey` writes it): a coffer-kbs trusting the public
// key accepts the ES256 token for admin calls, which take effect; a token
// with a role outside the ACL is refused.
func TestKbsAdminEC(t *testing.T) {
	t.Parallel()
	home, dir := t.TempDir(), t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, pubFile := filepath.Join(dir, "ec-key.pem"), filepath.Join(dir, "ec-pub.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "kbs.toml")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf("[admin]\nmode = \"jwt\"\npublic_keys = [%q]\n", pubFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	srv := startKbs(t, "http", filepath.Join(dir, "data"), hc, "--config", cfgFile, "--insecure-http")

	mint := func(name string, extra ...string) string {
		tok := wantOK(t, kbsCLI(t, home, "", append([]string{"admin-token", "--key", keyFile}, extra...)...))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	adminTok := mint("admin.tok")
	otherRole := mint("other.tok", "--role", "auditor")
	tok, _ := os.ReadFile(adminTok)
	hdr, err := base64.RawURLEncoding.DecodeString(strings.Split(strings.TrimSpace(string(tok)), ".")[0])
	if err != nil || !bytes.Contains(hdr, []byte(`"alg":"ES256"`)) {
		t.Fatalf("admin token header %s (%v), want alg ES256", hdr, err)
	}
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("ec-admin"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := func(tokFile string, args ...string) result {
		return kbsCLI(t, home, srv.url, append([]string{"--admin-token-file", tokFile}, args...)...)
	}
	wantFail(t, admin(otherRole, "set-resource", "--path", "ec/admin/key", "--file", secretFile), "AdminAuthAccess", `role "auditor" may not`)
	wantOK(t, admin(adminTok, "set-resource", "--path", "ec/admin/key", "--file", secretFile))
	if got := wantOK(t, admin(adminTok, "list-resources")); got != "ec/admin/key" {
		t.Fatalf("list-resources: %q", got)
	}
	wantOK(t, admin(adminTok, "set-reference-value", "svn", "2"))
	if got := wantOK(t, admin(adminTok, "get-reference-value", "svn")); got != `["2"]` {
		t.Fatalf("get-reference-value: %q", got)
	}
}

// earStatusOf returns submods.cpu0["ear.status"] of an EAR token.
func earStatusOf(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("%q is not a JWT", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Submods map[string]map[string]any `json:"submods"`
	}
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	s, _ := claims.Submods["cpu0"]["ear.status"].(string)
	return s
}

// The policy verbs on the real binary: set-resource-policy --policy-file
// installs the file's Rego (its deny reason is what a refused guest
// sees); set-attestation-policy --policy-file replaces the appraisal
// policy, so the same sample guest goes from affirming (released) to
// contraindicated (refused) and back; a policy that does not compile is
// refused and the one in force stays. get-reference-value takes --id or a
// positional ID.
func TestKbsPolicyVerbs(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	hc := &http.Client{Timeout: 10 * time.Second}
	url := startKbs(t, "http", filepath.Join(t.TempDir(), "data"), hc, "--dev", "--insecure-http").url
	write := func(name, content string) string {
		p := filepath.Join(home, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := []byte("policy-verbs")
	wantOK(t, kbsCLI(t, home, url, "set-resource", "--path", "pol/icy/verbs", "--file", write("secret", string(secret))))
	wantB64 := base64.StdEncoding.EncodeToString(secret)
	get := func() result {
		return kbsCLI(t, home, url, "get-resource", "--path", "pol/icy/verbs", "--tee", "sample")
	}
	attestStatus := func() string {
		return earStatusOf(t, wantOK(t, kbsCLI(t, home, url, "attest", "--tee", "sample")))
	}

	// Dev resource policy: released although the sample guest, with no
	// reference values registered, is contraindicated.
	if s := attestStatus(); s != "contraindicated" {
		t.Fatalf("ear.status without reference values: %q", s)
	}
	if got := wantOK(t, get()); got != wantB64 {
		t.Fatalf("dev policy: %q", got)
	}
	// A resource policy from a file: affirming TEEs only, with its own
	// deny reason.
	resourcePolicy := write("affirming-only.rego", `package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	input.submods.cpu0["ear.status"] == "affirming"
}

deny_reasons contains "policy-file: the TEE is not affirming" if not allow
`)
	wantOK(t, kbsCLI(t, home, url, "set-resource-policy", "--policy-file", resourcePolicy))
	wantFail(t, get(), "PolicyDeny", "policy-file: the TEE is not affirming")

	// Reference values that make the sample TEE affirming under the
	// default appraisal policy (as Trustee's integration tests).
	wantOK(t, kbsCLI(t, home, url, "set-reference-value", "svn", "1"))
	wantOK(t, kbsCLI(t, home, url, "set-reference-value", "launch_digest", "abcde"))
	wantOK(t, kbsCLI(t, home, url, "set-reference-value", "major_version", "1", "--as-integer", "--as-single-value"))
	wantOK(t, kbsCLI(t, home, url, "set-reference-value", "minimum_minor_version", "1", "--as-integer", "--as-single-value"))
	if got := wantOK(t, kbsCLI(t, home, url, "get-reference-value", "--id", "launch_digest")); got != `["abcde"]` {
		t.Fatalf("get-reference-value --id: %q", got)
	}
	if got := wantOK(t, kbsCLI(t, home, url, "get-reference-value", "launch_digest")); got != `["abcde"]` {
		t.Fatalf("get-reference-value ID: %q", got)
	}
	wantFail(t, kbsCLI(t, home, url, "get-reference-value", "--id", "svn", "svn"), "not both")
	wantFail(t, kbsCLI(t, home, url, "get-reference-value", "--id", "nope"), "404")
	if s := attestStatus(); s != "affirming" {
		t.Fatalf("ear.status with reference values: %q", s)
	}
	if got := wantOK(t, get()); got != wantB64 {
		t.Fatalf("affirming guest: %q", got)
	}

	// An appraisal policy that does not recognize any hardware: the same
	// guest is contraindicated and refused.
	contra := write("contraindicated.rego", `package policy

import rego.v1

# 97: the Verifier does not recognize the Attester's hardware.
trust_claims := {"hardware": 97, "executables": 3, "configuration": 2}
`)
	wantOK(t, kbsCLI(t, home, url, "set-attestation-policy", "--policy-file", contra))
	if s := attestStatus(); s != "contraindicated" {
		t.Fatalf("ear.status under the uploaded policy: %q", s)
	}
	wantFail(t, get(), "PolicyDeny", "policy-file: the TEE is not affirming")

	// A broken policy is refused; the uploaded one stays in force.
	wantFail(t, kbsCLI(t, home, url, "set-attestation-policy", "--policy-file", write("broken.rego", "package policy\ntrust_claims := {\n")), "ParsePolicyError")
	if s := attestStatus(); s != "contraindicated" {
		t.Fatalf("ear.status after a refused upload: %q", s)
	}

	// The built-in default uploaded again (explicit --id): released again.
	cpu, err := builtinpolicy.Text(builtinpolicy.DefaultCPU)
	if err != nil {
		t.Fatal(err)
	}
	wantOK(t, kbsCLI(t, home, url, "set-attestation-policy", "--id", "default_cpu", "--policy-file", write("default_cpu.rego", cpu)))
	if s := attestStatus(); s != "affirming" {
		t.Fatalf("ear.status under the default policy again: %q", s)
	}
	if got := wantOK(t, get()); got != wantB64 {
		t.Fatalf("after restoring the default appraisal policy: %q", got)
	}
}

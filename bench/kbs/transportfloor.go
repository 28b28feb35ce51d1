package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coffer-project/coffer/internal/kbs/protocol"
)

// The transport floors split the crypto floor's handshake between two
// processes as the real exchange does: the server's steps (nonce, verify,
// EAR signing, JWE encryption) in a child process, the client's (digest,
// evidence, decryption) in this one, with the three request/response round
// trips of a handshake over loopback TCP, and the same client counts as
// the cases. No sessions, cookies, policy, store or audit: what any relying
// party would pay on this machine for the crypto plus the transport.
//
//   - tcp: length-prefixed messages on one keep-alive connection per client
//     worker; JSON only where the protocol carries a key or a JWE.
//   - http: the same three steps as net/http handlers (HTTP/1.1 keep-alive,
//     the per-connection state in the connection's context), the clients
//     on the load generator's connTransport.
//
// They say how much of the crypto floor's rate is left for the KBS's own
// work once the handshake crosses two processes and the loopback.
const (
	transportTCP  = "tcp"
	transportHTTP = "http"
)

// Wire message kinds of the tcp floor, and its bound on a message.
const (
	wireAuth     = 'a'
	wireAttest   = 't'
	wireResource = 'r'
	wireError    = 'e' // the server's step failed; the body says why
	// wireMaxMsg bounds a message: the JWE of a -resource-size resource
	// (at most 1 MiB) is base64 in JSON, about 4/3 of it.
	wireMaxMsg = 4 << 20
)

// floorAttest is the attest step's message: the guest's key and evidence.
type floorAttest struct {
	Pub      protocol.TeePubKey `json:"pub"`
	Evidence json.RawMessage    `json:"evidence"`
}

// floorConn is the server's state of one connection (one client worker):
// its nonce and key, as a session would hold them.
type floorConn struct {
	nonce string
	pub   protocol.TeePubKey
	token string
}

// auth issues the nonce.
func (s *floorConn) auth() ([]byte, error) {
	var err error
	s.nonce, err = protocol.NewNonce()
	return []byte(s.nonce), err
}

// attest verifies the evidence against the digest of the nonce and the
// key, and returns the signed token.
func (s *floorConn) attest(ctx context.Context, k *floorKit, body []byte) ([]byte, error) {
	var m floorAttest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	s.pub = m.Pub
	claims, err := k.verify(ctx, s.nonce, s.pub, m.Evidence)
	if err != nil {
		return nil, err
	}
	s.token, err = k.signer.Sign(k.earClaims(claims, s.nonce, s.pub))
	return []byte(s.token), err
}

// resource encrypts the resource to the key, after checking the token as
// the crypto floor does with -floor-token-verify.
func (s *floorConn) resource(k *floorKit) ([]byte, error) {
	if err := k.checkToken(s.token); err != nil {
		return nil, err
	}
	resp, err := protocol.EncryptResponse(s.pub, k.resource)
	if err != nil {
		return nil, err
	}
	return json.Marshal(resp)
}

// floorClient is the client's side of one handshake, over exchange (one
// request/response round trip per step).
func (k *floorKit) floorClient(ctx context.Context, key *teeKey, exchange func(kind byte, body []byte) ([]byte, error)) error {
	if key == nil {
		var err error
		if key, err = newTeeKey(); err != nil {
			return err
		}
	}
	nonce, err := exchange(wireAuth, nil)
	if err != nil {
		return err
	}
	additional := ""
	digest, err := protocol.RuntimeDataDigest("sha384", string(nonce), key.pub, &additional)
	if err != nil {
		return err
	}
	ev, err := k.attester.Evidence(ctx, digest)
	if err != nil {
		return err
	}
	b, err := json.Marshal(floorAttest{Pub: key.pub, Evidence: ev})
	if err != nil {
		return err
	}
	if _, err := exchange(wireAttest, b); err != nil {
		return err
	}
	body, err := exchange(wireResource, nil)
	if err != nil {
		return err
	}
	var resp protocol.Response
	if err := json.Unmarshal(body, &resp); err != nil {
		return err
	}
	plain, err := protocol.DecryptResponse(key.priv, &resp)
	if err != nil {
		return err
	}
	if !bytes.Equal(plain, k.resource) {
		return errors.New("the transport floor's resource decrypted to other bytes")
	}
	return nil
}

func writeWire(w *bufio.Writer, kind byte, body []byte) error {
	var h [5]byte
	binary.BigEndian.PutUint32(h[:4], uint32(len(body)+1))
	h[4] = kind
	w.Write(h[:])
	w.Write(body)
	return w.Flush()
}

func readWire(r *bufio.Reader) (byte, []byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n < 1 || n > wireMaxMsg {
		return 0, nil, fmt.Errorf("wire message of %d bytes (1 to %d)", n, wireMaxMsg)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, err
	}
	return b[0], b[1:], nil
}

// serveTCPConn serves one connection of the tcp floor until it fails
// (io.EOF: the client closed it); it never returns nil.
func (k *floorKit) serveTCPConn(ctx context.Context, c net.Conn) error {
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	var s floorConn
	for {
		kind, body, err := readWire(br)
		if err != nil {
			return err
		}
		var out []byte
		switch kind {
		case wireAuth:
			out, err = s.auth()
		case wireAttest:
			out, err = s.attest(ctx, k, body)
		case wireResource:
			out, err = s.resource(k)
		default:
			err = fmt.Errorf("wire message kind %q", kind)
		}
		if err != nil {
			// Tell the client why, then give up on the connection.
			_ = writeWire(bw, wireError, []byte(err.Error()))
			return err
		}
		if err := writeWire(bw, kind, out); err != nil {
			return err
		}
	}
}

type floorConnKey struct{}

// floorHTTPHandler serves the http floor's three steps.
func (k *floorKit) floorHTTPHandler() http.Handler {
	step := func(f func(r *http.Request, s *floorConn, body []byte) ([]byte, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, wireMaxMsg))
			if err == nil {
				body, err = f(r, r.Context().Value(floorConnKey{}).(*floorConn), body)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("POST /auth", step(func(_ *http.Request, s *floorConn, _ []byte) ([]byte, error) { return s.auth() }))
	mux.Handle("POST /attest", step(func(r *http.Request, s *floorConn, b []byte) ([]byte, error) { return s.attest(r.Context(), k, b) }))
	mux.Handle("GET /resource", step(func(_ *http.Request, s *floorConn, _ []byte) ([]byte, error) { return s.resource(k) }))
	return mux
}

// transportFloorEnv set to "<mode>:<tee>[:verify]" makes the benchmark
// binary (or its test binary, see TestMain) a transport floor's server:
// the benchmark starts itself with it, hands it the loopback listener as
// file descriptor 3 and the resource on stdin, and kills it when done.
// verify: check each token before the resource step (-floor-token-verify).
const transportFloorEnv = "COFFER_BENCH_KBS_TRANSPORT_FLOOR"

// serveTransportFloor is the child process; it serves until killed.
func serveTransportFloor(spec string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "transport floor server: %v\n", err)
		return 1
	}
	parts := strings.Split(spec, ":")
	if len(parts) < 2 {
		return fail(fmt.Errorf("%s=%q: want <mode>:<tee>[:verify]", transportFloorEnv, spec))
	}
	resource, err := io.ReadAll(io.LimitReader(os.Stdin, wireMaxMsg))
	if err != nil {
		return fail(err)
	}
	k, err := newFloorKit(parts[1], nil, resource)
	if err != nil {
		return fail(err)
	}
	k.verifyToken = len(parts) > 2 && parts[2] == "verify"
	l, err := net.FileListener(os.NewFile(3, "transport floor listener"))
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	switch parts[0] {
	case transportHTTP:
		srv := &http.Server{Handler: k.floorHTTPHandler(), ReadHeaderTimeout: 10 * time.Second,
			ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
				return context.WithValue(ctx, floorConnKey{}, &floorConn{})
			}}
		return fail(srv.Serve(l))
	case transportTCP:
		for {
			c, err := l.Accept()
			if err != nil {
				return fail(err)
			}
			go func() {
				defer c.Close()
				// It serves until the connection fails: EOF when the
				// client hangs up.
				if err := k.serveTCPConn(ctx, c); !errors.Is(err, io.EOF) {
					fmt.Fprintf(os.Stderr, "transport floor server: %v\n", err)
				}
			}()
		}
	}
	return fail(fmt.Errorf("unknown transport %q", parts[0]))
}

// runTransportFloor runs one transport floor with n client workers for the
// warm-up plus dur, and returns it as a case (server = the child).
func runTransportFloor(ctx context.Context, k *floorKit, mode string, n int, warmup, dur time.Duration) (*caseResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// The listener is made here and handed to the child: its address is
	// known before the child starts, and no port can be taken meanwhile.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer l.Close()
	lf, err := l.(*net.TCPListener).File()
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	spec := mode + ":" + k.tee
	if k.verifyToken {
		spec += ":verify"
	}
	cmd := exec.CommandContext(cctx, self)
	cmd.Env = append(os.Environ(), transportFloorEnv+"="+spec)
	cmd.Stdin = bytes.NewReader(k.resource)
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{lf}
	// As the coffer-kbs child: its own process group, killed if the
	// benchmark dies (and by cctx's cancel when done).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the %s transport floor's server: %w", mode, err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	addr := l.Addr().String()
	var dials atomic.Int64
	res, err := measureWorkers(cctx, n, warmup, dur, func() (cpuTimes, error) { return procCPUTime(cmd.Process.Pid) }, &dials,
		func(winStart, winEnd time.Time, r *workerResult) {
			var key *teeKey // nil: a new one per handshake, as the floor does with -fresh-client
			if !k.freshKey {
				var err error
				if key, err = newTeeKey(); err != nil {
					r.fail(err)
					return
				}
			}
			exchange, release, err := k.floorExchange(cctx, mode, addr, &dials)
			if err != nil {
				r.fail(err)
				return
			}
			defer release()
			r.loop(cctx, winStart, winEnd, func() (int, error) { return 0, k.floorClient(cctx, key, exchange) })
		})
	if err != nil {
		return nil, err
	}
	res.TEE, res.Transport = k.tee, mode
	if res.Errors > 0 {
		return res, fmt.Errorf("the %s transport floor failed: %s", mode, res.ErrorSamples[0])
	}
	return res, nil
}

// floorExchange returns one client worker's round trip over mode.
func (k *floorKit) floorExchange(ctx context.Context, mode, addr string, dials *atomic.Int64) (func(byte, []byte) ([]byte, error), func(), error) {
	if mode == transportHTTP {
		t := newConnTransport(addr, dials)
		hc := &http.Client{Transport: t}
		paths := map[byte][2]string{wireAuth: {"POST", "/auth"}, wireAttest: {"POST", "/attest"}, wireResource: {"GET", "/resource"}}
		return func(kind byte, body []byte) ([]byte, error) {
			p := paths[kind]
			var rd io.Reader
			if p[0] == "POST" {
				rd = bytes.NewReader(body)
			}
			req, err := http.NewRequestWithContext(ctx, p[0], "http://"+addr+p[1], rd)
			if err != nil {
				return nil, err
			}
			if rd != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := hc.Do(req)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(io.LimitReader(resp.Body, wireMaxMsg))
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s %s: %s: %s", p[0], p[1], resp.Status, b)
			}
			return b, err
		}, t.Close, nil
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	dials.Add(1)
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	return func(kind byte, body []byte) ([]byte, error) {
		if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			return nil, err
		}
		if err := writeWire(bw, kind, body); err != nil {
			return nil, err
		}
		got, out, err := readWire(br)
		switch {
		case err != nil:
			return nil, err
		case got == wireError:
			return nil, fmt.Errorf("transport floor server: %s", out)
		case got != kind:
			return nil, fmt.Errorf("transport floor server answered message kind %q to %q", got, kind)
		}
		return out, nil
	}, func() { c.Close() }, nil
}

package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// connTransport is the load generator's lean HTTP/1.1 transport: one
// keep-alive connection used by one client worker at a time, requests
// written and responses read on the caller's goroutine. net/http's
// Transport (connection pool, a reader and a writer goroutine per
// connection, hand-offs between them) costs the clients, who share the
// CPUs with the server, noticeably more per request. The KBS client
// library and the requests it sends are unchanged.
type connTransport struct {
	addr    string
	dials   *atomic.Int64
	timeout time.Duration

	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	busy bool // a response body is still open
}

func newConnTransport(addr string, dials *atomic.Int64) *connTransport {
	return &connTransport{addr: addr, dials: dials, timeout: 30 * time.Second}
}

var errTransportBusy = errors.New("connTransport: a request was sent before the previous response body was closed (one request at a time)")

// RoundTrip implements http.RoundTripper.
func (t *connTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.busy {
		return nil, errTransportBusy
	}
	if t.conn == nil {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(req.Context(), "tcp", t.addr)
		if err != nil {
			return nil, err
		}
		t.dials.Add(1)
		t.conn, t.br, t.bw = c, bufio.NewReader(c), bufio.NewWriter(c)
	}
	if err := t.conn.SetDeadline(time.Now().Add(t.timeout)); err != nil {
		t.Close()
		return nil, err
	}
	if err := req.Write(t.bw); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.bw.Flush(); err != nil {
		t.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(t.br, req)
	if err != nil {
		t.Close()
		return nil, err
	}
	t.busy = true
	resp.Body = &connBody{ReadCloser: resp.Body, t: t, closeConn: resp.Close}
	return resp, nil
}

// Close drops the connection (the next request dials again).
func (t *connTransport) Close() {
	if t.conn != nil {
		t.conn.Close()
		t.conn = nil
	}
	t.busy = false
}

// connBody frees the connection for the next request when the body is
// closed, after reading what the caller left unread.
type connBody struct {
	io.ReadCloser
	t         *connTransport
	closeConn bool
	done      bool
}

func (b *connBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	_, err := io.Copy(io.Discard, b.ReadCloser)
	b.ReadCloser.Close()
	b.t.busy = false
	if err != nil || b.closeConn {
		b.t.Close()
	}
	return nil
}

// clientTransport returns the HTTP client one client worker uses and a
// function releasing its connections.
func (cfg *loadConfig) clientTransport(shared *http.Client, dials *atomic.Int64) (*http.Client, func()) {
	if cfg.netHTTP {
		return shared, func() {}
	}
	t := newConnTransport(cfg.addr, dials)
	return &http.Client{Transport: t}, t.Close // the connection deadline bounds each request
}

// sharedClient returns the net/http client the workers share with
// -client-net-http, or nil.
func (cfg *loadConfig) sharedClient(dials *atomic.Int64) (*http.Client, func()) {
	if !cfg.netHTTP {
		return nil, func() {}
	}
	hc, tr := newHTTPClient(cfg.clients, dials)
	return hc, tr.CloseIdleConnections
}

// hostPort returns the host:port of an http:// URL.
func hostPort(url string) string {
	return strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
}

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeAgent implements the stdio part of the agent API; any other method
// panics (nil embedded interface).
type fakeAgent struct {
	api.AgentService

	mu sync.Mutex
	// Output side: responses handed out in order, then outErr.
	stdout, stderr []*api.ReadStreamResponse
	outErr         error
	readReqs       []*api.ReadStreamRequest
	// Input side.
	maxWrite  int   // accept at most this many bytes per WriteStdin (0 = all)
	writeErr  error // returned by WriteStdin once writeFail calls succeeded
	writeFail int
	stdin     bytes.Buffer
	writes    int
	closed    int
	closeReq  *api.CloseStdinRequest
	writeReqs []string // "cid/exec"
	closeErr  error
}

func (f *fakeAgent) read(q *[]*api.ReadStreamResponse, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readReqs = append(f.readReqs, req)
	if len(*q) == 0 {
		if f.outErr != nil {
			return nil, f.outErr
		}
		return nil, errors.New("fake agent: read past the scripted responses")
	}
	r := (*q)[0]
	*q = (*q)[1:]
	return r, nil
}

func (f *fakeAgent) ReadStdout(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return f.read(&f.stdout, req)
}

func (f *fakeAgent) ReadStderr(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return f.read(&f.stderr, req)
}

func (f *fakeAgent) WriteStdin(ctx context.Context, req *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writeReqs = append(f.writeReqs, req.ContainerId+"/"+req.ExecId)
	if f.writeErr != nil && f.writes >= f.writeFail {
		return nil, f.writeErr
	}
	f.writes++
	n := len(req.Data)
	if f.maxWrite > 0 && n > f.maxWrite {
		n = f.maxWrite
	}
	f.stdin.Write(req.Data[:n])
	return &api.WriteStdinResponse{Len: uint32(n)}, nil
}

func (f *fakeAgent) CloseStdin(ctx context.Context, req *api.CloseStdinRequest) (*api.Empty, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	f.closeReq = req
	if f.closeErr != nil {
		return nil, f.closeErr
	}
	return &api.Empty{}, nil
}

func chunk(s string, eof bool) *api.ReadStreamResponse {
	var d []byte
	if s != "" {
		d = []byte(s)
	}
	return &api.ReadStreamResponse{Data: d, Eof: eof}
}

func stdioCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCopyOutput(t *testing.T) {
	ctx := stdioCtx(t)
	f := &fakeAgent{
		stdout: []*api.ReadStreamResponse{chunk("hello ", false), chunk("", false), chunk("world", false), chunk("!\n", true)},
		stderr: []*api.ReadStreamResponse{chunk("oops", false), chunk("", true)},
	}
	var out, errOut bytes.Buffer
	if err := CopyOutput(ctx, f, "c1", "", false, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "hello world!\n" {
		t.Fatalf("stdout = %q", out.String())
	}
	if err := CopyOutput(ctx, f, "c1", "e1", true, &errOut); err != nil {
		t.Fatal(err)
	}
	if errOut.String() != "oops" {
		t.Fatalf("stderr = %q", errOut.String())
	}
	if len(f.stdout) != 0 || len(f.stderr) != 0 {
		t.Fatalf("unread responses: %d stdout, %d stderr", len(f.stdout), len(f.stderr))
	}
	for i, r := range f.readReqs {
		wantExec := ""
		if i >= 4 {
			wantExec = "e1"
		}
		if r.ContainerId != "c1" || r.ExecId != wantExec || r.Len != 64<<10 {
			t.Fatalf("request %d = %+v", i, r)
		}
	}
	if len(f.readReqs) != 6 {
		t.Fatalf("%d read requests, want 6 (stops at EOF)", len(f.readReqs))
	}
}

func TestCopyOutputErrors(t *testing.T) {
	ctx := stdioCtx(t)
	rpcErr := status.Error(codes.NotFound, `exec "e1" not found`)
	f := &fakeAgent{stdout: []*api.ReadStreamResponse{chunk("part", false)}, outErr: rpcErr}
	var out bytes.Buffer
	err := CopyOutput(ctx, f, "c1", "e1", false, &out)
	if !errors.Is(err, rpcErr) || !strings.Contains(err.Error(), "read output of exec e1 in container c1") {
		t.Fatalf("CopyOutput error = %v", err)
	}
	if out.String() != "part" {
		t.Fatalf("output before the error = %q", out.String())
	}
	f = &fakeAgent{stderr: nil, outErr: io.ErrUnexpectedEOF}
	err = CopyOutput(ctx, f, "c2", "", true, &out)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "read output of container c2") {
		t.Fatalf("CopyOutput error = %v", err)
	}

	// A failing writer stops the copy with its error, unwrapped.
	wErr := errors.New("disk full")
	f = &fakeAgent{stdout: []*api.ReadStreamResponse{chunk("a", false), chunk("b", true)}}
	err = CopyOutput(ctx, f, "c1", "", false, failWriter{wErr})
	if err != wErr || len(f.stdout) != 1 {
		t.Fatalf("CopyOutput with a failing writer = %v (left %d responses)", err, len(f.stdout))
	}
}

type failWriter struct{ err error }

func (w failWriter) Write(p []byte) (int, error) { return 0, w.err }

func TestCopyInput(t *testing.T) {
	ctx := stdioCtx(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 10<<10) // 160 KiB: several 32 KiB reads
	f := &fakeAgent{}
	if err := CopyInput(ctx, f, "c1", "e1", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.stdin.Bytes(), data) {
		t.Fatalf("agent got %d bytes, want %d", f.stdin.Len(), len(data))
	}
	if f.closed != 1 || f.closeReq.ContainerId != "c1" || f.closeReq.ExecId != "e1" {
		t.Fatalf("CloseStdin calls = %d (%+v), want 1 for c1/e1", f.closed, f.closeReq)
	}
	for _, r := range f.writeReqs {
		if r != "c1/e1" {
			t.Fatalf("WriteStdin for %s", r)
		}
	}
}

func TestCopyInputShortWrites(t *testing.T) {
	ctx := stdioCtx(t)
	f := &fakeAgent{maxWrite: 3}
	// One byte at a time reads and a reader that returns data with EOF.
	in := io.MultiReader(iotest.OneByteReader(strings.NewReader("ab")), iotest.DataErrReader(strings.NewReader("cdefghijk")))
	if err := CopyInput(ctx, f, "c1", "", in); err != nil {
		t.Fatal(err)
	}
	if got := f.stdin.String(); got != "abcdefghijk" {
		t.Fatalf("agent got %q", got)
	}
	// 2 one-byte writes, then 9 bytes in 3-byte pieces.
	if f.writes != 5 || f.closed != 1 {
		t.Fatalf("writes = %d, closes = %d; want 5 and 1", f.writes, f.closed)
	}
}

func TestCopyInputEmpty(t *testing.T) {
	f := &fakeAgent{}
	if err := CopyInput(stdioCtx(t), f, "c1", "", strings.NewReader("")); err != nil {
		t.Fatal(err)
	}
	if f.writes != 0 || len(f.writeReqs) != 0 || f.closed != 1 {
		t.Fatalf("writes %d, closes %d; want 0 and 1", f.writes, f.closed)
	}
}

func TestCopyInputErrors(t *testing.T) {
	ctx := stdioCtx(t)
	// A read error other than EOF is returned as is; stdin stays open.
	rErr := errors.New("terminal gone")
	f := &fakeAgent{}
	err := CopyInput(ctx, f, "c1", "", io.MultiReader(strings.NewReader("x"), iotest.ErrReader(rErr)))
	if err != rErr || f.closed != 0 || f.stdin.String() != "x" {
		t.Fatalf("CopyInput with a failing reader = %v (closed %d, got %q)", err, f.closed, f.stdin.String())
	}
	// A WriteStdin error is wrapped with the process name; stdin is not closed.
	wErr := status.Error(codes.FailedPrecondition, "stdin of c1/e1 is closed")
	f = &fakeAgent{writeErr: wErr, writeFail: 1}
	err = CopyInput(ctx, f, "c1", "e1", strings.NewReader(strings.Repeat("y", 40<<10)))
	if !errors.Is(err, wErr) || !strings.Contains(err.Error(), "write stdin of exec e1 in container c1") || f.closed != 0 {
		t.Fatalf("CopyInput with a failing agent = %v (closed %d)", err, f.closed)
	}
	// A CloseStdin error is returned.
	cErr := errors.New("closing failed")
	f = &fakeAgent{closeErr: cErr}
	if err := CopyInput(ctx, f, "c1", "", strings.NewReader("z")); err != cErr {
		t.Fatalf("CopyInput with a failing CloseStdin = %v", err)
	}
}

// badLenAgent reports more bytes written than it was sent, or none.
type badLenAgent struct {
	api.AgentService
	n     uint32
	calls int
}

func (a *badLenAgent) WriteStdin(ctx context.Context, req *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	a.calls++
	if a.calls > 1000 {
		return nil, errors.New("fake agent: CopyInput loops on a zero-length write")
	}
	return &api.WriteStdinResponse{Len: a.n}, nil
}

func (a *badLenAgent) CloseStdin(ctx context.Context, req *api.CloseStdinRequest) (*api.Empty, error) {
	return &api.Empty{}, nil
}

// TestCopyInputBadAgentLength: the guest agent is not trusted by the host,
// yet a WriteStdin reply with Len > len(Data) panics CopyInput (slice out
// of range) and Len == 0 makes it call WriteStdin forever.
func TestCopyInputBadAgentLength(t *testing.T) {
	for _, n := range []uint32{0, 100} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("Len %d: CopyInput panicked: %v", n, r)
				}
			}()
			a := &badLenAgent{n: n}
			err := CopyInput(stdioCtx(t), a, "c1", "", strings.NewReader("abc"))
			if err == nil || a.calls > 1 {
				t.Errorf("Len %d: CopyInput = %v after %d WriteStdin calls, want an error after 1", n, err, a.calls)
			}
		}()
	}
}

func TestAgentError(t *testing.T) {
	if AgentError(nil) != nil {
		t.Fatal("AgentError(nil) != nil")
	}
	rpc := status.Error(codes.FailedPrecondition, `container "c1" is running: stop it first`)
	err := AgentError(rpc)
	if err.Error() != `container "c1" is running: stop it first` {
		t.Fatalf("AgentError message = %q", err.Error())
	}
	if !errors.Is(err, rpc) || errors.Unwrap(err) != rpc || status.Code(errors.Unwrap(err)) != codes.FailedPrecondition {
		t.Fatalf("AgentError does not unwrap to the RPC error: %v", errors.Unwrap(err))
	}
	plain := errors.New("connection reset")
	if AgentError(plain) != plain {
		t.Fatal("AgentError changed a non-RPC error")
	}
	// A wrapped RPC error still unwraps to it (grpc then keeps the full
	// text, "rpc error: code = ..." included: callers pass RPC errors
	// directly).
	if wrapped := AgentError(fmt.Errorf("start container: %w", rpc)); !errors.Is(wrapped, rpc) {
		t.Fatalf("AgentError(wrapped) = %v, does not unwrap to the RPC error", wrapped)
	}
}

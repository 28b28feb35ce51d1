package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pumpPipe starts s.pump on the read end of a new pipe and returns the
// write end; done is closed when pump returns.
func pumpPipe(t *testing.T, s *outStream) (w *os.File, done chan struct{}) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() {
		s.pump(r)
		r.Close()
		close(done)
	}()
	t.Cleanup(func() {
		w.Close()
		<-done
	})
	return w, done
}

// readAll reads s until EOF.
func readAll(t *testing.T, ctx context.Context, s *outStream, max int) []byte {
	t.Helper()
	var out []byte
	for {
		b, eof, err := s.read(ctx, max)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if eof {
			if len(b) != 0 {
				t.Fatalf("read returned data %q with eof", b)
			}
			return out
		}
		if len(b) == 0 {
			t.Fatal("read returned no data and no eof")
		}
		if max > 0 && max <= streamBufMax && len(b) > max {
			t.Fatalf("read returned %d bytes, more than max %d", len(b), max)
		}
		out = append(out, b...)
	}
}

func TestOutStreamInOrderThenEOF(t *testing.T) {
	ctx := testCtx(t)
	s := newOutStream()
	w, done := pumpPipe(t, s)
	want := make([]byte, 300<<10)
	for i := range want {
		want[i] = byte(i % 251)
	}
	go func() {
		// Many small writes and a few large ones.
		for off := 0; off < len(want); {
			n := min(len(want)-off, 1+off%70000)
			if _, err := w.Write(want[off : off+n]); err != nil {
				return
			}
			off += n
		}
		w.Close()
	}()
	got := readAll(t, ctx, s, 4096)
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d in order (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
	<-done
	// EOF is sticky.
	for i := 0; i < 2; i++ {
		b, eof, err := s.read(ctx, 10)
		if b != nil || !eof || err != nil {
			t.Fatalf("read after EOF = %q, %v, %v", b, eof, err)
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestOutStreamReadBlocksUntilData(t *testing.T) {
	ctx := testCtx(t)
	s := newOutStream()
	w, _ := pumpPipe(t, s)
	type result struct {
		b   []byte
		eof bool
		err error
	}
	res := make(chan result, 1)
	go func() {
		b, eof, err := s.read(ctx, 0)
		res <- result{b, eof, err}
	}()
	select {
	case r := <-res:
		t.Fatalf("read returned before any data: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if string(r.b) != "hello" || r.eof || r.err != nil {
			t.Fatalf("read = %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not return after data arrived")
	}
	// A blocked read also wakes up at EOF.
	go func() {
		b, eof, err := s.read(ctx, 0)
		res <- result{b, eof, err}
	}()
	time.Sleep(20 * time.Millisecond)
	w.Close()
	select {
	case r := <-res:
		if r.b != nil || !r.eof || r.err != nil {
			t.Fatalf("read at EOF = %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not return at EOF")
	}
}

func TestOutStreamMaxBytes(t *testing.T) {
	ctx := testCtx(t)
	s := newOutStream()
	s.buf = bytes.Repeat([]byte("a"), 400<<10)
	s.eof = true
	for _, tt := range []struct{ max, want int }{
		{1, 1}, {10, 10}, {0, 64 << 10}, {-5, 64 << 10}, {streamBufMax + 1, 64 << 10}, {100 << 10, 100 << 10},
	} {
		b, eof, err := s.read(ctx, tt.max)
		if err != nil || eof || len(b) != tt.want {
			t.Fatalf("read(max %d) = %d bytes, %v, %v; want %d", tt.max, len(b), eof, err, tt.want)
		}
	}
	// A read returns what there is when that is less than max.
	const left = 400<<10 - 1 - 10 - 3*64<<10 - 100<<10
	b, eof, err := s.read(ctx, streamBufMax)
	if err != nil || eof || len(b) != left {
		t.Fatalf("last read = %d bytes, %v, %v; want %d", len(b), eof, err, left)
	}
	if b, eof, err := s.read(ctx, 1); b != nil || !eof || err != nil {
		t.Fatalf("read at the end = %q, %v, %v; want EOF", b, eof, err)
	}
}

func TestOutStreamContextCanceled(t *testing.T) {
	s := newOutStream()
	_, _ = pumpPipe(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	b, eof, err := s.read(ctx, 0)
	if !errors.Is(err, context.Canceled) || b != nil || eof {
		t.Fatalf("read with canceled ctx = %q, %v, %v; want context.Canceled", b, eof, err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := s.read(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read past deadline = %v, want DeadlineExceeded", err)
	}
}

func TestOutStreamDataBeforeCanceledContext(t *testing.T) {
	// Buffered data is returned even if ctx is already done.
	s := newOutStream()
	s.buf = []byte("x")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b, eof, err := s.read(ctx, 0)
	if string(b) != "x" || eof || err != nil {
		t.Fatalf("read = %q, %v, %v", b, eof, err)
	}
}

func TestOutStreamBackPressure(t *testing.T) {
	ctx := testCtx(t)
	s := newOutStream()
	w, done := pumpPipe(t, s)
	const total = 3 * streamBufMax
	want := make([]byte, total)
	for i := range want {
		want[i] = byte(i * 7)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := w.Write(want)
		w.Close()
		wrote <- err
	}()
	// Let pump fill the buffer; it must stop near streamBufMax (one pipe
	// read of up to 32 KiB can go past it) and the writer must block.
	deadline := time.Now().Add(5 * time.Second)
	var n int
	for {
		s.mu.Lock()
		n = len(s.buf)
		s.mu.Unlock()
		if n >= streamBufMax || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // give pump a chance to overrun
	s.mu.Lock()
	n = len(s.buf)
	s.mu.Unlock()
	if n < streamBufMax || n >= streamBufMax+32<<10 {
		t.Fatalf("buffered %d bytes, want [%d, %d)", n, streamBufMax, streamBufMax+32<<10)
	}
	select {
	case err := <-wrote:
		t.Fatalf("writer finished (%v) although nobody read: no back-pressure", err)
	default:
	}
	// Reading drains the buffer and unblocks pump and the writer.
	got := readAll(t, ctx, s, 0)
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d in order (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	<-done
}

// errReader returns data, then err.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) > 0 {
		n := copy(p, r.data)
		r.data = r.data[n:]
		return n, nil
	}
	return 0, r.err
}

func TestOutStreamEndsOnAnyError(t *testing.T) {
	ctx := testCtx(t)
	// A pty master returns EIO when the last slave closes; other errors end
	// the stream too. Data read before the error is kept.
	for _, e := range []error{io.EOF, unix.EIO, os.ErrClosed, errors.New("boom")} {
		s := newOutStream()
		s.pump(&errReader{data: []byte("tail"), err: e})
		if got := readAll(t, ctx, s, 0); string(got) != "tail" {
			t.Fatalf("after %v: read %q, want tail then EOF", e, got)
		}
	}
}

func TestClosedStream(t *testing.T) {
	b, eof, err := closedStream().read(testCtx(t), 0)
	if b != nil || !eof || err != nil {
		t.Fatalf("closedStream read = %q, %v, %v", b, eof, err)
	}
}

// An exec is pruned (to make room for new ones) only once its exit was
// reported and its output read to the end, or long after its exit.
func TestExecPrunable(t *testing.T) {
	ctx := testCtx(t)
	out := newOutStream()
	w, done := pumpPipe(t, out)
	if _, err := w.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	<-done
	p := &process{execID: "e", stdout: out, stderr: closedStream()}
	now := time.Now()
	if p.prunable(now) {
		t.Fatal("an exec whose exit was not reported is prunable")
	}
	p.waited, p.waitAt = true, now
	if p.prunable(now) {
		t.Fatal("an exec with unread output is prunable")
	}
	if !p.prunable(now.Add(pruneAfter + time.Second)) {
		t.Fatal("an exec whose output nobody read for a long time is not prunable")
	}
	if b := readAll(t, ctx, out, 100); string(b) != "tail" {
		t.Fatalf("read %q", b)
	}
	if !p.prunable(now) {
		t.Fatal("a reported, fully read exec is not prunable")
	}
}

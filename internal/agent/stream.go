package agent

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// streamBufMax bounds what one output stream buffers in the guest before
// the process blocks on its write (back-pressure instead of growth).
const streamBufMax = 1 << 20

// outStream buffers one output stream of a process (stdout, stderr or a
// pty master) until the host reads it.
type outStream struct {
	mu      sync.Mutex
	buf     []byte
	eof     bool
	dropped bool          // nobody will read any more: discard instead of buffering
	changed chan struct{} // closed and replaced on every change
}

func newOutStream() *outStream {
	return &outStream{changed: make(chan struct{})}
}

// closedStream is an output stream that has already ended (stderr of a
// terminal process).
func closedStream() *outStream {
	s := newOutStream()
	s.eof = true
	return s
}

// drained reports whether the stream has ended and all of it was read
// (a nil stream counts as drained).
func (s *outStream) drained() bool {
	if s == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eof && len(s.buf) == 0
}

func (s *outStream) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// pump copies r into the buffer until EOF or error, then marks the end.
// A pty master returns EIO once the last slave is closed: that is EOF too.
func (s *outStream) pump(r io.Reader) {
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		if n > 0 {
			s.mu.Lock()
			for len(s.buf) >= streamBufMax && !s.dropped {
				wait := s.changed
				s.mu.Unlock()
				<-wait
				s.mu.Lock()
			}
			if !s.dropped {
				s.buf = append(s.buf, chunk[:n]...)
			}
			s.notifyLocked()
			s.mu.Unlock()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, unix.EIO) && !errors.Is(err, os.ErrClosed) {
				_ = err // the stream ends either way
			}
			s.mu.Lock()
			s.eof = true
			s.notifyLocked()
			s.mu.Unlock()
			return
		}
	}
}

// read returns up to max bytes, blocking until data is available, the
// stream ends (eof=true with no data) or ctx is done.
func (s *outStream) read(ctx context.Context, max int) ([]byte, bool, error) {
	if max <= 0 || max > streamBufMax {
		max = 64 << 10
	}
	for {
		s.mu.Lock()
		if len(s.buf) > 0 {
			n := min(max, len(s.buf))
			out := make([]byte, n)
			copy(out, s.buf)
			s.buf = s.buf[n:]
			if len(s.buf) == 0 {
				s.buf = nil
			}
			s.notifyLocked()
			s.mu.Unlock()
			return out, false, nil
		}
		if s.eof {
			s.mu.Unlock()
			return nil, true, nil
		}
		wait := s.changed
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// discard releases the buffer and makes the pump drop further output (it
// keeps draining the pipe so the writer never blocks): for processes
// nobody will read from any more.
func (s *outStream) discard() {
	s.mu.Lock()
	s.dropped = true
	s.buf = nil
	s.notifyLocked()
	s.mu.Unlock()
}

package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// QMPError is an error answer from QEMU to a QMP command.
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// errQMPClosed is returned for commands on a connection QEMU has closed.
var errQMPClosed = errors.New("qmp connection closed (qemu has exited or is exiting)")

// qmpMessage is any message QEMU sends: greeting, response or event.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID    *uint64         `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

type qmpResult struct {
	ret json.RawMessage
	err error
}

// qmpClient is a QMP connection: one reader goroutine routes responses to
// waiting callers by id and hands events to onEvent.
type qmpClient struct {
	conn    net.Conn
	onEvent func(name string, data json.RawMessage)

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan qmpResult
	err     error // set once the reader stopped

	readerDone chan struct{}
}

// dialQMP connects to the QMP socket at path, reads the greeting and
// negotiates capabilities, all within ctx.
func dialQMP(ctx context.Context, path string, onEvent func(string, json.RawMessage)) (*qmpClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	dec := json.NewDecoder(conn)
	var greet qmpMessage
	if err := dec.Decode(&greet); err != nil {
		conn.Close()
		return nil, fmt.Errorf("read qmp greeting: %w", err)
	}
	if greet.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting has no QMP member: is %s a QMP socket?", path)
	}
	if _, err := io.WriteString(conn, `{"execute":"qmp_capabilities"}`+"\n"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send qmp_capabilities: %w", err)
	}
	for {
		var m qmpMessage
		if err := dec.Decode(&m); err != nil {
			conn.Close()
			return nil, fmt.Errorf("read qmp_capabilities answer: %w", err)
		}
		if m.Event != "" {
			continue
		}
		if m.Error != nil {
			conn.Close()
			return nil, &QMPError{Command: "qmp_capabilities", Class: m.Error.Class, Desc: m.Error.Desc}
		}
		break
	}
	if ctx.Err() != nil {
		conn.Close()
		return nil, ctx.Err()
	}
	conn.SetDeadline(time.Time{})
	c := &qmpClient{
		conn:       conn,
		onEvent:    onEvent,
		pending:    map[uint64]chan qmpResult{},
		readerDone: make(chan struct{}),
	}
	go c.read(io.MultiReader(dec.Buffered(), conn))
	return c, nil
}

func (c *qmpClient) read(r io.Reader) {
	dec := json.NewDecoder(r)
	var err error
	for {
		var m qmpMessage
		if err = dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.Event != "":
			if c.onEvent != nil {
				c.onEvent(m.Event, m.Data)
			}
		case m.ID != nil:
			c.mu.Lock()
			ch := c.pending[*m.ID]
			delete(c.pending, *m.ID)
			c.mu.Unlock()
			if ch == nil {
				continue // caller gave up
			}
			if m.Error != nil {
				ch <- qmpResult{err: &QMPError{Class: m.Error.Class, Desc: m.Error.Desc}}
			} else {
				ch <- qmpResult{ret: m.Return}
			}
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = errQMPClosed
	} else {
		err = fmt.Errorf("%w: %v", errQMPClosed, err)
	}
	c.mu.Lock()
	c.err = err
	for id, ch := range c.pending {
		ch <- qmpResult{err: err}
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.readerDone)
}

// execute runs one command and waits for its answer or ctx.
func (c *qmpClient) execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		raw, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("qmp %s: encode arguments: %w", cmd, err)
		}
		if !bytes.Equal(raw, []byte("null")) {
			req["arguments"] = json.RawMessage(raw)
		}
	}
	ch := make(chan qmpResult, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", cmd, c.err)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}
	req["id"] = id
	line, err := json.Marshal(req)
	if err != nil {
		forget()
		return nil, fmt.Errorf("qmp %s: encode request: %w", cmd, err)
	}
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	_, err = c.conn.Write(append(line, '\n'))
	c.conn.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	if err != nil {
		forget()
		return nil, fmt.Errorf("qmp %s: send: %w", cmd, err)
	}
	select {
	case res := <-ch:
		var qe *QMPError
		if errors.As(res.err, &qe) {
			qe.Command = cmd
			return nil, qe
		}
		if res.err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, res.err)
		}
		return res.ret, nil
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("qmp %s: no answer: %w", cmd, ctx.Err())
	}
}

// close ends the connection; the reader stops.
func (c *qmpClient) close() error { return c.conn.Close() }

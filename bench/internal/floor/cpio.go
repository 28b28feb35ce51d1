package floor

import (
	"fmt"
	"io"
	"strings"
)

// newc ("070701") cpio archive writer, just enough for a tiny initrd:
// directories, character devices and regular files.

const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChar = 0o020000
)

type cpioEntry struct {
	name         string
	mode         uint32 // type and permission bits
	rdevMajor    uint32
	rdevMinor    uint32
	data         []byte
	inode, nlink uint32
}

// writeCPIO writes entries (parents first) and the trailer to w.
func writeCPIO(w io.Writer, entries []cpioEntry) error {
	cw := &countWriter{w: w}
	for i, e := range entries {
		if e.name == "" || strings.HasPrefix(e.name, "/") {
			return fmt.Errorf("cpio entry %q: names must be relative and not empty", e.name)
		}
		e.inode = uint32(i + 1)
		e.nlink = 1
		if e.mode&modeDir != 0 {
			e.nlink = 2
		}
		if err := writeCPIOEntry(cw, e); err != nil {
			return err
		}
	}
	return writeCPIOEntry(cw, cpioEntry{name: "TRAILER!!!", nlink: 1})
}

func writeCPIOEntry(cw *countWriter, e cpioEntry) error {
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		e.inode, e.mode, 0, 0, e.nlink, 0, len(e.data), 0, 0, e.rdevMajor, e.rdevMinor, len(e.name)+1, 0)
	if _, err := io.WriteString(cw, hdr+e.name+"\x00"); err != nil {
		return err
	}
	if err := cw.pad4(); err != nil {
		return err
	}
	if _, err := cw.Write(e.data); err != nil {
		return err
	}
	return cw.pad4()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countWriter) pad4() error {
	if r := c.n % 4; r != 0 {
		_, err := c.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

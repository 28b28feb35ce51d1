package guest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// newc ("SVR4 without CRC") cpio format, the format the Linux kernel unpacks
// into its initramfs. Every entry is a 110-byte ASCII header (magic + 13
// eight-digit hex fields), the NUL-terminated name padded so that header+name
// is a multiple of 4, then the data padded to a multiple of 4. The archive
// ends with an entry named "TRAILER!!!".

const (
	cpioMagic      = "070701"
	cpioHeaderSize = 110
	cpioTrailer    = "TRAILER!!!"
	cpioBlockSize  = 512 // the archive end is padded to this, as GNU cpio does

	// Unix file type bits, as stored in the newc mode field.
	cpioTypeDir  = 0o040000
	cpioTypeReg  = 0o100000
	cpioTypeChar = 0o020000

	cpioMaxField = 0xFFFFFFFF
)

// cpioWriter writes a reproducible newc archive. It is deliberately strict so
// that reproducibility holds by construction rather than by convention:
//   - names must be written in strictly increasing byte order (which also
//     puts every directory before its contents);
//   - every parent directory must have been written explicitly first;
//   - uid/gid are always 0, mtime is the single value given at creation, and
//     inode numbers are assigned 1, 2, 3, ... in write order.
//
// Names are stored relative to the archive root, without a leading "/".
type cpioWriter struct {
	w       *bufio.Writer
	n       int64 // bytes written so far, for alignment
	mtime   uint32
	nextIno uint32
	last    string
	dirs    map[string]bool
	closed  bool
	err     error // sticky write error
}

// newCPIOWriter returns a writer that stamps every entry with mtime (seconds
// since the epoch; 0 unless SOURCE_DATE_EPOCH says otherwise).
func newCPIOWriter(w io.Writer, mtime int64) (*cpioWriter, error) {
	if mtime < 0 || mtime > cpioMaxField {
		return nil, fmt.Errorf("cpio: mtime %d does not fit the newc format (0..%d)", mtime, int64(cpioMaxField))
	}
	return &cpioWriter{
		w:       bufio.NewWriterSize(w, 64<<10),
		mtime:   uint32(mtime),
		nextIno: 1,
		dirs:    map[string]bool{"": true},
	}, nil
}

// cleanArchiveName turns "/dev/console" or "dev/console" into "dev/console"
// and rejects names that would escape the archive root or are not canonical.
func cleanArchiveName(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	if n == "" || n == "." {
		return "", fmt.Errorf("cpio: empty entry name %q", name)
	}
	if path.Clean(n) != n {
		return "", fmt.Errorf("cpio: entry name %q is not canonical (want %q)", name, path.Clean(n))
	}
	if n == ".." || strings.HasPrefix(n, "../") {
		return "", fmt.Errorf("cpio: entry name %q escapes the archive root", name)
	}
	if strings.ContainsRune(n, 0) {
		return "", fmt.Errorf("cpio: entry name %q contains a NUL byte", name)
	}
	return n, nil
}

// begin validates name against the ordering and parent rules.
func (c *cpioWriter) begin(name string) (string, error) {
	if c.closed {
		return "", errors.New("cpio: write after Close")
	}
	if c.err != nil {
		return "", c.err
	}
	n, err := cleanArchiveName(name)
	if err != nil {
		return "", err
	}
	if c.last != "" && n <= c.last {
		return "", fmt.Errorf("cpio: entry %q written after %q: entries must be unique and sorted by name", n, c.last)
	}
	parent := path.Dir(n)
	if parent == "." {
		parent = ""
	}
	if !c.dirs[parent] {
		return "", fmt.Errorf("cpio: entry %q written before its parent directory %q", n, parent)
	}
	return n, nil
}

type cpioHeader struct {
	name      string
	mode      uint32 // type bits | permission bits
	nlink     uint32
	size      int64
	rdevMajor uint32
	rdevMinor uint32
	ino       uint32
	zeroMtime bool // the trailer carries mtime 0, as GNU cpio writes it
}

func (c *cpioWriter) writeHeader(h cpioHeader) error {
	if h.size < 0 || h.size > cpioMaxField {
		return fmt.Errorf("cpio: %q is %d bytes; newc entries are limited to 4 GiB", h.name, h.size)
	}
	mtime := c.mtime
	if h.zeroMtime {
		mtime = 0
	}
	fields := [13]uint32{
		h.ino,
		h.mode,
		0, // uid
		0, // gid
		h.nlink,
		mtime,
		uint32(h.size),
		0, // devmajor (of the filesystem holding the file)
		0, // devminor
		h.rdevMajor,
		h.rdevMinor,
		uint32(len(h.name) + 1), // namesize, including the NUL
		0,                       // check (only used by the "070702" CRC format)
	}
	var buf [cpioHeaderSize]byte
	copy(buf[:], cpioMagic)
	const hexdigits = "0123456789abcdef"
	for i, v := range fields {
		off := 6 + 8*i
		for j := 7; j >= 0; j-- {
			buf[off+j] = hexdigits[v&0xf]
			v >>= 4
		}
	}
	if err := c.write(buf[:]); err != nil {
		return err
	}
	if err := c.write(append([]byte(h.name), 0)); err != nil {
		return err
	}
	return c.pad(4)
}

func (c *cpioWriter) write(p []byte) error {
	if c.err != nil {
		return c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		c.err = fmt.Errorf("cpio: write: %w", err)
	}
	return c.err
}

var zeros [cpioBlockSize]byte

func (c *cpioWriter) pad(align int64) error {
	if r := c.n % align; r != 0 {
		return c.write(zeros[:align-r])
	}
	return nil
}

func (c *cpioWriter) ino() uint32 {
	i := c.nextIno
	c.nextIno++
	return i
}

// Dir writes a directory entry with the given permission bits (e.g. 0o755,
// 0o1777).
func (c *cpioWriter) Dir(name string, perm uint32) error {
	n, err := c.begin(name)
	if err != nil {
		return err
	}
	if err := c.writeHeader(cpioHeader{name: n, mode: cpioTypeDir | perm&0o7777, nlink: 2, ino: c.ino()}); err != nil {
		return err
	}
	c.dirs[n] = true
	c.last = n
	return nil
}

// File writes a regular file of exactly size bytes read from r.
func (c *cpioWriter) File(name string, perm uint32, size int64, r io.Reader) error {
	n, err := c.begin(name)
	if err != nil {
		return err
	}
	if err := c.writeHeader(cpioHeader{name: n, mode: cpioTypeReg | perm&0o7777, nlink: 1, size: size, ino: c.ino()}); err != nil {
		return err
	}
	copied, err := io.Copy(c.w, io.LimitReader(r, size))
	c.n += copied
	if err != nil {
		c.err = fmt.Errorf("cpio: writing %q: %w", n, err)
		return c.err
	}
	if copied != size {
		c.err = fmt.Errorf("cpio: %q: source ended after %d of %d bytes (file changed while building?)", n, copied, size)
		return c.err
	}
	c.last = n
	return c.pad(4)
}

// CharDev writes a character device node.
func (c *cpioWriter) CharDev(name string, perm uint32, major, minor uint32) error {
	n, err := c.begin(name)
	if err != nil {
		return err
	}
	if err := c.writeHeader(cpioHeader{name: n, mode: cpioTypeChar | perm&0o7777, nlink: 1, rdevMajor: major, rdevMinor: minor, ino: c.ino()}); err != nil {
		return err
	}
	c.last = n
	return nil
}

// Close writes the trailer, pads the archive to a 512-byte boundary and
// flushes. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	if c.err != nil {
		return c.err
	}
	if err := c.writeHeader(cpioHeader{name: cpioTrailer, nlink: 1, zeroMtime: true}); err != nil {
		return err
	}
	if err := c.pad(cpioBlockSize); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("cpio: flush: %w", err)
	}
	return nil
}

package myengine

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"path"
	"strings"
)

// The xbstream format, as mariadb-backup (and xtrabackup) write it with
// --stream=xbstream: a sequence of chunks, each
//
//	magic "XBSTCK01" | flags u8 | type u8 | path length u32 | path
//
// followed, for a payload chunk (type 'P'), by
//
//	payload length u64 | file offset u64 | CRC-32 (IEEE) of the payload u32 | payload
//
// and nothing more for an end-of-file chunk (type 'E'). Integers are
// little-endian. A file's payload chunks come in offset order and end with
// its 'E' chunk; chunks of different files may interleave. A file with no
// payload (an empty file) has only its 'E' chunk.

const (
	xbMagic        = "XBSTCK01"
	xbPayload      = 'P'
	xbEOF          = 'E'
	xbFlagIgnore   = 0x01
	xbMaxPath      = 512     // FN_REFLEN: the writer refuses longer paths
	xbMaxChunk     = 1 << 30 // far above the 10 MiB chunks writers make
	xbHeaderLength = len(xbMagic) + 1 + 1 + 4
)

// xbChunk is one chunk's header.
type xbChunk struct {
	Path   string // slash-separated, relative to the data directory
	EOF    bool   // the file's last chunk; no payload
	Offset int64  // where the payload goes in the file
	Length int64  // payload bytes
	sum    uint32
}

// xbReader reads chunks from an xbstream. After Next, the chunk's payload
// is read from the reader itself; Next skips what is left of it. A payload
// whose checksum does not match fails the read that ends it.
type xbReader struct {
	r    *bufio.Reader
	at   int64 // stream offset, for errors
	left int64 // payload bytes of the current chunk not read yet
	cur  xbChunk
	crc  hash.Hash32
}

func newXBReader(r io.Reader) *xbReader {
	return &xbReader{r: bufio.NewReaderSize(r, 1<<20), crc: crc32.NewIEEE()}
}

// errXB marks a malformed stream.
var errXB = errors.New("malformed xbstream")

func (x *xbReader) fail(format string, a ...any) error {
	return fmt.Errorf("%w at byte %d: %s", errXB, x.at, fmt.Sprintf(format, a...))
}

// readErr reports a failed read of what: the stream ending there makes it
// malformed; any other error (the source's) passes unchanged.
func (x *xbReader) readErr(err error, what string) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return x.fail("the stream ends inside a %s", what)
	}
	return err
}

// Next returns the next chunk's header, or io.EOF at the end of the stream.
func (x *xbReader) Next() (xbChunk, error) {
	if x.left > 0 {
		if _, err := io.Copy(io.Discard, x); err != nil {
			return xbChunk{}, err
		}
	}
	var hdr [xbHeaderLength]byte
	if _, err := io.ReadFull(x.r, hdr[:]); err != nil {
		if err == io.EOF {
			return xbChunk{}, io.EOF
		}
		return xbChunk{}, x.readErr(err, "chunk header")
	}
	if string(hdr[:8]) != xbMagic {
		return xbChunk{}, x.fail("no chunk magic %q", xbMagic)
	}
	flags, typ := hdr[8], hdr[9]
	plen := binary.LittleEndian.Uint32(hdr[10:14])
	x.at += int64(len(hdr))
	if plen == 0 || plen >= xbMaxPath {
		return xbChunk{}, x.fail("path length %d", plen)
	}
	p := make([]byte, plen)
	if _, err := io.ReadFull(x.r, p); err != nil {
		return xbChunk{}, x.readErr(err, "path")
	}
	x.at += int64(plen)
	c := xbChunk{Path: string(p)}
	switch typ {
	case xbEOF:
		c.EOF = true
		x.cur = c
		return c, nil
	case xbPayload:
	default:
		if flags&xbFlagIgnore == 0 {
			return xbChunk{}, x.fail("chunk type %q of %s is unknown (a newer backup tool's format?)", typ, c.Path)
		}
	}
	var pay [20]byte
	if _, err := io.ReadFull(x.r, pay[:]); err != nil {
		return xbChunk{}, x.readErr(err, "payload header of "+c.Path)
	}
	x.at += int64(len(pay))
	length, offset := binary.LittleEndian.Uint64(pay[0:8]), binary.LittleEndian.Uint64(pay[8:16])
	if length > xbMaxChunk || offset > 1<<62 {
		return xbChunk{}, x.fail("chunk of %s: length %d at offset %d", c.Path, length, offset)
	}
	c.Length, c.Offset, c.sum = int64(length), int64(offset), binary.LittleEndian.Uint32(pay[16:20])
	x.cur, x.left = c, c.Length
	x.crc.Reset()
	if typ != xbPayload { // ignorable and unknown: skip it
		if _, err := io.Copy(io.Discard, x); err != nil {
			return xbChunk{}, err
		}
		return x.Next()
	}
	return c, nil
}

// Read reads the current chunk's payload.
func (x *xbReader) Read(b []byte) (int, error) {
	if x.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > x.left {
		b = b[:x.left]
	}
	n, err := x.r.Read(b)
	x.crc.Write(b[:n])
	x.left -= int64(n)
	x.at += int64(n)
	if x.left == 0 {
		if sum := x.crc.Sum32(); sum != x.cur.sum {
			return n, x.fail("checksum of %s at offset %d is %08x, the chunk says %08x", x.cur.Path, x.cur.Offset, sum, x.cur.sum)
		}
		return n, nil
	}
	if err == io.EOF {
		return n, x.fail("the stream ends inside the payload of %s", x.cur.Path)
	}
	return n, err
}

// cleanStreamPath checks that p names a file strictly beneath the data
// directory: relative, no "." or ".." components, no empty components.
func cleanStreamPath(p string) (string, error) {
	for strings.HasPrefix(p, "./") {
		p = p[2:]
	}
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || strings.Contains(p, `\`) {
		return "", fmt.Errorf("%w: file name %q is not a plain relative path", errXB, p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return "", fmt.Errorf("%w: file name %q is not a plain relative path", errXB, p)
		}
	}
	return path.Clean(p), nil
}

package pgengine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// What streamRestore reads of pg_dump's custom format (-Fc): the header,
// the table of contents, then the data blocks, as pg_dump writes them
// into a pipe (src/bin/pg_dump/pg_backup_archiver.c ReadHead, ReadToc;
// pg_backup_custom.c). Integers are a sign byte and intSize bytes, least
// significant first; strings an integer length (-1: none) and the bytes.

// Archive versions this reader knows: 1.13 (pg_dump 11) to 1.16 (17, 18).
const (
	archVers113 = 1<<16 | 13<<8
	archVers114 = 1<<16 | 14<<8 // table access methods
	archVers115 = 1<<16 | 15<<8 // compression algorithm as a byte
	archVers116 = 1<<16 | 16<<8 // relkind
)

// TOC sections (pg_backup.h teSection).
const (
	sectionNone = 1 + iota
	sectionPreData
	sectionData
	sectionPostData
)

// Block types of the data that follows the TOC.
const (
	blockData = 1
	blockLOs  = 3
)

// errArchiveShape: the archive is not one streamRestore loads itself
// (another version, compressed data, large objects...); nothing was loaded.
var errArchiveShape = errors.New("the archive is not one the streamed parallel restore reads")

// tocEntry is one entry of the table of contents.
type tocEntry struct {
	dumpID    int
	hadDumper bool // its data follows the TOC in a block
	section   int
	desc, tag string
	copyStmt  string // "COPY ... FROM stdin;\n" of a TABLE DATA entry
}

// archiveHead is an archive's header and TOC.
type archiveHead struct {
	version int
	intSize int
	entries []tocEntry
}

// archiveReader reads the format's integers and strings, keeping what it
// reads in rec while rec is not nil.
type archiveReader struct {
	br      *bufio.Reader
	rec     *bytes.Buffer
	intSize int
	max     int // the most bytes rec may hold
}

// room refuses to read n bytes more into rec than it may hold.
func (a *archiveReader) room(n int) error {
	if n < 0 || (a.rec != nil && a.rec.Len()+n > a.max) {
		return fmt.Errorf("%w: a header or TOC larger than %d bytes", errArchiveShape, a.max)
	}
	return nil
}

func (a *archiveReader) full(n int) ([]byte, error) {
	if err := a.room(n); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(a.br, b); err != nil {
		return nil, err
	}
	if a.rec != nil {
		a.rec.Write(b)
	}
	return b, nil
}

func (a *archiveReader) byte() (int, error) {
	b, err := a.peek(1)
	if err != nil {
		return 0, err
	}
	return int(b[0]), nil
}

// int reads an integer. It reads from the buffer in place: the data blocks
// hold one per COPY row.
func (a *archiveReader) int() (int, error) {
	b, err := a.peek(1 + a.intSize)
	if err != nil {
		return 0, err
	}
	v := 0
	for i := a.intSize; i >= 1; i-- {
		v = v<<8 | int(b[i])
	}
	if b[0] != 0 {
		v = -v
	}
	return v, nil
}

// peek returns the next n bytes (n at most the buffer's size) and moves
// past them; the slice is valid until the next read. io.EOF when none is
// left, io.ErrUnexpectedEOF when some but fewer.
func (a *archiveReader) peek(n int) ([]byte, error) {
	b, err := a.br.Peek(n)
	if len(b) < n {
		if len(b) > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if err := a.room(n); err != nil {
		return nil, err
	}
	if a.rec != nil {
		a.rec.Write(b)
	}
	a.br.Discard(n)
	return b, nil
}

// str reads a string; ok is false for a null one.
func (a *archiveReader) str() (s string, ok bool, err error) {
	n, err := a.int()
	if err != nil || n < 0 {
		return "", false, err
	}
	b, err := a.full(n)
	return string(b), true, err
}

func (a *archiveReader) strs(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		s, _, err := a.str()
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// readArchiveHead reads the header and TOC of an uncompressed custom-format
// archive from br. An archive of another kind fails with errArchiveShape;
// a read error is returned as it is. Either way, the head's bytes read so
// far are in the returned raw slice, so that the caller can hand the
// archive whole to pg_restore.
func readArchiveHead(br *bufio.Reader, max int) (head *archiveHead, raw []byte, err error) {
	a := &archiveReader{br: br, rec: new(bytes.Buffer), intSize: 4, max: max}
	defer func() { raw = a.rec.Bytes() }()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errArchiveShape}, args...)...)
	}
	magic, err := a.full(8)
	if err != nil {
		return nil, nil, err
	}
	if string(magic[:5]) != "PGDMP" {
		return nil, nil, bad("no PGDMP magic")
	}
	h := &archiveHead{version: int(magic[5])<<16 | int(magic[6])<<8 | int(magic[7])}
	if h.version < archVers113 || h.version >= archVers116+1<<8 {
		return nil, nil, bad("archive version %d.%d", magic[5], magic[6])
	}
	sizes, err := a.full(3) // intSize, offSize, format
	if err != nil {
		return nil, nil, err
	}
	if a.intSize = int(sizes[0]); a.intSize < 4 || a.intSize > 8 || sizes[1] < 4 || sizes[1] > 8 {
		return nil, nil, bad("integer size %d, offset size %d", sizes[0], sizes[1])
	}
	offSize := int(sizes[1])
	if sizes[2] != 1 {
		return nil, nil, bad("format %d, not custom", sizes[2])
	}
	compression := 0
	if h.version >= archVers115 {
		compression, err = a.byte()
	} else {
		compression, err = a.int()
	}
	if err != nil {
		return nil, nil, err
	}
	if compression != 0 {
		return nil, nil, bad("compressed data")
	}
	if _, err := a.full(7 * (1 + a.intSize)); err != nil { // creation time
		return nil, nil, err
	}
	if _, err := a.strs(3); err != nil { // database, server and pg_dump versions
		return nil, nil, err
	}
	n, err := a.int()
	if err != nil {
		return nil, nil, err
	}
	if n < 0 || n > max/16 {
		return nil, nil, bad("%d TOC entries", n)
	}
	for range n {
		var e tocEntry
		var dumper int
		if e.dumpID, err = a.int(); err == nil {
			dumper, err = a.int()
		}
		if err != nil {
			return nil, nil, err
		}
		e.hadDumper = dumper != 0
		var s []string
		if s, err = a.strs(4); err != nil { // tableoid, oid, tag, desc
			return nil, nil, err
		}
		e.tag, e.desc = s[2], s[3]
		if e.section, err = a.int(); err != nil {
			return nil, nil, err
		}
		// defn, dropStmt, copyStmt, namespace, tablespace, and since 1.14
		// tableam
		fields := 5
		if h.version >= archVers114 {
			fields = 6
		}
		if s, err = a.strs(fields); err != nil {
			return nil, nil, err
		}
		e.copyStmt = s[2]
		if h.version >= archVers116 {
			if _, err = a.int(); err != nil { // relkind
				return nil, nil, err
			}
		}
		if s, err = a.strs(2); err != nil { // owner, "with oids"
			return nil, nil, err
		}
		if s[1] != "false" {
			return nil, nil, bad("a table WITH OIDS")
		}
		for { // dependencies, ended by a null string
			_, ok, err := a.str()
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				break
			}
		}
		if _, err := a.full(1 + offSize); err != nil { // data offset: flag, offset
			return nil, nil, err
		}
		h.entries = append(h.entries, e)
	}
	h.intSize = a.intSize
	return h, nil, nil
}

// readBlockHeader reads the type and dump ID of the next data block; io.EOF
// at the archive's end.
func readBlockHeader(a *archiveReader) (typ, id int, err error) {
	typ, err = a.byte()
	if err != nil {
		return 0, 0, err // io.EOF: no more blocks
	}
	if id, err = a.int(); err != nil {
		return 0, 0, unexpectedEOF(err)
	}
	return typ, id, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

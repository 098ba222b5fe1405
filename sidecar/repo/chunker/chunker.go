// Package chunker splits a stream into content-defined chunks with FastCDC
// (Xia et al., USENIX ATC 2016: gear rolling hash, normalized chunking).
//
// The gear table is derived from a per-repository secret, so chunk
// boundaries, and therefore chunk sizes, reveal nothing about the content to
// someone without the key. (github.com/jotfs/fastcdc-go offers a seed, but
// applies it to a package-level table in place, so two chunkers in one
// process cut differently and race; hence this small implementation.)
package chunker

import (
	"errors"
	"fmt"
	"io"
	"math/bits"

	"github.com/zeebo/blake3"
)

// Table is a gear table: one random 64-bit value per byte value.
type Table [256]uint64

// NewTable derives a gear table from a secret with BLAKE3 in key-derivation mode.
func NewTable(secret []byte) *Table {
	var raw [256 * 8]byte
	h := blake3.NewDeriveKey("amber chunker gear table v1")
	h.Write(secret)
	_, _ = h.Digest().Read(raw[:])
	var t Table
	for i := range t {
		for k := 0; k < 8; k++ {
			t[i] |= uint64(raw[i*8+k]) << (8 * k)
		}
	}
	return &t
}

// Params bound chunk sizes. Avg must be a power of two.
type Params struct{ Min, Avg, Max int }

// Chunker cuts a stream into chunks.
type Chunker struct {
	rd      io.Reader
	t       *Table
	p       Params
	maskS   uint64 // harder to match: used before Avg
	maskL   uint64 // easier to match: used after Avg
	buf     []byte // Next's buffer, allocated on its first call
	start   int    // first unconsumed byte in buf
	end     int    // end of valid data in buf
	eof     bool
	readErr error

	// Where Cut stopped scanning the chunk it could not yet cut: the next
	// byte to hash (0: none scanned) and the hash so far.
	scan   int
	scanFP uint64
}

// New returns a chunker over rd.
func New(rd io.Reader, t *Table, p Params) (*Chunker, error) {
	if p.Min < 64 || p.Avg <= p.Min || p.Max <= p.Avg || p.Avg&(p.Avg-1) != 0 {
		return nil, fmt.Errorf("chunker: bad sizes min %d avg %d max %d", p.Min, p.Avg, p.Max)
	}
	b := bits.TrailingZeros(uint(p.Avg))
	high := func(n int) uint64 { return ^uint64(0) << (64 - n) }
	return &Chunker{rd: rd, t: t, p: p, maskS: high(b + 2), maskL: high(b - 2)}, nil
}

// Reset starts cutting rd afresh, as New would, keeping the buffer.
func (c *Chunker) Reset(rd io.Reader) {
	c.rd, c.start, c.end, c.eof, c.readErr = rd, 0, 0, false, nil
	c.scan, c.scanFP = 0, 0
}

// Next returns the next chunk, valid until the following call, or io.EOF
// after the last one.
func (c *Chunker) Next() ([]byte, error) {
	if c.end-c.start < c.p.Max && !c.eof {
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
	data := c.buf[c.start:c.end]
	if len(data) == 0 {
		if c.readErr != nil {
			return nil, c.readErr
		}
		return nil, io.EOF
	}
	n, _ := c.Cut(data, c.eof) // final: data holds Max bytes or the rest of the stream
	c.start += n
	return data[:n:n], nil
}

func (c *Chunker) fill() error {
	if c.buf == nil {
		c.buf = make([]byte, 2*c.p.Max)
	}
	n := copy(c.buf, c.buf[c.start:c.end])
	c.start, c.end = 0, n
	for c.end < len(c.buf) {
		m, err := c.rd.Read(c.buf[c.end:])
		c.end += m
		if errors.Is(err, io.EOF) {
			c.eof = true
			return nil
		}
		if err != nil {
			c.eof = true
			c.readErr = err
			return nil
		}
	}
	return nil
}

// Cut returns the length of the chunk that starts at data[0], as Next
// would cut it, if data holds enough of the stream to tell: ok is false
// when no boundary is in data, data is shorter than Max and end (data runs
// to the end of the stream) is false. The caller then calls Cut again with
// the same chunk's bytes and more after them (at least one more byte, or
// end); Cut resumes where it stopped, so no byte is hashed twice. The
// boundary depends only on the bytes up to it, so cutting a stream in any
// pieces gives the chunks Next gives.
func (c *Chunker) Cut(data []byte, end bool) (n int, ok bool) {
	n = len(data)
	if n > c.p.Max {
		n = c.p.Max
	}
	if n <= c.p.Min {
		if end || n == c.p.Max {
			return n, true
		}
		return 0, false
	}
	normal := c.p.Avg
	if n < normal {
		normal = n
	}
	t := c.t
	i, fp := c.scan, c.scanFP
	if i == 0 {
		i = c.p.Min - 64 // warm the hash over the 64 bytes it depends on
		for ; i < c.p.Min; i++ {
			fp = fp<<1 + t[data[i]]
		}
	}
	if i < normal {
		k, hit, f := scan(t, data[i:normal], fp, c.maskS)
		if hit {
			c.scan, c.scanFP = 0, 0
			return i + k + 1, true
		}
		i, fp = normal, f
	}
	if i < n {
		k, hit, f := scan(t, data[i:n], fp, c.maskL)
		if hit {
			c.scan, c.scanFP = 0, 0
			return i + k + 1, true
		}
		i, fp = n, f
	}
	if n == c.p.Max || end {
		c.scan, c.scanFP = 0, 0
		return n, true
	}
	c.scan, c.scanFP = i, fp
	return 0, false
}

// scan rolls the hash fp over data and returns the index of the first byte
// after which fp&mask is zero (hit), or the hash after all of data. It
// takes two bytes a step: fp<<2 + t[b0]<<1 + t[b1] needs one shift and
// one add on fp's path where byte by byte needs two of each.
func scan(t *Table, data []byte, fp, mask uint64) (k int, hit bool, out uint64) {
	for ; k+1 < len(data); k += 2 {
		a, b := t[data[k]], t[data[k+1]]
		fp0 := fp<<1 + a
		fp = fp<<2 + (a<<1 + b)
		if fp0&mask == 0 || fp&mask == 0 {
			if fp0&mask == 0 {
				return k, true, 0
			}
			return k + 1, true, 0
		}
	}
	if k < len(data) {
		fp = fp<<1 + t[data[k]]
		if fp&mask == 0 {
			return k, true, 0
		}
	}
	return 0, false, fp
}

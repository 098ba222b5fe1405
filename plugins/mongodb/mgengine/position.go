package mgengine

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Pos is an oplog position: the BSON timestamp ts of an entry.
type Pos struct {
	T, I uint32
}

// IsZero reports whether p names no entry.
func (p Pos) IsZero() bool { return p.T == 0 && p.I == 0 }

// Offset is ts as the contract's offset: seconds << 32 | increment.
func (p Pos) Offset() uint64 { return uint64(p.T)<<32 | uint64(p.I) }

// FromOffset is the inverse of Offset.
func FromOffset(o uint64) Pos { return Pos{T: uint32(o >> 32), I: uint32(o)} }

// Token is the 8-byte big-endian offset.
func (p Pos) Token() []byte { return binary.BigEndian.AppendUint64(nil, p.Offset()) }

// TermToken is Token followed by the 8-byte big-endian term (t) of the
// entry just before p: what an archiver resuming at p compares to detect a
// rollback (fork.go).
func (p Pos) TermToken(term int64) []byte {
	return binary.BigEndian.AppendUint64(p.Token(), uint64(term))
}

// ParseToken reads a Token or a TermToken; an empty token is the zero
// position.
func ParseToken(b []byte) (Pos, error) {
	p, _, _, err := ParseTermToken(b)
	return p, err
}

// ParseTermToken reads a Token or a TermToken, and the term when the
// token holds one.
func ParseTermToken(b []byte) (p Pos, term int64, hasTerm bool, err error) {
	switch len(b) {
	case 0:
		return Pos{}, 0, false, nil
	case 8:
		return FromOffset(binary.BigEndian.Uint64(b)), 0, false, nil
	case 16:
		return FromOffset(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:])), true, nil
	}
	return Pos{}, 0, false, fmt.Errorf("oplog position token of %d bytes, want 8 or 16", len(b))
}

// Less orders positions.
func (p Pos) Less(q Pos) bool { return p.Offset() < q.Offset() }

// Text is MongoDB's own form, "Timestamp(1700000000, 3)".
func (p Pos) Text() string { return fmt.Sprintf("Timestamp(%d, %d)", p.T, p.I) }

// ParseText reads "Timestamp(1700000000, 3)", "1700000000:3" or
// "1700000000.3" (seconds and increment), or "1700000000" (increment 0).
func ParseText(s string) (Pos, error) {
	t := strings.TrimSpace(s)
	if in, ok := strings.CutPrefix(t, "Timestamp("); ok {
		in, ok = strings.CutSuffix(in, ")")
		if !ok {
			return Pos{}, fmt.Errorf("oplog position %q: want Timestamp(<seconds>, <increment>)", s)
		}
		t = strings.ReplaceAll(in, " ", "")
		t = strings.Replace(t, ",", ":", 1)
	}
	sec, inc, found := strings.Cut(t, ":")
	if !found {
		sec, inc, found = strings.Cut(t, ".")
	}
	a, err := strconv.ParseUint(sec, 10, 32)
	if err != nil {
		return Pos{}, fmt.Errorf("oplog position %q: want Timestamp(<seconds>, <increment>) or <seconds>:<increment>", s)
	}
	var b uint64
	if found {
		if b, err = strconv.ParseUint(inc, 10, 32); err != nil {
			return Pos{}, fmt.Errorf("oplog position %q: increment is not a number", s)
		}
	}
	return Pos{T: uint32(a), I: uint32(b)}, nil
}

// Next is the boundary just past p: log from Next on comes after p.
// Positions the plugin reports are such boundaries (a backup's consistent
// point, a segment's end), as docs/plugin-protocol.md describes.
func (p Pos) Next() Pos { return FromOffset(p.Offset() + 1) }

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

// EndToken is the token of an archived segment's end: Token, then the
// 8-byte big-endian term (t) of the entry just before p when hasTerm
// (what an archiver resuming at p compares to detect a rollback, fork.go),
// then, for a segment of an epoch that began at a rollback, the 8-byte
// offset of its branch (so that a resumed archiver keeps naming it). The
// term is 0 in a 24-byte token that has none (MongoDB's terms start at 1).
func (p Pos) EndToken(term int64, hasTerm bool, branch Pos) []byte {
	b := p.Token()
	if !hasTerm && branch.IsZero() {
		return b
	}
	if !hasTerm {
		term = 0
	}
	b = binary.BigEndian.AppendUint64(b, uint64(term))
	if branch.IsZero() {
		return b
	}
	return binary.BigEndian.AppendUint64(b, branch.Offset())
}

// ParseToken reads a Token or an EndToken; an empty token is the zero
// position.
func ParseToken(b []byte) (Pos, error) {
	p, _, _, _, err := ParseEndToken(b)
	return p, err
}

// ParseEndToken reads a Token or an EndToken: the position, the term when
// the token holds one, and the branch (zero when none).
func ParseEndToken(b []byte) (p Pos, term int64, hasTerm bool, branch Pos, err error) {
	switch len(b) {
	case 0:
		return Pos{}, 0, false, Pos{}, nil
	case 8, 16, 24:
	default:
		return Pos{}, 0, false, Pos{}, fmt.Errorf("oplog position token of %d bytes, want 8, 16 or 24", len(b))
	}
	p = FromOffset(binary.BigEndian.Uint64(b))
	if len(b) >= 16 {
		term = int64(binary.BigEndian.Uint64(b[8:]))
		hasTerm = len(b) == 16 || term != 0
	}
	if len(b) == 24 {
		branch = FromOffset(binary.BigEndian.Uint64(b[16:]))
	}
	return p, term, hasTerm, branch, nil
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

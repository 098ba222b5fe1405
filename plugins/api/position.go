package api

import (
	"bytes"
	"encoding/binary"
)

// Position is a point in an engine's log, opaque to the host.
//
// Token is the engine's own encoding, parsed only by the engine that made
// it. Text is for humans. Order is an ordering key: within one database
// lineage, bytes.Compare on Order sorts positions as the log does. Engines
// build it with OrderKey from fixed-width integers (timeline, LSN; binlog
// file index, offset; oplog seconds, increment).
type Position struct {
	Token []byte
	Text  string
	Order []byte
}

// IsZero reports whether p is unset.
func (p Position) IsZero() bool { return len(p.Token) == 0 && p.Text == "" && len(p.Order) == 0 }

// Compare orders p and q by their ordering keys: -1, 0 or +1.
func (p Position) Compare(q Position) int { return bytes.Compare(p.Order, q.Order) }

// String returns the human form.
func (p Position) String() string {
	if p.Text == "" && !p.IsZero() {
		return "(unnamed position)"
	}
	return p.Text
}

// OrderKey encodes parts as consecutive big-endian uint64s, so that
// bytes.Compare on keys orders them like the tuples of parts.
func OrderKey(parts ...uint64) []byte {
	b := make([]byte, 0, 8*len(parts))
	for _, v := range parts {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

package api

import (
	"cmp"
	"fmt"
)

// Position is a point in an engine's log.
//
// The host orders the positions of one database lineage (Probe.SystemID)
// by (Epoch, Offset) and never looks inside Token. An epoch is one
// unbroken sequence of log: inside it offsets only grow, and a segment that
// starts where the previous one ended leaves no hole. A new epoch begins
// only where the log's history forks or restarts — a PostgreSQL timeline, a
// new MySQL source server or RESET MASTER, a MongoDB rollback — never at a
// binlog rotation or a new oplog second. docs/plugin-protocol.md shows how
// each engine fills these fields.
type Position struct {
	// Epoch is the unbroken sequence the position belongs to (PostgreSQL:
	// the timeline). 0 only in a position parsed from a person's text that
	// names no epoch; it then means "the epoch that holds this offset".
	Epoch uint32
	// Offset is where in the epoch: a PostgreSQL LSN, a MySQL binlog
	// (file number << 32 | byte position), a MongoDB oplog timestamp
	// (seconds << 32 | increment).
	Offset uint64
	// Token is the engine's exact encoding, parsed only by the engine.
	Token []byte
	// Text is the engine's human form, for logs and the CLI.
	Text string
}

// IsZero reports whether p is unset.
func (p Position) IsZero() bool {
	return p.Epoch == 0 && p.Offset == 0 && len(p.Token) == 0 && p.Text == ""
}

// Compare orders p and q by (Epoch, Offset): -1, 0 or +1.
func (p Position) Compare(q Position) int {
	if c := cmp.Compare(p.Epoch, q.Epoch); c != 0 {
		return c
	}
	return cmp.Compare(p.Offset, q.Offset)
}

// String returns the engine's human form, or epoch/offset when it has none.
func (p Position) String() string {
	if p.Text == "" && !p.IsZero() {
		return fmt.Sprintf("%d/%#x", p.Epoch, p.Offset)
	}
	return p.Text
}

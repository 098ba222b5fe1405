package pgengine

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL WAL position (log sequence number).
type LSN uint64

// String formats the LSN as PostgreSQL does: "16/B374D848".
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN parses "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	return LSN(h<<32 | l), nil
}

// Scan reads an LSN from a text (pg_lsn) column; NULL scans as 0.
func (l *LSN) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*l = 0
		return nil
	case string:
		p, err := ParseLSN(v)
		*l = p
		return err
	case []byte:
		p, err := ParseLSN(string(v))
		*l = p
		return err
	}
	return fmt.Errorf("cannot scan %T into LSN", src)
}

// DefaultWALSegmentSize is PostgreSQL's default wal_segment_size.
const DefaultWALSegmentSize = 16 << 20

// SegmentStart returns the start of the segment holding lsn.
func SegmentStart(lsn LSN, segSize int64) LSN { return lsn - lsn%LSN(segSize) }

// WALFileName is the name PostgreSQL gives the segment holding lsn on
// timeline tli, e.g. "000000010000000000000003" (XLogFileName).
func WALFileName(tli uint32, lsn LSN, segSize int64) string {
	segNo := uint64(lsn) / uint64(segSize)
	perID := uint64(0x100000000) / uint64(segSize)
	return fmt.Sprintf("%08X%08X%08X", tli, uint32(segNo/perID), uint32(segNo%perID))
}

// ParseWALFileName is the inverse of WALFileName: the timeline and the
// segment's start LSN.
func ParseWALFileName(name string, segSize int64) (tli uint32, start LSN, err error) {
	if len(name) != 24 {
		return 0, 0, fmt.Errorf("invalid WAL file name %q", name)
	}
	var parts [3]uint64
	for i := range parts {
		parts[i], err = strconv.ParseUint(name[i*8:i*8+8], 16, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("invalid WAL file name %q", name)
		}
	}
	perID := uint64(0x100000000) / uint64(segSize)
	return uint32(parts[0]), LSN((parts[1]*perID + parts[2]) * uint64(segSize)), nil
}

// HistoryFileName is the name of timeline tli's history file, "00000002.history".
func HistoryFileName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

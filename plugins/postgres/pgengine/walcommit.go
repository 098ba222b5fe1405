package pgengine

import (
	"encoding/binary"
	"time"
)

// commitScan follows the WAL a stream receives, record by record, and
// keeps the time of the newest transaction commit or abort it has seen
// whole. Those are the only records a recovery_target_time stops at: a
// time after the newest of them cannot be reached (PostgreSQL 14 and later
// end recovery with "recovery ended before configured recovery target was
// reached"), so the archive's window must end there, not at the time the
// server sent its last byte.
//
// It reads only what it needs: page headers, each record's length, and the
// first bytes of records of the transaction resource manager. It starts
// at a page boundary and skips whatever it cannot follow to the next page
// header.
type commitScan struct {
	segSize  int64
	pageSize uint64 // XLOG_BLCKSZ
	pos      LSN    // the next byte to read

	hdr    []byte // the page header being read
	hdrLen int
	inHdr  bool
	synced bool   // pos is inside a record or at a record boundary
	skip   uint64 // bytes of a record continued from before the start to skip

	inRec    bool
	got, tot uint64 // bytes of the current record read, and its length (0: not known yet)
	head     []byte // its first bytes

	newest time.Time // the newest commit or abort completed since take
}

const (
	walPageSize         = 8192 // XLOG_BLCKSZ by default; a segment's first page header says
	walShortHeader      = 24   // SizeOfXLogShortPHD, MAXALIGNed
	walLongHeader       = 40   // SizeOfXLogLongPHD, MAXALIGNed
	walRecordHeader     = 24   // SizeOfXLogRecord
	xlpFirstIsContrec   = 0x0001
	rmXact              = 1
	xactOpMask          = 0x70
	blockIDDataShort    = 255
	blockIDDataLong     = 254
	blockIDOrigin       = 253
	blockIDTopLevelXID  = 252
	commitHeadMaxLength = 64
)

// pgEpoch is where PostgreSQL's timestamps count microseconds from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// reset starts following the WAL at start, a page boundary.
func (c *commitScan) reset(segSize int64, start LSN) {
	*c = commitScan{segSize: segSize, pageSize: walPageSize, pos: start, hdr: c.hdr[:0], head: c.head[:0]}
}

// take returns the newest commit time completed since the last take
// (zero when none) and forgets it.
func (c *commitScan) take() time.Time {
	t := c.newest
	c.newest = time.Time{}
	return t
}

// feed reads the next bytes of the stream.
func (c *commitScan) feed(data []byte) {
	for len(data) > 0 {
		if !c.inHdr && uint64(c.pos)%c.pageSize == 0 {
			c.inHdr, c.hdr, c.hdrLen = true, c.hdr[:0], walShortHeader
			if c.segSize > 0 && int64(c.pos)%c.segSize == 0 {
				c.hdrLen = walLongHeader
			}
		}
		if c.inHdr {
			n := min(c.hdrLen-len(c.hdr), len(data))
			c.hdr = append(c.hdr, data[:n]...)
			c.pos += LSN(n)
			data = data[n:]
			if len(c.hdr) == c.hdrLen {
				c.inHdr = false
				c.pageHeader(c.pos - LSN(c.hdrLen))
			}
			continue
		}
		room := c.pageSize - uint64(c.pos)%c.pageSize
		n := uint64(len(data))
		n = min(n, room)
		switch {
		case !c.synced:
			// the rest of the page
		case c.skip > 0:
			n = min(n, c.skip)
			c.skip -= n
		case !c.inRec && c.pos%8 != 0:
			n = min(n, 8-uint64(c.pos)%8) // padding to the next record
		default:
			if !c.inRec {
				c.inRec, c.got, c.tot, c.head = true, 0, 0, c.head[:0]
			}
			if c.tot == 0 {
				n = min(n, 4-c.got) // its length first
			} else {
				n = min(n, c.tot-c.got)
			}
			if len(c.head) < commitHeadMaxLength {
				c.head = append(c.head, data[:min(n, uint64(commitHeadMaxLength-len(c.head)))]...)
			}
			c.got += n
			if c.tot == 0 && c.got == 4 {
				c.tot = uint64(binary.LittleEndian.Uint32(c.head))
				if c.tot < walRecordHeader { // zeros past a WAL switch, or lost
					c.inRec, c.synced = false, false
				}
			} else if c.tot != 0 && c.got == c.tot {
				c.inRec = false
				c.record()
			}
		}
		c.pos += LSN(n)
		data = data[n:]
	}
}

// pageHeader checks the page header read for the page at page and
// (re)synchronises on it.
func (c *commitScan) pageHeader(page LSN) {
	info := binary.LittleEndian.Uint16(c.hdr[2:])
	addr := binary.LittleEndian.Uint64(c.hdr[8:])
	rem := uint64(binary.LittleEndian.Uint32(c.hdr[16:]))
	if addr == uint64(page) && len(c.hdr) == walLongHeader {
		if bs := uint64(binary.LittleEndian.Uint32(c.hdr[28:])); bs >= 1024 && bs%1024 == 0 && page%LSN(bs) == 0 {
			c.pageSize = bs // xlp_xlog_blcksz
		}
	}
	c.hdr = c.hdr[:0]
	if addr != uint64(page) { // not a WAL page (zeros past a switch)
		c.synced, c.inRec, c.skip = false, false, 0
		return
	}
	cont := info&xlpFirstIsContrec != 0 && rem > 0
	if c.synced && (c.inRec || c.skip > 0) == cont {
		return // as followed
	}
	// (Re)synchronise: skip the record continued here, then records start.
	c.inRec, c.skip, c.synced = false, 0, false
	room := c.pageSize - uint64(c.pos)%c.pageSize
	if !cont {
		c.synced = true
		return
	}
	if rem < room {
		c.synced, c.skip = true, rem
	}
}

// record looks at a record just read whole: a commit or abort sets newest.
func (c *commitScan) record() {
	h := c.head
	if len(h) < walRecordHeader || h[17] != rmXact {
		return
	}
	switch h[16] & xactOpMask {
	case 0x00, 0x20, 0x30, 0x40: // COMMIT, ABORT, COMMIT_PREPARED, ABORT_PREPARED
	default:
		return
	}
	i := walRecordHeader
	for i < len(h) {
		switch h[i] {
		case blockIDDataShort:
			i += 2
		case blockIDDataLong:
			i += 5
		case blockIDOrigin:
			i += 3
			continue
		case blockIDTopLevelXID:
			i += 5
			continue
		default:
			return // block references: not a record this follows
		}
		// The main data, xl_xact_commit or xl_xact_abort, begins with
		// the transaction's end time.
		if i+8 > len(h) {
			return
		}
		us := int64(binary.LittleEndian.Uint64(h[i:]))
		if t := pgEpoch.Add(time.Duration(us) * time.Microsecond); t.After(c.newest) {
			c.newest = t
		}
		return
	}
}

package postgres

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/postgres/pgengine"
)

// Position encodes a timeline and an LSN: epoch = timeline, offset = LSN;
// token = 4-byte timeline + 8-byte LSN, big-endian; text "<timeline>/<LSN>".
func Position(timeline uint32, lsn pgengine.LSN) api.Position {
	tok := binary.BigEndian.AppendUint32(nil, timeline)
	tok = binary.BigEndian.AppendUint64(tok, uint64(lsn))
	return api.Position{Epoch: timeline, Offset: uint64(lsn), Token: tok, Text: fmt.Sprintf("%d/%s", timeline, lsn)}
}

// ParsePosition decodes a Position made by Position.
func ParsePosition(p api.Position) (timeline uint32, lsn pgengine.LSN, err error) {
	if len(p.Token) != 12 {
		return 0, 0, fmt.Errorf("not a PostgreSQL position: %q", p.Text)
	}
	return binary.BigEndian.Uint32(p.Token), pgengine.LSN(binary.BigEndian.Uint64(p.Token[4:])), nil
}

// ParsePosition reads an LSN ("0/3000060", timeline unspecified) or a
// timeline and an LSN ("2/0/3000060").
func (e *Engine) ParsePosition(_ context.Context, text string) (api.Position, error) {
	parts := strings.Split(strings.TrimSpace(text), "/")
	bad := fmt.Errorf("%q is not a PostgreSQL position: write an LSN such as 0/3000060, or timeline/LSN such as 2/0/3000060", text)
	switch len(parts) {
	case 2:
		lsn, err := pgengine.ParseLSN(parts[0] + "/" + parts[1])
		if err != nil {
			return api.Position{}, bad
		}
		return api.Position{Offset: uint64(lsn), Text: lsn.String()}, nil
	case 3:
		tl, err := strconv.ParseUint(parts[0], 10, 32)
		if err != nil || tl == 0 {
			return api.Position{}, bad
		}
		lsn, err := pgengine.ParseLSN(parts[1] + "/" + parts[2])
		if err != nil {
			return api.Position{}, bad
		}
		return Position(uint32(tl), lsn), nil
	}
	return api.Position{}, bad
}

// SettingSegmentSize is the log-command setting that carries the server's
// WAL segment size to DescribeLogFile.
const SettingSegmentSize = "wal_segment_size"

var (
	walFileRE     = regexp.MustCompile(`^[0-9A-F]{24}(\.partial)?$`)
	backupFileRE  = regexp.MustCompile(`^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$`)
	historyFileRE = regexp.MustCompile(`^([0-9A-F]{8})\.history$`)
)

// DescribeLogFile maps a WAL, partial WAL or timeline history file name
// onto the segment it is stored as: epoch = timeline, offsets = the LSNs
// the file covers. A history file is metadata (start = end) whose branch
// is the switch point it records. Backup history files (.backup) need no
// archiving: amber's manifests record where each backup starts and stops.
func (e *Engine) DescribeLogFile(_ context.Context, q api.LogFileQuery) (api.LogFile, error) {
	name := q.Name
	if backupFileRE.MatchString(name) {
		return api.LogFile{Ignore: true}, nil
	}
	if m := historyFileRE.FindStringSubmatch(name); m != nil {
		tl, _ := strconv.ParseUint(m[1], 16, 32)
		seg := api.Segment{SegmentHeader: api.SegmentHeader{Name: name, Start: Position(uint32(tl), 0)}}
		seg.End = seg.Start
		if q.Path != "" {
			content, err := os.ReadFile(q.Path)
			if err != nil {
				return api.LogFile{}, err
			}
			if seg.Branch, err = historyBranch(content); err != nil {
				return api.LogFile{}, fmt.Errorf("%s: %w", name, err)
			}
		}
		return api.LogFile{Segment: seg}, nil
	}
	if !walFileRE.MatchString(name) {
		return api.LogFile{}, fmt.Errorf("%s is not a WAL, partial WAL or history file name", name)
	}
	partial := strings.HasSuffix(name, ".partial")
	base := strings.TrimSuffix(name, ".partial")
	segSize := q.Size // a WAL file, partial or not, is one whole segment
	if q.Path == "" {
		segSize = 16 << 20
		if v := q.Settings[SettingSegmentSize]; v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return api.LogFile{}, fmt.Errorf("setting %s=%q: %w", SettingSegmentSize, v, err)
			}
			segSize = n
		}
	}
	if !validSegmentSize(segSize) {
		return api.LogFile{}, fmt.Errorf("%s is %d bytes, not a WAL segment size (a power of two from 1 MiB to 1 GiB)", filepath.Base(q.Path), segSize)
	}
	tl, start, err := pgengine.ParseWALFileName(base, segSize)
	if err != nil {
		return api.LogFile{}, err
	}
	seg := api.Segment{
		SegmentHeader:  api.SegmentHeader{Name: base, Start: Position(tl, start)},
		SegmentTrailer: api.SegmentTrailer{End: Position(tl, start+pgengine.LSN(segSize)), Partial: partial, FileSize: segSize},
	}
	return api.LogFile{Segment: seg}, nil
}

func validSegmentSize(n int64) bool { return n >= 1<<20 && n <= 1<<30 && n&(n-1) == 0 }

// historyBranch reads where a timeline branched off its parent: the last
// line of its history file, "<parent timeline>\t<switch LSN>\t<reason>".
func historyBranch(content []byte) (api.Position, error) {
	var branch api.Position
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return api.Position{}, fmt.Errorf("history line %q has no switch point", line)
		}
		tl, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return api.Position{}, fmt.Errorf("history line %q: %w", line, err)
		}
		lsn, err := pgengine.ParseLSN(f[1])
		if err != nil {
			return api.Position{}, fmt.Errorf("history line %q: %w", line, err)
		}
		branch = Position(uint32(tl), lsn)
	}
	return branch, sc.Err()
}

package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Segment describes one piece of database log (a WAL segment, a binlog
// file, a slice of oplog) stored whole under log/. Start and End are the
// engine's log positions mapped onto 64-bit integers that order correctly
// within one stream and epoch (a PostgreSQL LSN, a binlog sequence and
// offset, an oplog timestamp).
type Segment struct {
	Stream  string `json:"stream"` // e.g. "postgres" or "mysql-<server uuid>"
	Epoch   uint32 `json:"epoch"`  // timeline; 0 where the engine has none
	Start   uint64 `json:"start"`
	End     uint64 `json:"end"` // exclusive
	Partial bool   `json:"partial"`
	// Stored inside the encrypted object, not in its name:
	Name      string            `json:"name,omitempty"` // the engine's own name for it
	FirstTime time.Time         `json:"first_time,omitzero"`
	LastTime  time.Time         `json:"last_time,omitzero"`
	Meta      map[string]string `json:"meta,omitempty"`
	Size      int64             `json:"size"` // plaintext bytes
}

var streamRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ObjectName is where the segment is stored:
// log/<stream>/<epoch:8 hex>/<start:16 hex>-<end:16 hex>[.partial]
func (s Segment) ObjectName() string {
	n := fmt.Sprintf("%s%s/%08x/%016x-%016x", logDir, s.Stream, s.Epoch, s.Start, s.End)
	if s.Partial {
		n += ".partial"
	}
	return n
}

// parseSegmentName accepts exactly the names ObjectName produces.
func parseSegmentName(name string) (Segment, bool) {
	if !strings.HasPrefix(name, logDir) {
		return Segment{}, false
	}
	parts := strings.Split(strings.TrimPrefix(name, logDir), "/")
	if len(parts) != 3 {
		return Segment{}, false
	}
	var s Segment
	s.Stream = parts[0]
	ep, err := strconv.ParseUint(parts[1], 16, 32)
	if err != nil {
		return Segment{}, false
	}
	s.Epoch = uint32(ep)
	rng := parts[2]
	if strings.HasSuffix(rng, ".partial") {
		s.Partial = true
		rng = strings.TrimSuffix(rng, ".partial")
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return Segment{}, false
	}
	if s.Start, err = strconv.ParseUint(a, 16, 64); err != nil {
		return Segment{}, false
	}
	if s.End, err = strconv.ParseUint(b, 16, 64); err != nil {
		return Segment{}, false
	}
	if s.ObjectName() != name || !streamRE.MatchString(s.Stream) {
		return Segment{}, false
	}
	return s, true
}

// segEncoders compress log segments at zstd's level 3 with the build's
// encoder (the C library's where there is cgo): an archiver stores up to a
// 16 MiB segment at a time, and concurrent archivers each take their own.
var segEncoders = sync.Pool{New: func() any { return newZstdEncoder(CompressDefault.zstdLevel()) }}

// PutSegment stores a segment whole: zstd, then sealed with the object
// name as associated data, so a segment cannot be passed off as another.
// It returns once the segment is durable.
func (r *Repository) PutSegment(ctx context.Context, s Segment, data []byte) error {
	if !streamRE.MatchString(s.Stream) {
		return fmt.Errorf("invalid log stream name %q", s.Stream)
	}
	if s.End < s.Start {
		return fmt.Errorf("segment end %x before start %x", s.End, s.Start)
	}
	s.Size = int64(len(data))
	hdr, _ := json.Marshal(s)
	plain := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(hdr)+zstdBound(len(data))), uint32(len(hdr)))
	plain = append(plain, hdr...)
	enc := segEncoders.Get().(zstdEncoder)
	// The frame is written into plain's spare room (the append then
	// copies it onto itself): the header stays outside the zstd frame.
	plain = append(plain, enc.encode(plain[len(plain):], data)...)
	segEncoders.Put(enc)
	name := s.ObjectName()
	sealed := r.seal.seal(nil, plain, []byte(name))
	// A complete segment is written once: if the name exists with other
	// log in it, two servers are writing into one stream (a restored copy
	// that archives, a split brain) and the archive must not mix them.
	// Partial segments are superseded by design and written plainly.
	if c, ok := storage.AsCreator(r.be); ok && !s.Partial {
		err := c.Create(ctx, name, bytes.NewReader(sealed), int64(len(sealed)))
		if errors.Is(err, storage.ErrExists) {
			_, old, gerr := r.GetSegment(ctx, name)
			if gerr == nil && bytes.Equal(old, data) {
				return nil // archived before, by this server: nothing to do
			}
			if gerr != nil {
				return fmt.Errorf("%w: %s exists and cannot be read back to compare: %w", ErrSegmentConflict, name, gerr)
			}
			return fmt.Errorf("%w: %s already holds different log; is a second server (a restored copy, a split brain) archiving into stream %s? Give it its own stream, or remove the object after checking which server is right",
				ErrSegmentConflict, name, s.Stream)
		}
		if err != nil {
			return fmt.Errorf("save segment %s: %w", name, err)
		}
		return nil
	}
	if err := r.be.Save(ctx, name, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return fmt.Errorf("save segment %s: %w", name, err)
	}
	return nil
}

// ErrSegmentConflict means a complete log segment is already stored under
// the same name with different content.
var ErrSegmentConflict = errors.New("conflicting log segment")

// GetSegment loads and authenticates a segment.
func (r *Repository) GetSegment(ctx context.Context, objectName string) (Segment, []byte, error) {
	sealed, err := readCapped(ctx, r.be, objectName, maxSegmentRead)
	if err != nil {
		return Segment{}, nil, fmt.Errorf("load segment: %w", err)
	}
	plain, err := r.seal.open(nil, sealed, []byte(objectName))
	if err != nil {
		return Segment{}, nil, &CorruptError{Object: objectName, Err: err}
	}
	if len(plain) < 4 || int(binary.LittleEndian.Uint32(plain)) > len(plain)-4 {
		return Segment{}, nil, &CorruptError{Object: objectName, Err: fmt.Errorf("bad segment header")}
	}
	hl := int(binary.LittleEndian.Uint32(plain))
	var s Segment
	if err := json.Unmarshal(plain[4:4+hl], &s); err != nil {
		return Segment{}, nil, &CorruptError{Object: objectName, Err: err}
	}
	data, err := zdecSeg.DecodeAll(plain[4+hl:], nil)
	if err != nil {
		return Segment{}, nil, &CorruptError{Object: objectName, Err: fmt.Errorf("decompress: %w", err)}
	}
	if int64(len(data)) != s.Size {
		return Segment{}, nil, &CorruptError{Object: objectName, Err: fmt.Errorf("size %d, header says %d", len(data), s.Size)}
	}
	return s, data, nil
}

func (r *Repository) checkSegment(ctx context.Context, name string) (int64, error) {
	_, data, err := r.GetSegment(ctx, name)
	return int64(len(data)), err
}

// Segments lists a stream's segments from their names alone (no download),
// ordered by epoch, then start, complete before partial, longer first.
func (r *Repository) Segments(ctx context.Context, stream string) ([]Segment, error) {
	return r.listSegments(ctx, stream, logDir+stream+"/", func(Segment) bool { return true })
}

// HasLog reports whether the repository holds log of any stream whose
// name starts with prefix (StreamName(engine, "") for an engine's
// streams). It stops at the first object it lists.
func (r *Repository) HasLog(ctx context.Context, prefix string) (bool, error) {
	found := errors.New("found")
	err := r.be.List(ctx, logDir+prefix, func(storage.FileInfo) error { return found })
	if errors.Is(err, found) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("list log %s*: %w", prefix, err)
	}
	return false, nil
}

// SegmentsStarting lists the segments of stream's epoch whose start lies in
// [from, to), sorted as Segments sorts them. Object names spell positions
// in fixed-width hex, so it lists only the names under one or two prefixes
// of the range (startPrefixes): a log file's fetch costs what its
// neighbourhood holds, not the whole stream.
func (r *Repository) SegmentsStarting(ctx context.Context, stream string, epoch uint32, from, to uint64) ([]Segment, error) {
	if to <= from {
		return nil, nil
	}
	var out []Segment
	for _, p := range startPrefixes(from, to-1) {
		segs, err := r.listSegments(ctx, stream, fmt.Sprintf("%s%s/%08x/%s", logDir, stream, epoch, p), func(s Segment) bool {
			return s.Epoch == epoch && s.Start >= from && s.Start < to
		})
		if err != nil {
			return nil, err
		}
		out = append(out, segs...)
	}
	sortSegments(out)
	return out, nil
}

// startPrefixes gives at most two name prefixes (hex digits of a start
// position) that together cover every start in [from, last], each listing
// at most 16 times the positions of its part: the range is split where its
// first differing digit steps, so that a range straddling a round number
// (0x0ffff... to 0x1000...) does not list everything below it.
func startPrefixes(from, last uint64) []string {
	a, b := fmt.Sprintf("%016x", from), fmt.Sprintf("%016x", last)
	n := commonPrefix(a, b)
	if n == len(a) {
		return []string{a}
	}
	step := uint64(1) << (4 * (15 - n)) // one unit of the first digit that differs
	m := last &^ (step - 1)             // from < m <= last
	lo, hi := fmt.Sprintf("%016x", m-1), fmt.Sprintf("%016x", m)
	if commonPrefix(a, lo) == n {
		// The range spans a whole step of that digit already: its common
		// prefix lists at most 16 times what it holds.
		return []string{a[:n]}
	}
	return []string{a[:commonPrefix(a, lo)], hi[:commonPrefix(hi, b)]}
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && a[n] == b[n] {
		n++
	}
	return n
}

func (r *Repository) listSegments(ctx context.Context, stream, prefix string, keep func(Segment) bool) ([]Segment, error) {
	objs, err := r.listSegmentObjects(ctx, stream, prefix, keep)
	if err != nil {
		return nil, err
	}
	out := make([]Segment, len(objs))
	for i, o := range objs {
		out[i] = o.Segment
	}
	return out, nil
}

// listSegmentObjects lists the segments of stream under prefix that keep
// accepts, with their stored sizes, sorted as sortSegments sorts.
func (r *Repository) listSegmentObjects(ctx context.Context, stream, prefix string, keep func(Segment) bool) ([]logObject, error) {
	var out []logObject
	err := r.be.List(ctx, prefix, func(fi storage.FileInfo) error {
		if s, ok := parseSegmentName(fi.Name); ok && s.Stream == stream && keep(s) {
			out = append(out, logObject{Segment: s, stored: fi.Size})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list log %s: %w", stream, err)
	}
	sort.Slice(out, func(i, j int) bool { return segmentLess(out[i].Segment, out[j].Segment) })
	return out, nil
}

// sortSegments orders by epoch, then start, complete before partial, longer
// first.
func sortSegments(out []Segment) {
	sort.Slice(out, func(i, j int) bool { return segmentLess(out[i], out[j]) })
}

func segmentLess(a, b Segment) bool {
	if a.Epoch != b.Epoch {
		return a.Epoch < b.Epoch
	}
	if a.Start != b.Start {
		return a.Start < b.Start
	}
	if a.Partial != b.Partial {
		return !a.Partial
	}
	return a.End > b.End
}

// RemoveSegment deletes one stored segment (a partial one superseded by a
// complete one, or log older than every kept backup).
func (r *Repository) RemoveSegment(ctx context.Context, s Segment) error {
	return r.be.Remove(ctx, s.ObjectName())
}

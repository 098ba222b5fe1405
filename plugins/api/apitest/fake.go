// Package apitest holds a fake engine and helpers for testing the plugin
// contract and the host without a database. The fake generates
// deterministic bytes, so a receiver can check what it got without keeping
// it.
package apitest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api"
)

// Pattern returns n deterministic pseudo-random bytes derived from seed.
func Pattern(seed, n int64) io.Reader {
	return &pattern{state: uint64(seed)*0x9E3779B97F4A7C15 + 1, left: n, off: 8}
}

// next is xorshift64*.
func (p *pattern) next() uint64 {
	p.state ^= p.state >> 12
	p.state ^= p.state << 25
	p.state ^= p.state >> 27
	return p.state * 2685821657736338717
}

type pattern struct {
	state uint64
	left  int64
	buf   [8]byte
	off   int // unread bytes in buf start at off; 8 means none
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n := 0
	for n < len(b) && p.off < 8 {
		b[n] = p.buf[p.off]
		n++
		p.off++
	}
	for len(b)-n >= 8 {
		binary.LittleEndian.PutUint64(b[n:], p.next())
		n += 8
	}
	if n < len(b) {
		binary.LittleEndian.PutUint64(p.buf[:], p.next())
		p.off = copy(b[n:], p.buf[:])
		n = len(b)
	}
	p.left -= int64(n)
	return n, nil
}

// PatternSum returns the hex SHA-256 of Pattern(seed, n).
func PatternSum(seed, n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, Pattern(seed, n))
	return hex.EncodeToString(h.Sum(nil))
}

// Pos is a fake log position at offset n.
func Pos(n uint64) api.Position {
	return api.Position{Epoch: 1, Offset: n, Token: binary.BigEndian.AppendUint64(nil, n), Text: "fake/" + strconv.FormatUint(n, 10)}
}

// Fake is an engine named "fake" with every capability except
// PhysicalRestore. Behaviour is driven by request options and target
// settings:
//   - Probe panics with settings["panic"] when set, and logs "probing" at info.
//   - LogicalDump writes options["entries"] entries (default 1) of
//     options["size"] bytes (default 1 MiB) of Pattern(seed+i, size),
//     named "entry-<i>", seed = options["seed"]; it panics half-way
//     through when options["panic"] is set.
//   - PhysicalBackup is the same through EntrySink.Create.
//   - LogicalRestore returns the SHA-256 of each entry in metadata.
//   - Archive writes options["segments"] segments of options["size"]
//     bytes, then waits for durable positions until durable closes.
//   - Replay fetches segments after From until the target position.
type Fake struct {
	api.Unsupported

	mu       sync.Mutex
	frozen   map[string]bool
	thawed   []string
	released api.Position
}

var _ api.Engine = (*Fake)(nil)

// NewFake returns a Fake engine.
func NewFake() *Fake { return &Fake{frozen: map[string]bool{}} }

func (f *Fake) Info(context.Context) (api.Info, error) {
	return api.Info{
		Engine:        "fake",
		PluginVersion: "0.0.1",
		Capabilities:  []api.Capability{api.LogicalDump, api.LogicalRestore, api.PhysicalBackup, api.Freeze, api.Archive, api.Replay},
	}, nil
}

func (f *Fake) Probe(ctx context.Context, t api.Target) (api.Probe, error) {
	if p := t.Settings["panic"]; p != "" {
		panic(p)
	}
	slog.InfoContext(ctx, "probing", "data_dir", t.DataDir)
	return api.Probe{ServerVersion: "fake 1.0", Role: api.RolePrimary, SystemID: "fake-system", Position: Pos(42), Healthy: true}, nil
}

func optInt(opts map[string]string, key string, def int64) int64 {
	if v, ok := opts[key]; ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return def
}

func (f *Fake) dump(ctx context.Context, req api.BackupRequest, sink api.EntrySink, writer bool) (api.BackupResult, error) {
	start := time.Now()
	entries := optInt(req.Options, "entries", 1)
	size := optInt(req.Options, "size", 1<<20)
	seed := optInt(req.Options, "seed", 0)
	for i := range entries {
		e := api.Entry{Name: fmt.Sprintf("entry-%d", i), Size: size, Kind: "pattern"}
		var r io.Reader = Pattern(seed+i, size)
		if req.Options["panic"] != "" {
			r = io.MultiReader(io.LimitReader(r, size/2), panicReader(req.Options["panic"]))
		}
		if writer {
			w, err := sink.Create(ctx, e)
			if err != nil {
				return api.BackupResult{}, err
			}
			if _, err := io.Copy(w, r); err != nil {
				return api.BackupResult{}, err
			}
			if err := w.Close(); err != nil {
				return api.BackupResult{}, err
			}
		} else if err := sink.Entry(ctx, e, r); err != nil {
			return api.BackupResult{}, err
		}
	}
	res := api.BackupResult{
		Start: Pos(100), Consistent: Pos(200), StartTime: start, ConsistentTime: time.Now(),
		ServerVersion: "fake 1.0", SystemID: "fake-system",
		Files: []api.File{{Name: "backup_label", Content: []byte("fake label")}},
	}
	// The fake's positions are in the epoch of the archived end it is given.
	if e := req.Archived.Epoch; e != 0 {
		res.Start.Epoch, res.Consistent.Epoch = e, e
	}
	return res, nil
}

type panicReader string

func (p panicReader) Read([]byte) (int, error) { panic(string(p)) }

func (f *Fake) LogicalDump(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	return f.dump(ctx, req, sink, false)
}

func (f *Fake) PhysicalBackup(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	return f.dump(ctx, req, sink, true)
}

func (f *Fake) LogicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	meta := map[string]string{}
	for {
		e, r, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return api.RestoreResult{}, err
		}
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			return api.RestoreResult{}, err
		}
		meta[e.Name] = hex.EncodeToString(h.Sum(nil))
	}
	return api.RestoreResult{Position: req.Backup.Consistent, ConsistentTime: req.Backup.ConsistentTime, Metadata: meta}, nil
}

func (f *Fake) Freeze(_ context.Context, req api.FreezeRequest) (api.Frozen, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen[req.LeaseID] = true
	fr := api.Frozen{Position: Pos(300), ConsistentTime: time.Now()}
	if e := req.Archived.Epoch; e != 0 {
		fr.Position.Epoch = e
	}
	return fr, nil
}

func (f *Fake) Thaw(_ context.Context, id string) (api.Thawed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.frozen[id] {
		return api.Thawed{}, fmt.Errorf("not frozen under lease %s", id)
	}
	delete(f.frozen, id)
	f.thawed = append(f.thawed, id)
	return api.Thawed{Consistent: Pos(301), ConsistentTime: time.Now(), Files: []api.File{{Name: "backup_label", Content: []byte("lease " + id)}}}, nil
}

// Frozen reports whether the fake is frozen under lease id.
func (f *Fake) Frozen(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frozen[id]
}

// Released is the last durable position Archive received.
func (f *Fake) Released() api.Position {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.released
}

// SegmentName names the fake's i-th segment.
func SegmentName(i int64) string { return fmt.Sprintf("seg-%08d", i) }

func (f *Fake) Archive(ctx context.Context, req api.ArchiveRequest, out api.SegmentSink, durable <-chan api.Position) error {
	segments := optInt(req.Options, "segments", 3)
	size := optInt(req.Options, "size", 3<<20/2)
	release := func(p api.Position) {
		f.mu.Lock()
		f.released = p
		f.mu.Unlock()
	}
	for i := range segments {
		start := uint64(i * size)
		w, err := out.Begin(ctx, api.SegmentHeader{Name: SegmentName(i), Start: Pos(start)})
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, Pattern(i, size)); err != nil {
			return err
		}
		now := time.Now()
		if err := w.Finish(api.SegmentTrailer{End: Pos(start + uint64(size)), FirstCommit: now, LastCommit: now}); err != nil {
			return err
		}
		// Take durable positions as they come, without blocking.
		select {
		case p, ok := <-durable:
			if ok {
				release(p)
			}
		default:
		}
	}
	// A partial segment that is never finished: the host must drop it.
	if w, err := out.Begin(ctx, api.SegmentHeader{Name: SegmentName(segments), Start: Pos(uint64(segments * size))}); err == nil {
		_, _ = io.Copy(w, Pattern(segments, 1000))
		_ = w.Abort("fake stops here")
	}
	for {
		select {
		case p, ok := <-durable:
			if !ok {
				return nil
			}
			release(p)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *Fake) Replay(ctx context.Context, req api.ReplayRequest, src api.SegmentSource) (api.ReplayResult, error) {
	at := req.From
	meta := map[string]string{}
	if !req.LogStart.IsZero() {
		meta["log_start"] = req.LogStart.String() // as received, for the tests
	}
	n := 0
	for req.To.Latest || at.Compare(req.To.Position) < 0 {
		seg, r, err := src.Fetch(ctx, api.SegmentQuery{After: at, Stream: req.Stream})
		if errors.Is(err, api.ErrNoSegment) {
			break
		}
		if err != nil {
			return api.ReplayResult{}, err
		}
		h := sha256.New()
		_, err = io.Copy(h, r)
		r.Close()
		if err != nil {
			return api.ReplayResult{}, err
		}
		meta[seg.Name] = hex.EncodeToString(h.Sum(nil))
		at = seg.End
		n++
	}
	meta["segments"] = strconv.Itoa(n)
	return api.ReplayResult{Reached: at, Metadata: meta}, nil
}

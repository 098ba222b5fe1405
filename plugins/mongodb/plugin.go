// Package mongodb adapts mgengine, Amber's MongoDB knowledge, to the
// plugin contract (plugins/api). cmd/amber-plugin-mongodb serves it.
//
// Target.DSN is a mongodb:// URI (a secret: never logged). A URI that
// names a database limits a dump to it, and a restore into such a URI
// loads a one-database backup under that name.
//
// Options it reads:
//   - LogicalDump options "read_preference" ("secondaryPreferred", the
//     default: data and oplog window from the least lagging secondary of a
//     replica set, connected directly, when it has one; "primary": from the
//     member the URI selects), "workers" (collections read at once, default 4),
//     "spool_dir" (where a collection read while another is sent waits,
//     default the temp dir), "batch_size" (documents per cursor batch),
//     "users" (true: add the users and roles of the dumped databases,
//     mgengine.UsersEntry).
//   - Archive options "max_segment_bytes" (default 16 MiB);
//     ArchiveRequest.FlushInterval bounds how long an entry waits before it
//     is sent (default 1 s).
//   - LogicalRestore options "workers" (insert batches in flight, default
//     4), "drop" (true: drop target collections that exist; default a
//     non-empty one is refused), "no_oplog" (true: skip the oplog window
//     recorded with the dump), "users" (false: skip the users and roles a
//     dump holds; by default they are merged in), "export_path" (write the dump to this
//     path, a pipe the host reads, in mongodump's archive format instead
//     of loading a server: what `amber restore --stdout` prints).
//
// Positions: epoch 1, offset = ts seconds << 32 | increment, token = the
// 8-byte big-endian offset, text "Timestamp(1700000000, 3)". Positions the
// plugin reports are boundaries, one past the last entry they include: a
// segment holding entries up to Timestamp(1700000000, 3) ends at
// Timestamp(1700000000, 4), where the next one starts, and a backup whose
// oplog window ends at that entry is consistent from there. The archiver
// starts a new epoch when it finds, on a resume, that a rollback undid
// entries it archived (mgengine/fork.go); an archived end's token also
// holds the term of its last entry and its epoch's branch
// (mgengine.EndToken). Dumps and freezes name their epoch from the
// archived end the host passes (BackupRequest.Archived,
// FreezeRequest.Archived), by the archiver's own comparison
// (mgengine.EpochAt); epoch 1 without one.
//
// Like every plugin it must never import sidecar/ or controller/.
package mongodb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// Version is the plugin's version, reported by Info.
var Version = "0.1.0"

// Engine implements api.Engine for MongoDB.
type Engine struct {
	api.Unsupported

	mu     sync.Mutex
	frozen map[string]*mgengine.Frozen // by lease id
}

var _ api.Engine = (*Engine)(nil)

// New returns the MongoDB engine.
func New() *Engine { return &Engine{} }

func (e *Engine) Info(context.Context) (api.Info, error) {
	return api.Info{
		Engine:           "mongodb",
		PluginVersion:    Version,
		Capabilities:     []api.Capability{api.LogicalDump, api.LogicalRestore, api.Freeze, api.Archive, api.Replay},
		SupportedServers: "MongoDB 5.0 and newer (untested); the MongoDB wire protocol of FerretDB 1.24 (tested)",
	}, nil
}

func uri(t api.Target) mgengine.URI { return mgengine.URI(string(t.DSN)) }

// Position converts an oplog position to the contract's form, in epoch 1.
func Position(p mgengine.Pos) api.Position { return epochPosition(1, p) }

// epochPosition converts an oplog position of epoch e (0 is 1).
func epochPosition(e uint32, p mgengine.Pos) api.Position {
	if p.IsZero() {
		return api.Position{}
	}
	return api.Position{Epoch: max(e, 1), Offset: p.Offset(), Token: p.Token(), Text: p.Text()}
}

func (e *Engine) Probe(ctx context.Context, t api.Target) (api.Probe, error) {
	info, err := mgengine.Probe(ctx, uri(t))
	if info == nil {
		return api.Probe{}, err
	}
	return probeOf(info, err), nil
}

// probeOf is what Probe reports of info, which mgengine.Probe returned
// with err (ErrNoOplog for a server without an oplog).
func probeOf(info *mgengine.Info, err error) api.Probe {
	p := api.Probe{
		ServerVersion: info.Version,
		Role:          api.RoleStandalone,
		SystemID:      info.Lineage,
		Position:      Position(info.Last),
		Healthy:       err == nil,
		Facts: map[string]string{
			"oplog":    strconv.FormatBool(info.Oplog),
			"set_name": info.SetName,
			"ferretdb": strconv.FormatBool(info.FerretDB),
		},
	}
	p.Facts["state"] = "STANDALONE"
	switch {
	case info.SetName != "" && info.Primary:
		p.Role = api.RolePrimary
		p.Facts["state"] = "PRIMARY"
	case info.SetName != "" && info.Secondary:
		p.Role = api.RoleReplica
		p.Facts["state"] = "SECONDARY"
		p.ReplicationLag = info.Lag
	case info.SetName != "":
		p.Facts["state"] = "OTHER" // arbiter, recovering, startup...
	}
	if info.Me != "" {
		p.Facts["member"] = info.Me
	}
	if info.LagErr != "" {
		p.Facts["lag_unknown"] = info.LagErr
	}
	if err != nil {
		p.Detail = err.Error()
	}
	return p
}

// ParsePosition reads "Timestamp(1700000000, 3)" or "1700000000:3".
func (e *Engine) ParsePosition(_ context.Context, text string) (api.Position, error) {
	p, err := mgengine.ParseText(text)
	if err != nil {
		return api.Position{}, err
	}
	pos := Position(p)
	pos.Epoch = 0 // the text names no epoch
	return pos, nil
}

// archived reads an archived end as the host holds it (ArchiveRequest.Start,
// BackupRequest.Archived): its token is an EndToken.
func archived(p api.Position) (mgengine.Archived, error) {
	if p.IsZero() {
		return mgengine.Archived{}, nil
	}
	end, term, hasTerm, branch, err := mgengine.ParseEndToken(p.Token)
	if err != nil {
		return mgengine.Archived{}, fmt.Errorf("archived end %s: %w", p, err)
	}
	return mgengine.Archived{End: end, Epoch: p.Epoch, Term: term, HasTerm: hasTerm, Branch: branch}, nil
}

type entrySink struct{ sink api.EntrySink }

func (s entrySink) Create(ctx context.Context, name, kind string) (io.WriteCloser, error) {
	return s.sink.Create(ctx, api.Entry{Name: name, Size: -1, Kind: kind})
}

func intOption(opts map[string]string, key string) (int, error) {
	v := opts[key]
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("option %s=%q: want a positive number", key, v)
	}
	return n, nil
}

// LogicalDump dumps every database (or the URI's, or req.Databases) as
// metadata.json, one BSON entry per collection and, on a server with an
// oplog, the oplog entries written while the data was read.
func (e *Engine) LogicalDump(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	if err := api.CheckOptions("a logical backup", req.Options, "spool_dir", "read_preference", "workers", "batch_size", "users"); err != nil {
		return api.BackupResult{}, err
	}
	o := mgengine.DumpOptions{Databases: req.Databases, SpoolDir: req.Options["spool_dir"], ReadPreference: req.Options["read_preference"], Logger: slog.Default()}
	var err error
	if o.Archived, err = archived(req.Archived); err != nil {
		return api.BackupResult{}, err
	}
	if o.Workers, err = intOption(req.Options, "workers"); err != nil {
		return api.BackupResult{}, err
	}
	bs, err := intOption(req.Options, "batch_size")
	if err != nil {
		return api.BackupResult{}, err
	}
	o.BatchSize = int32(bs)
	if v := req.Options["users"]; v != "" {
		if o.Users, err = strconv.ParseBool(v); err != nil {
			return api.BackupResult{}, fmt.Errorf("option users=%q: want true or false", v)
		}
	}
	start := time.Now()
	res, err := mgengine.LogicalDump(ctx, uri(req.Target), entrySink{sink}, o)
	if err != nil {
		return api.BackupResult{}, err
	}
	took := time.Since(start)
	slog.Info("dump done", "databases", len(res.Databases), "collections", res.Collections, "docs", res.Docs,
		"bytes", res.Bytes, "oplog_ops", res.OplogOps, "took", took)
	// Boundaries: the copy holds every entry up to the window's end once
	// the window is applied, so it is consistent just past it.
	var from, consistent mgengine.Pos
	if res.Info.Oplog {
		from, consistent = res.Start.Next(), res.End.Next()
	}
	// The window's start is in the epoch of its end (or in the parent of
	// an epoch that took over inside the window: EpochAt names it).
	startEpoch := mgengine.EpochAt(o.Archived, mgengine.ForkFacts{}, from)
	if res.Epoch > o.Archived.Epoch {
		startEpoch = res.Epoch // a fork the archiver has yet to find: the whole window is of the new history
	}
	return api.BackupResult{
		Start: epochPosition(startEpoch, from), Consistent: epochPosition(res.Epoch, consistent), StartTime: start, ConsistentTime: res.Time,
		ServerVersion: res.Info.Version, SystemID: res.Info.Lineage,
		Metadata: map[string]string{
			"format":      mgengine.FormatVersion,
			"databases":   strings.Join(res.Databases, ","),
			"collections": strconv.Itoa(res.Collections),
			"documents":   strconv.FormatInt(res.Docs, 10),
			"bson_bytes":  strconv.FormatInt(res.Bytes, 10),
			"oplog_ops":   strconv.Itoa(res.OplogOps),
			"dump_ms":     strconv.FormatInt(took.Milliseconds(), 10),
			"member":      res.Member,
			// The cluster time the copy is consistent at: the ts of the
			// window's last entry (of the newest entry before the reads
			// when the window is empty); empty without an oplog.
			"cluster_time": clusterTime(res),
			"users":        strconv.Itoa(res.Users),
			"roles":        strconv.Itoa(res.Roles),
		},
	}, nil
}

func clusterTime(res *mgengine.DumpResult) string {
	if !res.Info.Oplog || res.End.IsZero() {
		return ""
	}
	return res.End.Text()
}

type entrySource struct{ src api.EntrySource }

func (s entrySource) Next(ctx context.Context) (string, io.Reader, error) {
	e, r, err := s.src.Next(ctx)
	return e.Name, r, err
}

// LogicalRestore loads a dump into the target: collections with their
// options, data by several workers, then indexes, views and the dump's
// oplog window.
func (e *Engine) LogicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	if err := api.CheckOptions("a logical restore", req.Options, api.ExportPathOption, "drop", "no_oplog", "users", "workers"); err != nil {
		return api.RestoreResult{}, err
	}
	if path := req.Options[api.ExportPathOption]; path != "" {
		return export(ctx, path, src)
	}
	o := mgengine.RestoreOptions{Drop: req.Options["drop"] == "true", NoOplog: req.Options["no_oplog"] == "true",
		NoUsers: req.Options["users"] == "false", Logger: slog.Default()}
	var err error
	if o.Workers, err = intOption(req.Options, "workers"); err != nil {
		return api.RestoreResult{}, err
	}
	if string(req.Target.DSN) == "" {
		return api.RestoreResult{}, errors.New("a MongoDB restore needs a target URI: give --dsn mongodb://user:password@host:27017/[database]")
	}
	start := time.Now()
	res, err := mgengine.LogicalRestore(ctx, uri(req.Target), entrySource{src}, o)
	if err != nil {
		return api.RestoreResult{}, err
	}
	took := time.Since(start)
	slog.Info("restore done", "collections", res.Collections, "indexes", res.Indexes, "docs", res.Docs, "bytes", res.Bytes,
		"oplog_ops", res.OplogOps, "took", took)
	rr := api.RestoreResult{Position: req.Backup.Consistent, ConsistentTime: req.Backup.ConsistentTime, Metadata: map[string]string{
		"collections": strconv.Itoa(res.Collections),
		"indexes":     strconv.Itoa(res.Indexes),
		"documents":   strconv.FormatInt(res.Docs, 10),
		"bson_bytes":  strconv.FormatInt(res.Bytes, 10),
		"oplog_ops":   strconv.Itoa(res.OplogOps),
		"restore_ms":  strconv.FormatInt(took.Milliseconds(), 10),
		"users":       strconv.Itoa(res.Users),
		"roles":       strconv.Itoa(res.Roles),
	}}
	if res.AuthSkipped != "" {
		rr.Metadata["users_skipped"] = res.AuthSkipped
	}
	return rr, nil
}

// Freeze takes the server's fsync lock for a volume snapshot and holds it
// until Thaw, or until the lease runs out (api.Serve calls Thaw then). The
// lock is the server's, not the connection's: if the plugin process dies
// under it, the server stays locked until db.fsyncUnlock().
func (e *Engine) Freeze(ctx context.Context, req api.FreezeRequest) (api.Frozen, error) {
	a, err := archived(req.Archived)
	if err != nil {
		return api.Frozen{}, err
	}
	fr, err := mgengine.Freeze(ctx, uri(req.Target), a)
	if err != nil {
		return api.Frozen{}, err
	}
	e.mu.Lock()
	if e.frozen == nil {
		e.frozen = map[string]*mgengine.Frozen{}
	}
	e.frozen[req.LeaseID] = fr
	e.mu.Unlock()
	slog.Info("frozen", "lease", req.LeaseID, "method", "fsyncLock", "lock_count", fr.LockCount, "position", fr.Pos.Text())
	return api.Frozen{Position: epochPosition(fr.Epoch, fr.Pos.Next()), ConsistentTime: fr.Time}, nil
}

// Thaw releases the fsync lock. A snapshot taken under it holds every
// write up to the returned oplog position, flushed to the data files.
func (e *Engine) Thaw(ctx context.Context, leaseID string) (api.Thawed, error) {
	e.mu.Lock()
	fr := e.frozen[leaseID]
	delete(e.frozen, leaseID)
	e.mu.Unlock()
	if fr == nil {
		return api.Thawed{}, fmt.Errorf("no freeze under lease %s", leaseID)
	}
	if err := fr.Thaw(ctx); err != nil {
		return api.Thawed{}, err
	}
	slog.Info("thawed", "lease", leaseID)
	return api.Thawed{Consistent: epochPosition(fr.Epoch, fr.Pos.Next()), ConsistentTime: fr.Time, Metadata: map[string]string{
		"method": "fsyncLock", "lock_count": strconv.Itoa(fr.LockCount),
	}}, nil
}

// export writes the dump read from src to path in mongodump's archive
// format, for `mongorestore --archive`.
func export(ctx context.Context, path string, src api.EntrySource) (api.RestoreResult, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return api.RestoreResult{}, fmt.Errorf("export: %w", err)
	}
	res, err := mgengine.ExportArchive(ctx, entrySource{src}, f, mgengine.ExportOptions{ToolVersion: "amber-plugin-mongodb " + Version})
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("export: %w", cerr)
	}
	if err != nil {
		return api.RestoreResult{}, err
	}
	return api.RestoreResult{Metadata: map[string]string{
		"format":      "mongodump archive",
		"collections": strconv.Itoa(res.Collections),
		"views":       strconv.Itoa(res.Views),
		"documents":   strconv.FormatInt(res.Docs, 10),
		"bson_bytes":  strconv.FormatInt(res.Bytes, 10),
		"oplog_ops":   strconv.Itoa(res.OplogOps),
	}}, nil
}

// Archive tails local.oplog.rs and sends segments of entries, each ending
// one past its last entry. Durable positions are received but release
// nothing: the oplog is capped, and MongoDB keeps entries by its size, not
// by a reader's progress; a resume point the oplog rolled past is sent as
// a hole.
func (e *Engine) Archive(ctx context.Context, req api.ArchiveRequest, out api.SegmentSink, durable <-chan api.Position) error {
	if err := api.CheckOptions("archiving", req.Options, "max_segment_bytes"); err != nil {
		return err
	}
	o := mgengine.ArchiveOptions{FlushInterval: req.FlushInterval, Logger: slog.Default()}
	a, err := archived(req.Start)
	if err != nil {
		return fmt.Errorf("archive start: %w", err)
	}
	o.Start, o.Epoch, o.StartTerm, o.StartHasTerm, o.StartBranch = a.End, a.Epoch, a.Term, a.HasTerm, a.Branch
	if o.MaxSegment, err = intOption(req.Options, "max_segment_bytes"); err != nil {
		return err
	}
	send := func(ctx context.Context, s mgengine.Segment) error {
		h := api.SegmentHeader{Name: s.Name, Start: epochPosition(s.Epoch, s.Start)}
		if !s.Branch.IsZero() {
			h.Branch = epochPosition(s.Epoch-1, s.Branch)
		}
		end := epochPosition(s.Epoch, s.End)
		end.Token = s.End.EndToken(s.EndTerm, s.EndHasTerm, s.Branch)
		w, err := out.Begin(ctx, h)
		if err != nil {
			return err
		}
		if _, err := w.Write(s.Data); err != nil {
			_ = w.Abort(err.Error())
			return err
		}
		return w.Finish(api.SegmentTrailer{End: end, FirstCommit: s.FirstCommit, LastCommit: s.LastCommit})
	}
	stop := make(chan struct{})
	o.Stop = stop
	runErr := make(chan error, 1)
	go func() { runErr <- mgengine.Archive(ctx, uri(req.Target), o, send) }()
	for {
		select {
		case _, ok := <-durable:
			if !ok {
				// The host is done: send what is held, then return.
				close(stop)
				if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
					return err
				}
				return nil
			}
		case err := <-runErr:
			if err == nil && ctx.Err() != nil {
				err = ctx.Err()
			}
			return err
		}
	}
}

// Replay applies archived oplog entries from req.From up to req.To to the
// target, idempotently, limited to the backup's databases and renamed as
// its restore was (option "backup.databases"). Time targets compare with
// the entries' wall time (milliseconds); position targets with ts.
func (e *Engine) Replay(ctx context.Context, req api.ReplayRequest, src api.SegmentSource) (api.ReplayResult, error) {
	if err := api.CheckOptions("a replay", req.Options, api.BackupOptionPrefix, api.OptionReplayCheck); err != nil {
		return api.ReplayResult{}, err
	}
	from, err := mgengine.ParseToken(req.From.Token)
	if err != nil {
		return api.ReplayResult{}, fmt.Errorf("replay start %s: %w", req.From, err)
	}
	if from.IsZero() {
		return api.ReplayResult{}, errors.New("the backup has no oplog position (it was taken from a server without an oplog): it cannot be rolled forward")
	}
	o := mgengine.ReplayOptions{From: from, Inclusive: req.To.Inclusive}
	// The backup's oplog window starts before its consistent point (at the
	// first entry of the oldest transaction open when the dump began):
	// reading archived log from there finds the first entries of the
	// transactions still open at the consistent point.
	epoch := max(req.From.Epoch, 1)
	if !req.LogStart.IsZero() {
		ls, err := mgengine.ParseToken(req.LogStart.Token)
		if err != nil {
			return api.ReplayResult{}, fmt.Errorf("replay log start %s: %w", req.LogStart, err)
		}
		if !ls.IsZero() && ls.Less(from) && req.LogStart.Epoch <= epoch {
			o.LogStart = ls
			epoch = max(req.LogStart.Epoch, 1)
		}
	}
	if dbs := req.Options["backup.databases"]; dbs != "" {
		o.Databases = strings.Split(dbs, ",")
	}
	if target := mgengine.DatabaseOf(uri(req.Target)); target != "" && len(o.Databases) == 1 && o.Databases[0] != target {
		o.Rename = func(string) string { return target }
	}
	switch to := req.To; {
	case to.IsLatest():
	case !to.Time.IsZero():
		o.StopTime = to.Time
	case !to.Position.IsZero():
		p, err := mgengine.ParseToken(to.Position.Token)
		if err != nil || p.IsZero() {
			if p, err = mgengine.ParseText(to.Position.Text); err != nil {
				return api.ReplayResult{}, fmt.Errorf("recovery target %s: %w", to.Position, err)
			}
		}
		o.StopPos = p
	case to.Txn != "":
		return api.ReplayResult{}, fmt.Errorf("recovery to a transaction (%s) is not supported; give --to-time or --to-position", to.Txn)
	default:
		return api.ReplayResult{}, fmt.Errorf("MongoDB has no named restore points (%q); give --to-time or --to-position", to.Name)
	}
	if req.Options[api.OptionReplayCheck] == "true" {
		// The host asks only for targets it cannot check itself, which
		// are refused above; the others it checked.
		return api.ReplayResult{Reached: req.From}, nil
	}
	// Fetch in the backup's epoch, then in the epoch of each segment
	// fetched: log of an epoch that a rollback ended is never asked for
	// from a later one. An epoch's log is applied only up to where the
	// next epoch took over (its branch), and replay goes on in that one.
	branches := map[uint32]mgengine.Pos{} // epoch e -> where epoch e+1 took over from it; zero: nowhere
	// lookup finds where epoch e+1 took over from the current epoch e: a
	// fetch of the first segment after epoch e, whose header names its
	// branch. It must not run while a fetched segment is being read (the
	// source drains it on the next fetch).
	lookup := func(ctx context.Context) error {
		if _, ok := branches[epoch]; ok {
			return nil
		}
		var b mgengine.Pos
		seg, r, err := src.Fetch(ctx, api.SegmentQuery{After: api.Position{Epoch: epoch + 1}, Stream: req.Stream})
		switch {
		case errors.Is(err, api.ErrNoSegment):
		case err != nil:
			return err
		default:
			r.Close()
			if seg.Start.Epoch == epoch+1 && seg.Branch.Epoch == epoch && !seg.Branch.IsZero() {
				if b, err = mgengine.ParseToken(seg.Branch.Token); err != nil {
					return fmt.Errorf("archived segment %s's branch: %w", seg.Name, err)
				}
			}
		}
		branches[epoch] = b
		return nil
	}
	o.Until = func(context.Context) (mgengine.Pos, error) { return branches[epoch], nil }
	fetch := func(ctx context.Context, after mgengine.Pos) (mgengine.Pos, mgengine.Pos, io.ReadCloser, error) {
		if err := lookup(ctx); err != nil {
			return mgengine.Pos{}, mgengine.Pos{}, nil, err
		}
		if b := branches[epoch]; !b.IsZero() && !after.Less(b) {
			if b.Less(after) {
				return mgengine.Pos{}, mgengine.Pos{}, nil, fmt.Errorf("the copy stands at %s, past %s where a rollback replaced the archived history of epoch %d: it holds writes the rollback undid; restore from a backup taken after the rollback",
					after.Text(), b.Text(), epoch)
			}
			epoch++ // where the next epoch took over
			if err := lookup(ctx); err != nil {
				return mgengine.Pos{}, mgengine.Pos{}, nil, err
			}
		}
		seg, r, err := src.Fetch(ctx, api.SegmentQuery{After: epochPosition(epoch, after), Stream: req.Stream})
		if errors.Is(err, api.ErrNoSegment) {
			return mgengine.Pos{}, mgengine.Pos{}, nil, mgengine.ErrNoMoreLog
		}
		if err != nil {
			return mgengine.Pos{}, mgengine.Pos{}, nil, err
		}
		start, err1 := mgengine.ParseToken(seg.Start.Token)
		end, err2 := mgengine.ParseToken(seg.End.Token)
		if err := errors.Join(err1, err2); err != nil {
			r.Close()
			return mgengine.Pos{}, mgengine.Pos{}, nil, fmt.Errorf("archived segment %s: %w", seg.Name, err)
		}
		if seg.Start.Epoch > epoch {
			// The source went on to a later epoch: hold the segment while
			// that epoch's successor is looked up.
			data, err := io.ReadAll(r)
			r.Close()
			if err != nil {
				return mgengine.Pos{}, mgengine.Pos{}, nil, err
			}
			epoch = seg.Start.Epoch
			if err := lookup(ctx); err != nil {
				return mgengine.Pos{}, mgengine.Pos{}, nil, err
			}
			r = io.NopCloser(bytes.NewReader(data))
		}
		return start, end, r, nil
	}
	res, err := mgengine.Replay(ctx, uri(req.Target), o, fetch)
	if err != nil {
		return api.ReplayResult{}, err
	}
	meta := map[string]string{"segments": strconv.Itoa(res.Segments), "entries": strconv.Itoa(res.Entries),
		"transactions_open": strconv.Itoa(res.Pending), "transactions_carried": strconv.Itoa(res.Carried)}
	if !o.LogStart.IsZero() {
		meta["log_read_from"] = res.ReadFrom.Text()
		if o.LogStart.Less(res.ReadFrom) {
			slog.Warn("archived oplog does not reach back to the start of the backup's oplog window: a transaction begun before it and committed after the backup's position cannot be applied",
				"window_start", o.LogStart.Text(), "archive_from", res.ReadFrom.Text())
		}
	}
	return api.ReplayResult{Reached: Position(res.Pos), ReachedTime: res.Time, Metadata: meta}, nil
}

// Package mysql adapts myengine, Amber's MySQL and MariaDB knowledge, to
// the plugin contract (plugins/api). cmd/amber-plugin-mysql serves it.
//
// Options it reads:
//   - Target.Settings["bin_dir"]: directory of the mariadb/mysql client
//     used by logical restores.
//   - Target.Settings["lineage"]: the lineage (system id) to report,
//     instead of the default derived from the source server (see
//     myengine.Info.Lineage; a promoted MariaDB replica keeps its former
//     primary's); set it to keep one archive history across any failover.
//   - LogicalDump options "workers" (sessions reading tables at once,
//     default 2), "spool_dir" (where a table read while another is sent
//     waits, default the temp dir), "lock_wait_seconds" (bound on the wait
//     for the global read lock, default 60).
//   - LogicalRestore options "restore_threads" (client sessions loading
//     data entries at once, default myengine.DefaultRestoreThreads; 1
//     loads everything through one session in order) and "spool_dir"
//     (where a data entry waits for a free session, default the temp
//     dir).
//   - Archive options "server_id" (the replica server id the archiver
//     connects with; default myengine.DefaultServerID(lineage)) and
//     "max_segment_bytes" (default 16 MiB); ArchiveRequest.FlushInterval
//     bounds how long a commit waits before it is sent (default 1 s).
//   - Replay option "backup.database" (the host passes the backup's
//     metadata as "backup.<key>"): the database the binlog names; default
//     the target's. A Replay whose target is a data directory (no DSN)
//     applies the binlog of every database to the physical copy there.
//   - PhysicalBackup options "parallel" (mariadb-backup --parallel,
//     default 1) and "tmp_dir" (where mariadb-backup spools the redo log it
//     copies, default the temp dir); Target.Settings["bin_dir"]: where
//     mariadb-backup (xtrabackup) is, default PATH.
//   - PhysicalRestore option "use_memory" (mariadb-backup --prepare
//     --use-memory, e.g. "1G"); RestoreRequest.RunAs: the owner of the
//     restored files (default "mysql" when running as root); option
//     api.OptionSnapshotData: the data directory already holds a snapshot
//     backup's files (nothing is unpacked; Replay recovers it).
//   - Thaw metadata "datadir": the server's @@datadir.
//   - Freeze option: Target.Settings["lock_wait_seconds"] (default 60).
//
// Positions: epoch = fork counter (raised when archiving goes on on another
// server or after RESET MASTER; myengine.Archive), offset = binlog file
// number << 32 | byte position, token = "<file>:<pos>\n<GTID
// set>\nserver=<id>" (plus "\nbranch=<text>" in archived ends of a later
// epoch), text "mysql-bin.000042:1532 (0-1-1042)" (docs/engines/mysql.md).
// Backups and freezes take their epoch from BackupRequest.Archived and
// FreezeRequest.Archived.
//
// Like every plugin it must never import sidecar/ or controller/.
package mysql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/internal/durable"
	"github.com/amber-backup/amber/plugins/mysql/myengine"
)

// Version is the plugin's version, reported by Info.
var Version = "0.1.0"

// Engine implements api.Engine for MySQL and MariaDB.
type Engine struct {
	api.Unsupported

	mu     sync.Mutex
	frozen map[string]*myengine.Frozen
}

var _ api.Engine = (*Engine)(nil)

// New returns the MySQL engine.
func New() *Engine { return &Engine{frozen: map[string]*myengine.Frozen{}} }

func (e *Engine) Info(context.Context) (api.Info, error) {
	return api.Info{
		Engine:        "mysql",
		PluginVersion: Version,
		Capabilities: []api.Capability{api.LogicalDump, api.LogicalRestore, api.PhysicalBackup, api.PhysicalRestore,
			api.Freeze, api.Archive, api.Replay},
		SupportedServers: "MariaDB 10.5 and newer (tested with 10.11); MySQL 8 (untested)",
	}, nil
}

func dsn(t api.Target) myengine.DSN { return myengine.DSN(string(t.DSN)) }

// Position converts a binlog position to the contract's form.
func Position(p myengine.Pos) api.Position {
	if p.File == "" {
		return api.Position{}
	}
	return api.Position{Epoch: p.Epoch, Offset: p.Offset(), Token: p.Token(), Text: p.Text()}
}

func (e *Engine) Probe(ctx context.Context, t api.Target) (api.Probe, error) {
	info, err := myengine.Probe(ctx, dsn(t), t.Settings["lineage"])
	if info == nil {
		return api.Probe{}, err
	}
	p := api.Probe{
		ServerVersion:  info.Version,
		Role:           api.RolePrimary,
		SystemID:       info.Lineage,
		Position:       Position(info.Pos),
		ReplicationLag: info.Lag,
		Healthy:        err == nil,
		Facts: map[string]string{
			"log_bin":       strconv.FormatBool(info.LogBin),
			"binlog_format": info.BinlogFormat,
			"server_id":     strconv.FormatUint(uint64(info.ServerID), 10),
			"read_only":     strconv.FormatBool(info.ReadOnly),
			"user":          info.User,
		},
	}
	if info.MariaDB {
		p.Facts["gtid_domain_id"] = strconv.FormatUint(uint64(info.DomainID), 10)
	} else {
		p.Facts["server_uuid"] = info.ServerUUID
	}
	if info.Replica {
		p.Role = api.RoleReplica
	}
	if err != nil {
		p.Detail = err.Error()
	}
	return p, nil
}

// ParsePosition reads "mysql-bin.000042:1532" or "2@mysql-bin.000042:1532".
func (e *Engine) ParsePosition(_ context.Context, text string) (api.Position, error) {
	p, err := myengine.ParseText(text)
	if err != nil {
		return api.Position{}, err
	}
	pos := Position(p)
	pos.Epoch = p.Epoch // 0 when the text names none
	return pos, nil
}

type entrySink struct{ sink api.EntrySink }

func (s entrySink) Create(ctx context.Context, name, phase string) (io.WriteCloser, error) {
	return s.sink.Create(ctx, api.Entry{Name: name, Size: -1, Kind: "sql", Metadata: map[string]string{"phase": phase}})
}

// LogicalDump dumps the DSN's database as SQL entries: schema.sql,
// data/<table>.sql per table (data/<table>.part-NNNNN.sql per key range
// of a large table), post.sql. The result's metadata records how
// long writes were blocked ("lock_ms").
func (e *Engine) LogicalDump(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	if err := api.CheckOptions("a logical backup", req.Options, "spool_dir", "workers", "lock_wait_seconds", "split_bytes", "users"); err != nil {
		return api.BackupResult{}, err
	}
	if len(req.Databases) > 0 {
		return api.BackupResult{}, errors.New("mysql: dumping a list of databases is not supported yet; dump the DSN's database")
	}
	o := myengine.DumpOptions{SpoolDir: req.Options["spool_dir"]}
	if v := req.Options["workers"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return api.BackupResult{}, fmt.Errorf("option workers=%q: want a positive number", v)
		}
		o.Workers = n
	}
	if v := req.Options["lock_wait_seconds"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return api.BackupResult{}, fmt.Errorf("option lock_wait_seconds=%q: want a positive number", v)
		}
		o.LockWait = time.Duration(n) * time.Second
	}
	if v := req.Options["split_bytes"]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return api.BackupResult{}, fmt.Errorf("option split_bytes=%q: want a number of bytes, 0 to never split", v)
		}
		o.SplitSize = n
		if n == 0 {
			o.SplitSize = -1
		}
	}
	if v := req.Options["users"]; v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return api.BackupResult{}, fmt.Errorf("option users=%q: want true or false", v)
		}
		o.Users = b
	}
	start := time.Now()
	res, err := myengine.LogicalDump(ctx, dsn(req.Target), entrySink{sink}, o)
	if err != nil {
		return api.BackupResult{}, err
	}
	if res.Pos, err = numberEpoch(ctx, req.Target, req.Archived, res.Pos); err != nil {
		return api.BackupResult{}, err
	}
	lineage := req.Target.Settings["lineage"]
	if lineage == "" {
		lineage = res.Info.Lineage
	}
	pos := Position(res.Pos)
	return api.BackupResult{
		Start: pos, Consistent: pos, StartTime: start, ConsistentTime: res.Time,
		ServerVersion: res.Info.Version, SystemID: lineage,
		Metadata: map[string]string{
			"format":   "sql",
			"database": res.Database,
			"tables":   strconv.Itoa(res.Tables),
			"lock_ms":  strconv.FormatInt(res.LockTime.Milliseconds(), 10),
			"lock":     res.LockPlan,
			"gtid":     res.Pos.GTID,
			"users":    strconv.Itoa(res.Users),
			"ranges":   strconv.Itoa(res.Ranges),
		},
	}, nil
}

// numberEpoch gives p, a backup's or a freeze's position on the target
// server, the epoch the archive of the target's lineage has, or will have,
// on this server (end is that archive's end, BackupRequest.Archived or
// FreezeRequest.Archived; myengine.BackupEpoch).
func numberEpoch(ctx context.Context, t api.Target, end api.Position, p myengine.Pos) (myengine.Pos, error) {
	epoch, server, err := epochOf(ctx, t, end)
	if err != nil {
		return p, err
	}
	p.Epoch, p.Server = epoch, server
	return p, nil
}

// epochOf is the epoch and server identity numberEpoch gives positions.
func epochOf(ctx context.Context, t api.Target, end api.Position) (uint32, string, error) {
	var archived, branch myengine.Pos
	if !end.IsZero() {
		var err error
		if archived, branch, err = myengine.ParseEndToken(end.Epoch, end.Token); err != nil {
			return 0, "", fmt.Errorf("archived end %s: %w", end, err)
		}
	}
	epoch, server, err := myengine.BackupEpoch(ctx, dsn(t), t.Settings["lineage"], archived, branch)
	if err != nil {
		return 0, "", fmt.Errorf("number the position's epoch: %w", err)
	}
	return epoch, server, nil
}

// LogicalRestore loads the entries into the DSN's database: schema.sql
// through one mariadb/mysql client session, then the data entries through
// "restore_threads" sessions at once, then post.sql and users.sql through
// the first session again (myengine.LogicalRestore).
func (e *Engine) LogicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	if err := api.CheckOptions("a logical restore", req.Options, "spool_dir", "restore_threads"); err != nil {
		return api.RestoreResult{}, err
	}
	o := myengine.RestoreOptions{BinDir: req.Target.Settings["bin_dir"], SpoolDir: req.Options["spool_dir"]}
	if v := req.Options["restore_threads"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return api.RestoreResult{}, fmt.Errorf("option restore_threads=%q: want a positive number", v)
		}
		o.Threads = n
	}
	next := func(ctx context.Context) (string, string, io.Reader, error) {
		ent, r, err := src.Next(ctx)
		if err != nil {
			return "", "", nil, err
		}
		return ent.Name, ent.Metadata["phase"], r, nil
	}
	st, err := myengine.LogicalRestore(ctx, dsn(req.Target), o, next)
	if err != nil {
		return api.RestoreResult{}, err
	}
	threads := o.Threads
	if threads == 0 {
		threads = myengine.DefaultRestoreThreads
	}
	return api.RestoreResult{Position: req.Backup.Consistent, ConsistentTime: req.Backup.ConsistentTime,
		Metadata: map[string]string{
			"entries":         strconv.Itoa(st.Entries),
			"data_entries":    strconv.Itoa(st.DataEntries),
			"bytes":           strconv.FormatInt(st.Bytes, 10),
			"restore_threads": strconv.Itoa(threads),
		}}, nil
}

// Archive streams the binlog as a replica. Segments are cut at
// transaction boundaries (FlushInterval, max_segment_bytes, rotations) and
// never superseded, so none is partial. MariaDB and MySQL keep binlogs by
// their own expiry, not by a replica's progress: durable positions are
// received but release nothing; a resume point already purged is reported
// as lost log.
func (e *Engine) Archive(ctx context.Context, req api.ArchiveRequest, out api.SegmentSink, durable <-chan api.Position) error {
	if err := api.CheckOptions("archiving", req.Options, "server_id", "max_segment_bytes"); err != nil {
		return err
	}
	o := myengine.ArchiveOptions{FlushInterval: req.FlushInterval, Lineage: req.Target.Settings["lineage"], Logger: slog.Default()}
	if !req.Start.IsZero() {
		p, branch, err := myengine.ParseEndToken(req.Start.Epoch, req.Start.Token)
		if err != nil {
			return fmt.Errorf("archive start %s: %w", req.Start, err)
		}
		o.Start, o.StartBranch = p, branch
	}
	if v := req.Options["server_id"]; v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("option server_id=%q: want a positive 32-bit number", v)
		}
		o.ServerID = uint32(n)
	}
	if v := req.Options["max_segment_bytes"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("option max_segment_bytes=%q: want a positive number", v)
		}
		o.MaxSegment = n
	}
	send := func(ctx context.Context, s myengine.Segment) error {
		h := api.SegmentHeader{Name: s.Name, Start: Position(s.Start)}
		if s.Branch.File != "" {
			h.Branch = Position(s.Branch)
		}
		end := Position(s.End)
		end.Token = s.End.EndToken(s.Branch)
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
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	o.Stop = stop
	runErr := make(chan error, 1)
	go func() { runErr <- myengine.Archive(actx, dsn(req.Target), o, send) }()
	for {
		select {
		case _, ok := <-durable:
			if !ok {
				// A clean end: the archiver sends what the server had
				// written by now, then returns.
				close(stop)
				var err error
				select {
				case err = <-runErr:
				case <-time.After(15 * time.Second):
					cancel()
					err = <-runErr
				}
				if err != nil && !errors.Is(err, context.Canceled) {
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

// Replay applies archived binlog from req.From to req.To into the
// target's database with mariadb-binlog (mysqlbinlog) and the client; or,
// when the target is a data directory (a physical restore), into every
// database of the copy there, through a private server started on it.
// Time targets resolve to whole seconds (binlog timestamps); a
// transaction target is a MariaDB GTID position (myengine.ReplayOptions.StopGTID);
// there are no named targets. With api.OptionReplayCheck it only walks the
// log to the target.
func (e *Engine) Replay(ctx context.Context, req api.ReplayRequest, src api.SegmentSource) (api.ReplayResult, error) {
	if err := api.CheckOptions("a replay", req.Options, api.BackupOptionPrefix, api.OptionReplayCheck); err != nil {
		return api.ReplayResult{}, err
	}
	from, err := replayFrom(req.From)
	if err != nil {
		return api.ReplayResult{}, fmt.Errorf("replay start %s: %w", req.From, err)
	}
	o := myengine.ReplayOptions{From: from, Inclusive: req.To.Inclusive, Database: req.Options["backup.database"], BinDir: req.Target.Settings["bin_dir"],
		CheckOnly: req.Options[api.OptionReplayCheck] == "true"}
	physical := req.Target.DSN == "" && req.Target.DataDir != ""
	if !physical && o.Database == "" {
		cfg, err := dsn(req.Target).Config()
		if err != nil {
			return api.ReplayResult{}, err
		}
		o.Database = cfg.DBName
	}
	switch to := req.To; {
	case to.IsLatest():
	case !to.Time.IsZero():
		o.StopTime = to.Time
	case !to.Position.IsZero():
		p, err := myengine.ParseToken(to.Position.Epoch, to.Position.Token)
		if err != nil {
			if p, err = myengine.ParseText(to.Position.Text); err != nil {
				return api.ReplayResult{}, fmt.Errorf("recovery target %s: %w", to.Position, err)
			}
		}
		o.StopPos = p
	case to.Txn != "":
		o.StopGTID = to.Txn // a MariaDB GTID position, parsed before any log is read
	default:
		return api.ReplayResult{}, checkTarget(to)
	}
	fetch := func(ctx context.Context, after myengine.Pos) (myengine.Pos, myengine.Pos, io.ReadCloser, error) {
		seg, r, err := src.Fetch(ctx, api.SegmentQuery{After: Position(after), Stream: req.Stream})
		if errors.Is(err, api.ErrNoSegment) {
			return myengine.Pos{}, myengine.Pos{}, nil, myengine.ErrNoMoreLog
		}
		if err != nil {
			return myengine.Pos{}, myengine.Pos{}, nil, err
		}
		start, err1 := myengine.ParseToken(seg.Start.Epoch, seg.Start.Token)
		end, err2 := myengine.ParseToken(seg.End.Epoch, seg.End.Token)
		if err := errors.Join(err1, err2); err != nil {
			r.Close()
			return myengine.Pos{}, myengine.Pos{}, nil, fmt.Errorf("archived segment %s: %w", seg.Name, err)
		}
		return start, end, r, nil
	}
	var res *myengine.Replayed
	if physical {
		res, err = myengine.ReplayDataDir(ctx, req.Target.DataDir, o, fetch)
	} else {
		res, err = myengine.Replay(ctx, dsn(req.Target), o, fetch)
	}
	if err != nil {
		return api.ReplayResult{}, err
	}
	if physical && !o.CheckOnly {
		// The replay server's writes (tables, redo log, its buffer pool
		// dump) are durable too before the restore is done.
		if err := durable.Sync(req.Target.DataDir); err != nil {
			return api.ReplayResult{}, fmt.Errorf("replay: %w", err)
		}
	}
	return api.ReplayResult{Reached: Position(res.Pos), ReachedTime: res.Time,
		Metadata: map[string]string{"segments": strconv.Itoa(res.Segments)}}, nil
}

// checkTarget refuses the recovery targets Replay cannot reach.
func checkTarget(to api.RecoveryTarget) error {
	switch {
	case to.Name != "":
		return fmt.Errorf("MySQL has no named restore points (%q); give --to-time or --to-position", to.Name)
	}
	return nil
}

// The entry a physical backup is stored as: the backup tool's xbstream,
// as it wrote it.
const physicalEntry = "backup.xbstream"

// PhysicalBackup runs mariadb-backup (xtrabackup for MySQL) beside the
// server with --stream=xbstream and sends its stream as one entry,
// backup.xbstream, as it arrives. The copy is consistent at the binlog
// position the tool read while commits were blocked
// (xtrabackup_binlog_info).
func (e *Engine) PhysicalBackup(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	if err := api.CheckOptions("a physical backup", req.Options, "tmp_dir", "parallel"); err != nil {
		return api.BackupResult{}, err
	}
	o := myengine.PhysicalOptions{BinDir: req.Target.Settings["bin_dir"], TmpDir: req.Options["tmp_dir"], Lineage: req.Target.Settings["lineage"],
		DataDir: req.Target.DataDir}
	if v := req.Options["parallel"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return api.BackupResult{}, fmt.Errorf("option parallel=%q: want a positive number", v)
		}
		o.Parallel = n
	}
	open := func() (io.WriteCloser, error) {
		return sink.Create(ctx, api.Entry{Name: physicalEntry, Size: -1, Kind: "xbstream"})
	}
	res, err := myengine.PhysicalBackup(ctx, dsn(req.Target), open, o)
	if err != nil {
		return api.BackupResult{}, err
	}
	if res.Start, err = numberEpoch(ctx, req.Target, req.Archived, res.Start); err != nil {
		return api.BackupResult{}, err
	}
	res.Consistent.Epoch, res.Consistent.Server = res.Start.Epoch, res.Start.Server
	meta := map[string]string{
		"format":      "xbstream",
		"tool":        res.Tool,
		"datadir":     res.DataDir,
		"gtid":        res.Consistent.GTID,
		"binlog_file": res.Consistent.File,
		"binlog_pos":  strconv.FormatUint(uint64(res.Consistent.Pos), 10),
	}
	for _, name := range []string{myengine.CheckpointsFile, myengine.BackupConfFile} {
		if b, ok := res.Meta[name]; ok {
			meta[name] = string(b)
		}
	}
	return api.BackupResult{
		Start: Position(res.Start), Consistent: Position(res.Consistent),
		StartTime: res.StartTime, ConsistentTime: res.ConsistentTime,
		ServerVersion: res.Info.Version, SystemID: res.Info.Lineage, Metadata: meta,
	}, nil
}

// PhysicalRestore unpacks backup.xbstream straight from the stream into
// the empty data directory, prepares it in place (mariadb-backup
// --prepare) and gives the files to the user who will run the server. A
// server started on it holds the data as of the backup's consistent
// position; archived binlog is applied after it by Replay.
func (e *Engine) PhysicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	if err := api.CheckOptions("a physical restore", req.Options, "use_memory", api.OptionSnapshotData); err != nil {
		return api.RestoreResult{}, err
	}
	dataDir := req.Target.DataDir
	if dataDir == "" {
		return api.RestoreResult{}, errors.New("physical restore needs target.data_dir")
	}
	// Refused here, before anything is written, rather than by the Replay
	// that follows.
	if err := checkTarget(req.To); err != nil {
		return api.RestoreResult{}, err
	}
	owner, err := runAs(req.RunAs)
	if err != nil {
		return api.RestoreResult{}, err
	}
	if req.Options[api.OptionSnapshotData] == "true" {
		return snapshotRestore(req, owner)
	}
	extracted := false
	for {
		ent, r, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return api.RestoreResult{}, err
		}
		if ent.Name != physicalEntry || extracted {
			return api.RestoreResult{}, fmt.Errorf("physical restore: unexpected entry %q; a MySQL physical backup holds one %s", ent.Name, physicalEntry)
		}
		if _, _, err := myengine.ExtractXBStream(ctx, dataDir, r, myengine.ExtractOptions{}); err != nil {
			return api.RestoreResult{}, err
		}
		extracted = true
	}
	if !extracted {
		return api.RestoreResult{}, fmt.Errorf("physical restore: the backup has no %s", physicalEntry)
	}
	po := myengine.PrepareOptions{BinDir: req.Target.Settings["bin_dir"], Tool: req.Backup.Metadata["tool"], UseMemory: req.Options["use_memory"]}
	if err := myengine.Prepare(ctx, dataDir, po); err != nil {
		return api.RestoreResult{}, err
	}
	res := api.RestoreResult{Position: req.Backup.Consistent, ConsistentTime: req.Backup.ConsistentTime}
	if owner != nil {
		if err := myengine.Chown(dataDir, *owner); err != nil {
			return api.RestoreResult{}, fmt.Errorf("physical restore: %w", err)
		}
		res.Owner = &api.FileOwner{UID: uint32(owner.UID), GID: uint32(owner.GID)}
	}
	// Durable before the restore says it is done (package durable).
	if err := durable.Sync(dataDir); err != nil {
		return api.RestoreResult{}, fmt.Errorf("physical restore: %w", err)
	}
	return res, nil
}

// snapshotRestore takes a data directory restored from a snapshot
// backup's volume (its files as the server left them under the freeze)
// as it is: a server started on it recovers InnoDB from its redo log to
// the frozen position, from which Replay applies archived binlog. It
// only checks that the directory is a server's and gives its files to
// the user who will run the server.
func snapshotRestore(req api.RestoreRequest, owner *myengine.Owner) (api.RestoreResult, error) {
	dataDir := req.Target.DataDir
	if _, err := os.Stat(filepath.Join(dataDir, "mysql")); err != nil {
		where := "the volume restored from the snapshot"
		if d := req.Backup.Metadata["datadir"]; d != "" {
			where = "the server's data directory " + d + " in " + where
		}
		return api.RestoreResult{}, fmt.Errorf("%s holds no MySQL/MariaDB data directory (no mysql/ system schema): give --data-dir as %s", dataDir, where)
	}
	res := api.RestoreResult{Position: req.Backup.Consistent, ConsistentTime: req.Backup.ConsistentTime}
	if owner != nil {
		if err := myengine.Chown(dataDir, *owner); err != nil {
			return api.RestoreResult{}, fmt.Errorf("snapshot restore: %w", err)
		}
		res.Owner = &api.FileOwner{UID: uint32(owner.UID), GID: uint32(owner.GID)}
	}
	return res, nil
}

// runAs resolves the user that will run the restored server. Files
// restored as root belong to "mysql" unless told otherwise; a restore by
// another user keeps its own files.
func runAs(name string) (*myengine.Owner, error) {
	if name == "" {
		if os.Geteuid() != 0 {
			return nil, nil
		}
		name = "mysql"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q to run the restored server: %w; name another with --owner", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	return &myengine.Owner{UID: uid, GID: gid}, nil
}

// Freeze blocks commits for a volume snapshot in a session the plugin
// keeps: MariaDB 10.4+ BACKUP STAGE up to BLOCK_COMMIT, else FLUSH TABLES
// WITH READ LOCK. The lease is enforced by api.Serve; myengine's own lease
// is only a backstop for a plugin that outlives its host. The plugin's
// death ends the session, and the server releases the lock.
//
// The position gets the epoch a backup taken now would (numberEpoch, from
// req.Archived). It is numbered before the lock is taken, so that the
// lookups it needs (SHOW BINARY LOGS) neither lengthen the freeze nor
// wait behind it; only a RESET MASTER or a failover in between could
// change it, and either would also change the server the snapshot is of.
func (e *Engine) Freeze(ctx context.Context, req api.FreezeRequest) (api.Frozen, error) {
	o := myengine.FreezeOptions{Lease: 24 * time.Hour}
	if v := req.Target.Settings["lock_wait_seconds"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return api.Frozen{}, fmt.Errorf("setting lock_wait_seconds=%q: want a positive number", v)
		}
		o.LockWait = time.Duration(n) * time.Second
	}
	epoch, server, err := epochOf(ctx, req.Target, req.Archived)
	if err != nil {
		return api.Frozen{}, fmt.Errorf("freeze: %w", err)
	}
	fr, err := myengine.Freeze(ctx, dsn(req.Target), o)
	if err != nil {
		return api.Frozen{}, err
	}
	fr.Pos.Epoch, fr.Pos.Server = epoch, server
	e.mu.Lock()
	e.frozen[req.LeaseID] = fr
	e.mu.Unlock()
	slog.Info("frozen", "lease", req.LeaseID, "method", fr.Method, "position", fr.Pos.Text())
	return api.Frozen{Position: Position(fr.Pos), ConsistentTime: fr.Time}, nil
}

// Thaw releases the lock. A snapshot taken under it is crash-consistent at
// the returned position: the server started on it recovers InnoDB from its
// redo log, and its binlog ends at that position.
func (e *Engine) Thaw(ctx context.Context, leaseID string) (api.Thawed, error) {
	e.mu.Lock()
	fr := e.frozen[leaseID]
	delete(e.frozen, leaseID)
	e.mu.Unlock()
	if fr == nil {
		return api.Thawed{}, fmt.Errorf("no freeze under lease %s", leaseID)
	}
	if err := fr.Thaw(ctx); err != nil {
		fr.Abort()
		return api.Thawed{}, err
	}
	return api.Thawed{Consistent: Position(fr.Pos), ConsistentTime: fr.Time, Metadata: map[string]string{
		"method": fr.Method, "binlog_file": fr.Pos.File, "binlog_pos": strconv.FormatUint(uint64(fr.Pos.Pos), 10), "gtid": fr.Pos.GTID,
		"datadir": fr.DataDir,
	}}, nil
}

// replayFrom reads the position a replay starts after: its token, or,
// when it has none, its text. A snapshot backup's positions are recorded by
// the controller from the sidecar's Thaw answer, which carries epoch,
// offset and text but no token.
func replayFrom(p api.Position) (myengine.Pos, error) {
	if len(p.Token) > 0 || p.Text == "" {
		return myengine.ParseToken(p.Epoch, p.Token)
	}
	pos, err := myengine.ParseText(p.Text)
	if err != nil {
		return myengine.Pos{}, err
	}
	if pos.Epoch == 0 {
		pos.Epoch = p.Epoch
	}
	return pos, nil
}

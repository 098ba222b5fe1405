// Package postgres adapts pgengine, Amber's PostgreSQL knowledge, to the
// plugin contract (plugins/api). cmd/amber-plugin-postgres serves it.
//
// Options it reads:
//   - Target.Settings["bin_dir"]: directory of pg_dump/pg_restore/psql.
//   - LogicalDump options "workers" (pg_dump processes reading table data
//     at once from one exported snapshot, default 1: one pg_dump, one
//     entry), "globals" ("true": pg_dumpall --globals-only first),
//     "databases" ("all" or a comma-separated list: those databases of the
//     server instead of the DSN's, each restored into the database of its
//     name) and "spool_dir" (where a table read while another is sent
//     waits).
//   - LogicalRestore options "no_owner", "no_privileges", "clean" ("true";
//     clean only for single-entry dumps), "restore_workers" (sessions
//     loading data at once, default 2), "restore_split_bytes" (a table's
//     data entry, or a single-entry dump, this large or larger is loaded
//     by all of those sessions at once; default 64 MiB, 0 never),
//     "spool_dir", "globals"
//     ("false": leave the backup's roles and tablespaces out), and the
//     host's api.ExportPathOption (write one SQL script for psql).
//   - PhysicalBackup options "exclude_wal", "spread_checkpoint" ("true"),
//     "max_rate_kbps". With Target.DataDir set, the plugin reads the data
//     directory itself (pgengine.FileBackup) instead of running
//     BASE_BACKUP; "workers" then says how many files are read at once.
//   - Archive options "slot" (default "amber") and "synchronous" ("on":
//     store WAL as soon as it arrives, report each durable position at
//     once); ArchiveRequest.FlushInterval bounds how long WAL waits before
//     it is sent as a partial segment (each flush sends only the bytes new
//     since the previous one).
//   - PhysicalRestore: the typed recovery target, log command, RunAs and
//     KeepArchiving of the request become recovery_target_*,
//     restore_command, file ownership and archive_mode; options
//     "recovery_target_immediate" ("true": stop once consistent) and
//     "setting.<name>" (any postgresql.auto.conf setting).
//
// Positions: epoch = timeline, offset = LSN (see logfiles.go).
//
// Like every plugin it must never import sidecar/ or controller/.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/postgres/pgengine"
)

// Version is the plugin's version.
const Version = "0.1.0"

// Engine implements api.Engine for PostgreSQL.
type Engine struct {
	api.Unsupported

	mu     sync.Mutex
	frozen map[string]*pgengine.Frozen
}

var _ api.Engine = (*Engine)(nil)

// New returns the PostgreSQL engine.
func New() *Engine { return &Engine{frozen: map[string]*pgengine.Frozen{}} }

func (e *Engine) Info(context.Context) (api.Info, error) {
	return api.Info{
		Engine:        "postgres",
		PluginVersion: Version,
		Capabilities: []api.Capability{api.LogicalDump, api.LogicalRestore, api.PhysicalBackup,
			api.PhysicalRestore, api.Freeze, api.Archive, api.LogFiles, api.FileRecords},
		// An incremental BASE_BACKUP uploads the previous backup's manifest.
		PreviousEntries:  []string{pgengine.ManifestEntry},
		SupportedServers: "PostgreSQL 10 and newer (tested with 13 to 18; logical mode with 15)",
	}, nil
}

func dsn(t api.Target) pgengine.DSN { return pgengine.DSN(string(t.DSN)) }

func (e *Engine) Probe(ctx context.Context, t api.Target) (api.Probe, error) {
	info, err := pgengine.Probe(ctx, dsn(t))
	if info == nil {
		return api.Probe{}, err
	}
	p := api.Probe{
		ServerVersion: info.ServerVersion,
		Role:          api.RolePrimary,
		SystemID:      info.SystemID,
		Position:      Position(uint32(info.Timeline), info.CurrentLSN),
		Healthy:       err == nil,
		Facts: map[string]string{
			"wal_level":        info.WALLevel,
			"wal_segment_size": strconv.FormatInt(info.WALSegmentSize, 10),
			"major":            strconv.Itoa(info.Major),
			"timeline":         strconv.Itoa(int(info.Timeline)),
			"user":             info.User,
		},
	}
	if info.Standby {
		p.Role = api.RoleReplica
		p.ReplicationLag = info.Lag
		p.Facts["wal_receiver"] = info.WALReceiver
		if info.LagUnknown != "" {
			p.Facts["lag_unknown"] = info.LagUnknown
		}
	}
	if err != nil {
		p.Detail = err.Error()
	}
	return p, nil
}

func flag(opts map[string]string, key string) bool {
	b, _ := strconv.ParseBool(opts[key])
	return b
}

// LogicalDump dumps the target's database. With option workers above 1
// (the default is 2) it is pgengine.ParallelDump: pre-data, data and
// post-data entries, the data read by that many pg_dump processes sharing
// one exported snapshot, consistent at the LSN read in the snapshot's
// transaction. With workers=1 it is one pg_dump --format=custom entry
// "<database>.dump", consistent at pg_dump's own snapshot (the position
// recorded is the one read just before it starts). Option globals=true
// adds pg_dumpall --globals-only (roles, tablespaces) as "globals.sql".
func (e *Engine) LogicalDump(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	if err := api.CheckOptions("a logical backup", req.Options, "workers", "globals", "spool_dir", "databases"); err != nil {
		return api.BackupResult{}, err
	}
	if len(req.Databases) > 0 {
		return api.BackupResult{}, errors.New("postgres: dumping a list of databases is not supported yet; dump the DSN's database")
	}
	// One pg_dump by default: on the machines measured (docs/engines/
	// postgres.md, "Speed") the split layout was slower, and the single
	// entry is what stock pg_restore reads from --stdout.
	workers := 1
	if v := req.Options["workers"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return api.BackupResult{}, fmt.Errorf("option workers=%q: want a number from 1 to 64", v)
		}
		workers = n
	}
	globals := false
	if v := req.Options["globals"]; v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return api.BackupResult{}, fmt.Errorf("option globals=%q: want true or false", v)
		}
		globals = b
	}
	db := databaseName(string(req.Target.DSN))
	binDir := req.Target.Settings["bin_dir"]
	if v := req.Options["databases"]; v != "" {
		return e.dumpDatabases(ctx, req, sink, v, workers, globals)
	}
	if workers > 1 {
		start := time.Now()
		res, err := pgengine.ParallelDump(ctx, dsn(req.Target), db, dumpSink{sink}, pgengine.ParallelDumpOptions{
			BinDir: binDir, Workers: workers, SpoolDir: req.Options["spool_dir"], Globals: globals})
		if err != nil {
			return api.BackupResult{}, err
		}
		pos := Position(uint32(res.Info.Timeline), res.LSN)
		return api.BackupResult{
			Start: pos, Consistent: pos, StartTime: start, ConsistentTime: res.Time,
			ServerVersion: res.Info.ServerVersion, SystemID: res.Info.SystemID,
			Metadata: map[string]string{"format": "pg_dump-sections", "database": db,
				"workers": strconv.Itoa(workers), "tables": strconv.Itoa(res.Tables),
				"entries": strconv.Itoa(len(res.Entries)), "globals": strconv.FormatBool(globals)},
		}, nil
	}
	info, err := pgengine.Probe(ctx, dsn(req.Target))
	if info == nil {
		return api.BackupResult{}, err
	}
	start := time.Now()
	pos := Position(uint32(info.Timeline), info.CurrentLSN)
	if globals {
		if err := pgengine.DumpGlobals(ctx, dsn(req.Target), info, binDir, func() (io.WriteCloser, error) {
			return sink.Create(ctx, api.Entry{Name: "globals.sql", Size: -1, Kind: "sql",
				Metadata: map[string]string{"section": pgengine.SectionGlobals}})
		}); err != nil {
			return api.BackupResult{}, err
		}
	}
	name := db + ".dump"
	w, err := sink.Create(ctx, api.Entry{Name: name, Size: -1, Kind: "pg_dump-custom"})
	if err != nil {
		return api.BackupResult{}, err
	}
	if err := pgengine.LogicalDump(ctx, dsn(req.Target), w, pgengine.DumpOptions{BinDir: binDir}); err != nil {
		return api.BackupResult{}, err
	}
	if err := w.Close(); err != nil {
		return api.BackupResult{}, err
	}
	return api.BackupResult{
		Start: pos, Consistent: pos, StartTime: start, ConsistentTime: start,
		ServerVersion: info.ServerVersion, SystemID: info.SystemID,
		Metadata: map[string]string{"format": "pg_dump-custom", "entry": name, "globals": strconv.FormatBool(globals)},
	}, nil
}

// dumpDatabases dumps several databases of the target's server
// (pgengine.ParallelDump with --create, one after another, globals first
// when asked): which is "all" (every database that takes connections but
// templates) or a comma-separated list. Each database is consistent at its
// own snapshot; the backup's start is the first one's position, its
// consistent point the last one's.
func (e *Engine) dumpDatabases(ctx context.Context, req api.BackupRequest, sink api.EntrySink, which string, workers int, globals bool) (api.BackupResult, error) {
	var dbs []string
	if which == "all" {
		var err error
		if dbs, err = pgengine.ListDatabases(ctx, dsn(req.Target)); err != nil {
			return api.BackupResult{}, err
		}
	} else {
		for _, d := range strings.Split(which, ",") {
			if d = strings.TrimSpace(d); d == "" {
				return api.BackupResult{}, fmt.Errorf("option databases=%q: want all or a comma-separated list of database names", which)
			}
			if !slices.Contains(dbs, d) {
				dbs = append(dbs, d)
			}
		}
	}
	if len(dbs) == 0 {
		return api.BackupResult{}, errors.New("option databases: the server has no database to dump")
	}
	var out api.BackupResult
	tables := 0
	for i, db := range dbs {
		start := time.Now()
		res, err := pgengine.ParallelDump(ctx, pgengine.WithDatabase(dsn(req.Target), db), db, dumpSink{sink}, pgengine.ParallelDumpOptions{
			BinDir: req.Target.Settings["bin_dir"], Workers: workers, SpoolDir: req.Options["spool_dir"],
			Globals: globals && i == 0, Create: true})
		if err != nil {
			return api.BackupResult{}, fmt.Errorf("database %s: %w", db, err)
		}
		pos := Position(uint32(res.Info.Timeline), res.LSN)
		if i == 0 {
			out = api.BackupResult{Start: pos, StartTime: start, ServerVersion: res.Info.ServerVersion, SystemID: res.Info.SystemID}
		}
		out.Consistent, out.ConsistentTime = pos, res.Time
		tables += res.Tables
	}
	out.Metadata = map[string]string{"format": "pg_dump-sections", "databases": strings.Join(dbs, ","),
		"workers": strconv.Itoa(workers), "tables": strconv.Itoa(tables), "globals": strconv.FormatBool(globals)}
	return out, nil
}

// dumpSink adapts api.EntrySink to pgengine.EntryCreator; the section,
// database and table go into the entry's metadata.
type dumpSink struct{ sink api.EntrySink }

func (s dumpSink) Create(ctx context.Context, e pgengine.DumpEntry) (io.WriteCloser, error) {
	meta := map[string]string{"section": e.Section}
	if e.Database != "" && e.Section != pgengine.SectionGlobals {
		meta["database"] = e.Database
	}
	if e.Table != "" {
		meta["table"] = e.Table
	}
	return s.sink.Create(ctx, api.Entry{Name: e.Name, Size: -1, Kind: e.Kind, Metadata: meta})
}

// databaseName extracts the database from a URL or key=value DSN, for
// naming the dump entry.
func databaseName(d string) string {
	name := "postgres"
	if strings.Contains(d, "://") {
		rest := d[strings.Index(d, "://")+3:]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			db := rest[i+1:]
			if j := strings.IndexAny(db, "?#"); j >= 0 {
				db = db[:j]
			}
			if db != "" {
				name = db
			}
		}
	} else {
		for _, f := range strings.Fields(d) {
			if v, ok := strings.CutPrefix(f, "dbname="); ok && v != "" {
				name = strings.Trim(v, "'")
			}
		}
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, name)
}

// LogicalRestore loads the entries into the target's database
// (pgengine.RestoreSections): a single-entry dump of 64 MiB or more
// ("restore_split_bytes") with "restore_workers" sessions (default 2)
// loading its rows as it streams, a smaller one through one pg_restore, a
// sectioned one with "restore_workers" pg_restore sessions loading data
// entries at once. With api.ExportPathOption it writes the
// dump as one SQL script that psql loads (pgengine.ExportSQL) instead.
func (e *Engine) LogicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	if err := api.CheckOptions("a logical restore", req.Options, api.ExportPathOption,
		"no_owner", "no_privileges", "clean", "restore_workers", "restore_split_bytes", "spool_dir", "globals"); err != nil {
		return api.RestoreResult{}, err
	}
	next := func(ctx context.Context) (pgengine.DumpEntry, io.Reader, error) {
		ent, r, err := src.Next(ctx)
		if err != nil {
			return pgengine.DumpEntry{}, nil, err
		}
		return pgengine.DumpEntry{Name: ent.Name, Kind: ent.Kind, Section: ent.Metadata["section"],
			Database: ent.Metadata["database"], Table: ent.Metadata["table"], Size: ent.Size}, r, nil
	}
	res := api.RestoreResult{Position: req.Backup.Consistent, ConsistentTime: req.Backup.ConsistentTime}
	if path := req.Options[api.ExportPathOption]; path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return api.RestoreResult{}, fmt.Errorf("export: %w", err)
		}
		err = pgengine.ExportSQL(ctx, next, f, req.Target.Settings["bin_dir"], req.Options["spool_dir"], req.Backup.Metadata["databases"] != "")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return api.RestoreResult{}, err
		}
		return res, nil
	}
	opts := pgengine.SectionedRestoreOptions{
		LogicalRestoreOptions: pgengine.LogicalRestoreOptions{
			BinDir:       req.Target.Settings["bin_dir"],
			NoOwner:      flag(req.Options, "no_owner"),
			NoPrivileges: flag(req.Options, "no_privileges"),
			Clean:        flag(req.Options, "clean"),
		},
		Workers:   2,
		SpoolDir:  req.Options["spool_dir"],
		Databases: req.Backup.Metadata["databases"] != "",
	}
	if v := req.Options["restore_workers"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return api.RestoreResult{}, fmt.Errorf("option restore_workers=%q: want a number from 1 to 64", v)
		}
		opts.Workers = n
	}
	if v := req.Options["restore_split_bytes"]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return api.RestoreResult{}, fmt.Errorf("option restore_split_bytes=%q: want a size in bytes (0: never split a table's load, nor load a single-entry dump with several sessions)", v)
		}
		opts.SplitBytes = n
		if n == 0 {
			opts.SplitBytes = -1
		}
	}
	if v := req.Options["globals"]; v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return api.RestoreResult{}, fmt.Errorf("option globals=%q: want true or false", v)
		}
		opts.SkipGlobals = !b
	}
	st, err := pgengine.RestoreSections(ctx, dsn(req.Target), next, opts)
	if err != nil {
		return api.RestoreResult{}, err
	}
	res.Metadata = map[string]string{
		"entries":         strconv.Itoa(st.Entries),
		"data_entries":    strconv.Itoa(st.DataEntries),
		"bytes":           strconv.FormatInt(st.Bytes, 10),
		"restore_workers": strconv.Itoa(opts.Workers),
	}
	return res, nil
}

// entrySink adapts api.EntrySink to pgengine.Sink.
type entrySink struct{ sink api.EntrySink }

func (s entrySink) Entry(ctx context.Context, name string, r io.Reader) error {
	kind := "file"
	if strings.HasSuffix(name, ".tar") {
		kind = "tar"
	}
	return s.sink.Entry(ctx, api.Entry{Name: name, Size: -1, Kind: kind}, r)
}

// tarSink adapts api.EntrySink to pgengine.EntrySink.
type tarSink struct{ sink api.EntrySink }

func (s tarSink) Create(ctx context.Context, name string) (io.WriteCloser, error) {
	w, err := s.sink.Create(ctx, api.Entry{Name: name, Size: -1, Kind: "tar"})
	if err != nil {
		return nil, err
	}
	if m, ok := w.(api.FileMarker); ok {
		mw := markWriter{WriteCloser: w, m: m}
		if fs, ok := w.(api.FileSender); ok {
			return sendWriter{mw, fs}, nil
		}
		return mw, nil
	}
	return w, nil
}

// sendWriter is a markWriter whose host reads files itself
// (pgengine.FileSender).
type sendWriter struct {
	markWriter
	s api.FileSender
}

func (w sendWriter) SendFile(f *os.File, off, length int64) error {
	return w.s.SendFile(f, off, length)
}

var _ pgengine.FileSender = sendWriter{}

// markWriter adapts api.FileMarker to pgengine.FileMarker.
type markWriter struct {
	io.WriteCloser
	m api.FileMarker
}

func (w markWriter) MarkFile(key, stamp string, length int64, reuse bool) error {
	return w.m.MarkFile(api.FileMark{Key: key, Stamp: stamp, Length: length, Reuse: reuse})
}

func (w markWriter) MarkPatch(key, stamp string, length int64, base string, keep int64, ranges []pgengine.Range) error {
	m := api.FileMark{Key: key, Stamp: stamp, Length: length, Base: base, Keep: keep, Ranges: make([]api.ByteRange, len(ranges))}
	for i, r := range ranges {
		m.Ranges[i] = api.ByteRange{Offset: r.Off, Length: r.Len}
	}
	return w.m.MarkFile(m)
}

var _ pgengine.PatchMarker = markWriter{}

// incrementalBase turns the host's record of an earlier backup into what an
// incremental BASE_BACKUP needs: nil unless it was a BASE_BACKUP with file
// records.
func incrementalBase(p *api.PreviousFiles) *pgengine.IncrementalBase {
	if p == nil || p.Result.Metadata["method"] != "" {
		return nil
	}
	out := &pgengine.IncrementalBase{SystemID: p.Result.SystemID, Manifest: p.Entries[pgengine.ManifestEntry],
		Records: map[string]map[string]pgengine.PreviousRecord{}}
	for _, f := range p.Files {
		m := out.Records[f.Entry]
		if m == nil {
			m = map[string]pgengine.PreviousRecord{}
			out.Records[f.Entry] = m
		}
		m[f.Key] = pgengine.PreviousRecord{Stamp: f.Stamp, Length: f.Length}
	}
	return out
}

// metaFileRef is the BackupResult.Metadata key of a file-level backup's
// FileRef (RFC 3339, nanoseconds).
const metaFileRef = "file_ref"

// previousFiles turns the host's record of an earlier backup into what
// FileBackup reuses: nil unless it was a file-level backup with a FileRef.
func previousFiles(p *api.PreviousFiles) *pgengine.PreviousFiles {
	if p == nil || p.Result.Metadata["method"] != "files" {
		return nil
	}
	ref, err := time.Parse(time.RFC3339Nano, p.Result.Metadata[metaFileRef])
	if err != nil {
		return nil
	}
	out := &pgengine.PreviousFiles{SystemID: p.Result.SystemID, Ref: ref, Records: map[string]map[string]pgengine.PreviousRecord{}}
	for _, f := range p.Files {
		m := out.Records[f.Entry]
		if m == nil {
			m = map[string]pgengine.PreviousRecord{}
			out.Records[f.Entry] = m
		}
		m[f.Key] = pgengine.PreviousRecord{Stamp: f.Stamp, Length: f.Length}
	}
	return out
}

// PhysicalBackup runs BASE_BACKUP and streams base.tar, one tar per
// tablespace and backup_manifest; with Target.DataDir it reads that data
// directory itself, with several workers, and streams the same tars
// (without a manifest).
func (e *Engine) PhysicalBackup(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	if err := api.CheckOptions("a physical backup", req.Options, "exclude_wal", "spread_checkpoint", "max_rate_kbps", "workers",
		"incremental"); err != nil {
		return api.BackupResult{}, err
	}
	incremental := req.Options["incremental"]
	switch incremental {
	case "", "off", "summaries":
	default:
		return api.BackupResult{}, fmt.Errorf("option incremental=%q: want summaries (PostgreSQL 17+ WAL summaries) or off", incremental)
	}
	if req.Target.DataDir != "" {
		if incremental == "summaries" {
			return api.BackupResult{}, errors.New("option incremental=summaries is for BASE_BACKUP: leave out the data directory; a backup that reads it reuses unchanged files by itself")
		}
		return e.fileBackup(ctx, req, sink)
	}
	if req.Options["workers"] != "" {
		return api.BackupResult{}, errors.New("option workers is for backups that read the data directory: give its path")
	}
	opts := pgengine.BackupOptions{
		Label:            req.Label,
		ExcludeWAL:       flag(req.Options, "exclude_wal"),
		SpreadCheckpoint: flag(req.Options, "spread_checkpoint"),
	}
	if v := req.Options["max_rate_kbps"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return api.BackupResult{}, fmt.Errorf("max_rate_kbps %q: %w", v, err)
		}
		opts.MaxRateKBps = n
	}
	info, err := pgengine.Probe(ctx, dsn(req.Target))
	if info == nil {
		return api.BackupResult{}, err
	}
	if req.FileRecords {
		opts.Records = tarSink{sink}
		if incremental == "summaries" {
			if opts.Incremental = incrementalBase(req.Previous); opts.Incremental == nil {
				slog.Warn("taking a full backup: there is no previous BASE_BACKUP with file records in the repository")
			}
		}
	} else if incremental == "summaries" {
		slog.Warn("taking a full backup: the host keeps no file records, so changed blocks cannot be applied")
	}
	res, err := pgengine.PhysicalBackup(ctx, dsn(req.Target), entrySink{sink}, opts)
	if err != nil {
		return api.BackupResult{}, err
	}
	if res.IncrementalFallback != "" {
		slog.Warn("taking a full backup instead of an incremental one", "reason", res.IncrementalFallback)
	}
	r := backupResult(info, res)
	r.Metadata["server_bytes"] = strconv.FormatInt(res.ServerBytes, 10)
	if res.Incremental {
		r.Metadata["incremental"] = "summaries"
		r.Metadata["files_sent"] = strconv.FormatInt(res.FilesRead, 10)
		r.Metadata["files_patched"] = strconv.FormatInt(res.FilesPatched, 10)
	}
	if res.IncrementalFallback != "" {
		r.Metadata["incremental_fallback"] = res.IncrementalFallback
	}
	return r, nil
}

// fileBackup reads req.Target.DataDir with pgengine.FileBackup.
func (e *Engine) fileBackup(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	for _, k := range []string{"exclude_wal", "max_rate_kbps"} {
		if req.Options[k] != "" {
			return api.BackupResult{}, fmt.Errorf("option %s is for BASE_BACKUP; a backup that reads the data directory takes only workers and spread_checkpoint", k)
		}
	}
	opts := pgengine.FileBackupOptions{Label: req.Label, SpreadCheckpoint: flag(req.Options, "spread_checkpoint"),
		Records: req.FileRecords}
	if req.FileRecords {
		opts.Previous = previousFiles(req.Previous)
	}
	if v := req.Options["workers"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return api.BackupResult{}, fmt.Errorf("workers %q: want a number from 1 to 64", v)
		}
		opts.Workers = n
	}
	info, err := pgengine.Probe(ctx, dsn(req.Target))
	if info == nil {
		return api.BackupResult{}, err
	}
	res, err := pgengine.FileBackup(ctx, dsn(req.Target), req.Target.DataDir, tarSink{sink}, opts)
	if err != nil {
		return api.BackupResult{}, err
	}
	r := backupResult(info, res)
	r.Metadata["method"] = "files"
	r.Metadata[metaFileRef] = res.FileRef.UTC().Format(time.RFC3339Nano)
	if req.FileRecords {
		r.Metadata["files_read"] = strconv.FormatInt(res.FilesRead, 10)
		r.Metadata["files_reused"] = strconv.FormatInt(res.FilesReused, 10)
	}
	return r, nil
}

func backupResult(info *pgengine.Info, res *pgengine.BackupResult) api.BackupResult {
	meta := map[string]string{
		SettingSegmentSize: strconv.FormatInt(info.WALSegmentSize, 10),
		"wal_included":     strconv.FormatBool(res.WALIncluded),
		"from_standby":     strconv.FormatBool(res.FromStandby),
		"major":            strconv.Itoa(res.Major),
		"timeline":         strconv.Itoa(int(res.Timeline)),
		"entries":          strings.Join(res.Entries, ","),
	}
	if !res.WALIncluded { // restoring it needs the archived WAL from its start
		meta[api.MetaLogFromStart] = "true"
	}
	for _, ts := range res.Tablespaces {
		meta["tablespace."+strconv.FormatUint(uint64(ts.OID), 10)] = ts.Location
	}
	return api.BackupResult{
		Start:          Position(uint32(res.StartTimeline), res.StartLSN),
		Consistent:     Position(uint32(res.StopTimeline), res.StopLSN),
		StartTime:      res.StartTime,
		ConsistentTime: res.ConsistentTime,
		ServerVersion:  res.ServerVersion,
		SystemID:       res.SystemID,
		Metadata:       meta,
	}
}

// PhysicalRestore extracts base.tar straight from the stream into the data
// directory; only the other entries (tablespaces, the backup manifest),
// which pgengine places once base.tar has said where they go, are spooled
// to a directory beside it.
func (e *Engine) PhysicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	if err := api.CheckOptions("a physical restore", req.Options, "recovery_target_immediate", api.OptionSnapshotData); err != nil {
		return api.RestoreResult{}, err
	}
	dataDir := req.Target.DataDir
	if dataDir == "" {
		return api.RestoreResult{}, errors.New("physical restore needs target.data_dir")
	}
	if req.Options[api.OptionSnapshotData] == "true" {
		return e.snapshotRestore(ctx, req)
	}
	spool, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dataDir)), ".amber-restore-")
	if err != nil {
		return api.RestoreResult{}, fmt.Errorf("physical restore: %w", err)
	}
	defer os.RemoveAll(spool)
	dir := pgengine.DirSink(spool)
	base := false
	for {
		ent, r, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return api.RestoreResult{}, err
		}
		if ent.Name == pgengine.BaseTar {
			if err := pgengine.ExtractBase(ctx, dataDir, r); err != nil {
				return api.RestoreResult{}, err
			}
			base = true
			continue
		}
		if err := dir.Entry(ctx, ent.Name, r); err != nil {
			return api.RestoreResult{}, fmt.Errorf("spool %s: %w", ent.Name, err)
		}
	}
	if !base {
		return api.RestoreResult{}, fmt.Errorf("physical restore: the backup has no %s", pgengine.BaseTar)
	}
	opts, err := restoreOptions(req)
	if err != nil {
		return api.RestoreResult{}, err
	}
	opts.BaseExtracted = true
	if err := pgengine.PhysicalRestore(ctx, dataDir, dir, opts); err != nil {
		return api.RestoreResult{}, err
	}
	res := api.RestoreResult{Position: req.Backup.Consistent, ConsistentTime: req.Backup.ConsistentTime}
	if opts.Owner != nil {
		res.Owner = &api.FileOwner{UID: uint32(opts.Owner.UID), GID: uint32(opts.Owner.GID)}
	}
	return res, nil
}

// snapshotRestore prepares a data directory restored from a volume
// snapshot taken under Freeze: the copy of a running server, as a
// non-exclusive backup sees it. It writes the thaw's backup_label (and
// tablespace_map), drops the running server's postmaster.pid and
// standby.signal, and configures recovery: the server replays archived WAL
// from the backup's start through its end to the target.
func (e *Engine) snapshotRestore(ctx context.Context, req api.RestoreRequest) (api.RestoreResult, error) {
	dataDir := req.Target.DataDir
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		return api.RestoreResult{}, fmt.Errorf("snapshot restore: %s holds no PostgreSQL data directory (no PG_VERSION): give the data directory inside the volume restored from the snapshot", dataDir)
	}
	label := false
	for _, f := range req.Backup.Files {
		if f.Name != "backup_label" && f.Name != "tablespace_map" {
			return api.RestoreResult{}, fmt.Errorf("snapshot restore: unexpected file %q in the backup's record", f.Name)
		}
		label = label || f.Name == "backup_label"
		mode := os.FileMode(f.Mode)
		if mode == 0 {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dataDir, f.Name), f.Content, mode); err != nil {
			return api.RestoreResult{}, fmt.Errorf("snapshot restore: %w", err)
		}
	}
	if !label {
		return api.RestoreResult{}, errors.New("snapshot restore: the backup's record has no backup_label (its thaw returned none)")
	}
	for _, name := range []string{"postmaster.pid", "postmaster.opts", "standby.signal"} {
		if err := os.Remove(filepath.Join(dataDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return api.RestoreResult{}, fmt.Errorf("snapshot restore: %w", err)
		}
	}
	opts, err := restoreOptions(req)
	if err != nil {
		return api.RestoreResult{}, err
	}
	opts.BaseExtracted = true
	if err := pgengine.PhysicalRestore(ctx, dataDir, noEntries{}, opts); err != nil {
		return api.RestoreResult{}, err
	}
	res := api.RestoreResult{Position: req.Backup.Consistent, ConsistentTime: req.Backup.ConsistentTime}
	if opts.Owner != nil {
		res.Owner = &api.FileOwner{UID: uint32(opts.Owner.UID), GID: uint32(opts.Owner.GID)}
	}
	return res, nil
}

// noEntries is the source of a snapshot restore: the data is in place.
type noEntries struct{}

func (noEntries) Entries(context.Context) ([]string, error) { return nil, nil }
func (noEntries) Open(_ context.Context, name string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("a snapshot restore has no entry %s", name)
}

func restoreOptions(req api.RestoreRequest) (pgengine.RestoreOptions, error) {
	var opts pgengine.RestoreOptions
	owner, err := runAs(req.RunAs)
	if err != nil {
		return opts, err
	}
	opts.Owner = owner
	if len(req.LogCommand) == 0 {
		if !req.To.IsLatest() {
			return opts, errors.New("a recovery target needs archived WAL: the request has no log command")
		}
		return opts, nil
	}
	segSize := req.Backup.Metadata[SettingSegmentSize]
	if segSize == "" {
		segSize = strconv.Itoa(16 << 20)
	}
	cmd := append(slices.Clone(req.LogCommand), "--setting="+SettingSegmentSize+"="+segSize)
	quoted := make([]string, len(cmd))
	for i, w := range cmd {
		quoted[i] = shellQuote(w)
	}
	rec := &pgengine.Recovery{
		RestoreCommand: strings.Join(quoted, " ") + " %f %p",
		Immediate:      flag(req.Options, "recovery_target_immediate"),
		Settings:       map[string]string{},
	}
	if len(req.LogDoneCommand) > 0 {
		done := make([]string, len(req.LogDoneCommand))
		for i, w := range req.LogDoneCommand {
			done[i] = shellQuote(w)
		}
		rec.Settings["recovery_end_command"] = strings.Join(done, " ")
	}
	to := req.To
	switch {
	case !to.Time.IsZero():
		rec.TargetTime = to.Time
	case !to.Position.IsZero():
		rec.TargetLSN = pgengine.LSN(to.Position.Offset)
		if to.Position.Epoch != 0 {
			rec.TargetTimeline = strconv.FormatUint(uint64(to.Position.Epoch), 10)
		}
	case to.Txn != "":
		if _, err := strconv.ParseUint(to.Txn, 10, 64); err != nil {
			return opts, fmt.Errorf("transaction %q is not a PostgreSQL transaction id (a number)", to.Txn)
		}
		rec.TargetXID = to.Txn
	case to.Name != "":
		rec.TargetName = to.Name
	}
	rec.Exclusive = !to.IsLatest() && !to.Inclusive
	for k, v := range req.Options {
		if name, ok := strings.CutPrefix(k, "setting."); ok {
			rec.Settings[name] = v
		}
	}
	if !req.KeepArchiving {
		// A restored copy shares the original's system identifier: left
		// archiving, it would write its own timeline into the original's
		// archive. Archiving is turned on again once it replaces it.
		rec.Settings["archive_mode"] = "off"
	}
	opts.Recovery = rec
	return opts, nil
}

// runAs resolves the user that will run the restored server. Files restored
// as root belong to "postgres" unless told otherwise; a non-root restore
// keeps its own user.
func runAs(name string) (*pgengine.Owner, error) {
	if name == "" {
		if os.Geteuid() != 0 {
			return &pgengine.Owner{UID: os.Geteuid(), GID: os.Getegid()}, nil
		}
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q to run the restored server: %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	return &pgengine.Owner{UID: uid, GID: gid}, nil
}

// shellQuote quotes w for the shell PostgreSQL runs restore_command with.
func shellQuote(w string) string {
	if w != "" && strings.Trim(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" && !strings.Contains(w, "%") {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'"'"'`) + "'"
}

// Freeze starts a non-exclusive backup (pg_backup_start) in its own
// session. The lease is enforced by api.Serve; pgengine's own lease is only
// a backstop for a plugin that outlives its host.
func (e *Engine) Freeze(ctx context.Context, req api.FreezeRequest) (api.Frozen, error) {
	fr, err := pgengine.Freeze(ctx, dsn(req.Target), pgengine.FreezeOptions{Label: req.Label, Lease: 24 * time.Hour})
	if err != nil {
		return api.Frozen{}, err
	}
	e.mu.Lock()
	e.frozen[req.LeaseID] = fr
	e.mu.Unlock()
	return api.Frozen{Position: Position(uint32(fr.Timeline), fr.StartLSN), ConsistentTime: fr.Started}, nil
}

// Thaw runs pg_backup_stop and returns backup_label and tablespace_map.
func (e *Engine) Thaw(ctx context.Context, leaseID string) (api.Thawed, error) {
	e.mu.Lock()
	fr := e.frozen[leaseID]
	delete(e.frozen, leaseID)
	e.mu.Unlock()
	if fr == nil {
		return api.Thawed{}, fmt.Errorf("no freeze under lease %s", leaseID)
	}
	res, err := fr.Thaw(ctx)
	if err != nil {
		fr.Abort()
		return api.Thawed{}, err
	}
	files := []api.File{{Name: "backup_label", Content: []byte(res.BackupLabel), Mode: 0o600}}
	if res.TablespaceMap != "" {
		files = append(files, api.File{Name: "tablespace_map", Content: []byte(res.TablespaceMap), Mode: 0o600})
	}
	return api.Thawed{Consistent: Position(uint32(fr.Timeline), res.StopLSN), ConsistentTime: res.StopTime, Files: files}, nil
}

// Archive streams WAL from a physical replication slot. The slot advances
// only to the durable positions the host sends.
func (e *Engine) Archive(ctx context.Context, req api.ArchiveRequest, out api.SegmentSink, durable <-chan api.Position) error {
	if err := api.CheckOptions("archiving", req.Options, "slot", "synchronous"); err != nil {
		return err
	}
	opts := pgengine.ArchiverOptions{
		Slot:            req.Options["slot"],
		PartialInterval: req.FlushInterval,
		Synchronous:     req.Options["synchronous"] == "on",
		Logger:          slog.Default(),
	}
	if !req.Start.IsZero() {
		tl, lsn, err := ParsePosition(req.Start)
		if err != nil {
			return fmt.Errorf("archive start: %w", err)
		}
		opts.From, opts.Timeline = lsn, tl
	}
	// Each timeline's history file arrives before its WAL; it says where
	// the timeline branched off its parent.
	branches := map[uint32]api.Position{}
	opts.OnSegment = func(ctx context.Context, s pgengine.Segment) error {
		h := api.SegmentHeader{Name: s.Name, Start: Position(s.Timeline, s.StartLSN)}
		t := api.SegmentTrailer{End: Position(s.Timeline, s.EndLSN), Partial: s.Partial, LastCommit: s.LastCommit}
		if s.History {
			b, err := historyBranch(s.Data)
			if err != nil {
				return fmt.Errorf("%s: %w", s.Name, err)
			}
			branches[s.Timeline] = b
			h.Start, t.End = Position(s.Timeline, 0), Position(s.Timeline, 0)
		} else {
			// Served back as a whole segment, zero-filled past what was sent.
			t.FileSize = s.SegmentSize
		}
		h.Branch = branches[s.Timeline]
		w, err := out.Begin(ctx, h)
		if err != nil {
			return err
		}
		if _, err := w.Write(s.Data); err != nil {
			_ = w.Abort(err.Error())
			return err
		}
		return w.Finish(t)
	}
	a := pgengine.NewArchiver(dsn(req.Target), opts)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	for {
		select {
		case p, ok := <-durable:
			if !ok {
				stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				return a.Stop(stopCtx)
			}
			if _, lsn, err := ParsePosition(p); err == nil {
				a.Durable(lsn)
			}
		case err := <-runErr:
			if err == nil && ctx.Err() != nil {
				err = ctx.Err()
			}
			return err
		}
	}
}

package pgengine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Sink receives the named byte streams of a backup. Entry must read r to EOF
// (or return an error); r is only valid until Entry returns. Entries arrive
// one at a time and are never buffered whole by pgengine.
type Sink interface {
	Entry(ctx context.Context, name string, r io.Reader) error
}

// Entry names of a physical backup.
const (
	BaseTar        = "base.tar"        // the data directory, with pg_wal/ holding start..stop WAL
	ManifestEntry  = "backup_manifest" // PostgreSQL's backup manifest (JSON)
	tablespaceMap  = "tablespace_map"
	backupLabel    = "backup_label"
	recoverySignal = "recovery.signal"
	autoConf       = "postgresql.auto.conf"
)

// TablespaceTar is the entry name of tablespace oid's archive.
func TablespaceTar(oid uint32) string { return strconv.FormatUint(uint64(oid), 10) + ".tar" }

// BackupOptions tune PhysicalBackup. The zero value is a sensible default:
// fast checkpoint, WAL included, manifest with CRC32C checksums.
type BackupOptions struct {
	Label            string // backup label; default "amber"
	SpreadCheckpoint bool   // wait for a spread checkpoint instead of requesting a fast one
	MaxRateKBps      int    // throttle the server (32..1048576 kB/s); 0 = unlimited
	// ExcludeWAL leaves the start..stop WAL out of base.tar. The backup is
	// then only restorable with a WAL archive covering StartLSN..StopLSN.
	ExcludeWAL bool
	NoManifest bool
	// Records, when set, takes the entries instead of PhysicalBackup's
	// sink, with every regular file of the archives marked as a file
	// record (its writers must implement FileMarker) stamped with the
	// lengths of its tar header and content, so a later backup can patch
	// it.
	Records EntrySink
	// Incremental, with Records (whose writers must then implement
	// PatchMarker), asks for an incremental BASE_BACKUP against this
	// earlier backup taken with Records: PostgreSQL 17+ with
	// summarize_wal=on sends only the blocks changed since, which are
	// applied to the earlier backup's files as patches, so the backup
	// stores, and restores as, whole files. When the server cannot (an
	// older one, summarize_wal off, another system, WAL summaries that do
	// not reach back to the earlier backup), a full backup is taken and
	// BackupResult.IncrementalFallback says why.
	Incremental *IncrementalBase

	incremental bool // add INCREMENTAL to BASE_BACKUP
}

// Tablespace is a user tablespace of the backed-up cluster.
type Tablespace struct {
	OID      uint32
	Location string
}

// BackupResult describes a finished physical backup.
type BackupResult struct {
	StartLSN      LSN
	StartTimeline int32
	StopLSN       LSN // the backup is consistent once replay reaches this position
	StopTimeline  int32
	StartTime     time.Time // server clock when BASE_BACKUP began
	// ConsistentTime is the server clock just after the backup stopped: no
	// transaction before StopLSN committed later, so it is the earliest
	// recovery_target_time that this backup alone can reach.
	ConsistentTime time.Time
	Entries        []string // in the order they were sent to the sink
	Tablespaces    []Tablespace
	WALIncluded    bool
	ServerVersion  string
	Major          int
	FromStandby    bool
	SystemID       string
	Timeline       int32 // = StopTimeline

	// File-level backups (FileBackup) only. FileRef is a time, by the
	// clock that stamps the data directory's files, no later than the
	// start of the backup's reading. With file records, the files read
	// and the files reused from the previous backup (with their bytes).
	FileRef     time.Time
	FilesRead   int64
	FilesReused int64
	BytesReused int64

	// BASE_BACKUP only. ServerBytes is what the server sent of the
	// archives and manifest. With Records: FilesRead counts the files the
	// server sent whole, FilesPatched those it sent as changed blocks.
	// Incremental is set when the backup was incremental; when it was
	// asked for but a full one was taken, IncrementalFallback says why.
	ServerBytes         int64
	FilesPatched        int64
	Incremental         bool
	IncrementalFallback string
}

// PhysicalBackup takes a base backup with BASE_BACKUP over a walsender
// connection, from a primary or a standby, and streams base.tar, one
// <oid>.tar per user tablespace and backup_manifest to sink.
//
// With the default options the WAL from start to stop is inside base.tar
// (pg_wal/), so the backup alone restores to a consistent state. The server
// must keep that WAL until the backup ends: under heavy write load, run the
// archiver's replication slot (which holds WAL) or set wal_keep_size.
func PhysicalBackup(ctx context.Context, dsn DSN, sink Sink, opts BackupOptions) (*BackupResult, error) {
	info, err := Probe(ctx, dsn)
	if err != nil {
		return nil, err
	}
	sql, err := connectSQL(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer sql.Close(context.Background())
	rc, err := connectReplication(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer rc.Close(context.Background())

	res := &BackupResult{ServerVersion: info.ServerVersion, Major: info.Major,
		FromStandby: info.Standby, SystemID: info.SystemID, WALIncluded: !opts.ExcludeWAL}
	var rs *recordSink
	if opts.Records != nil {
		rs = &recordSink{es: opts.Records}
		sink = rs
	}
	if opts.Incremental != nil {
		res.IncrementalFallback = incrementalRefused(ctx, sql, info, opts)
		if res.IncrementalFallback == "" {
			if err := uploadManifest(ctx, rc, opts.Incremental.Manifest); err != nil {
				res.IncrementalFallback = "the server refused the previous backup's manifest: " + err.Error()
			}
		}
	}
	if err := sql.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&res.StartTime); err != nil {
		return nil, fmt.Errorf("base backup: read server clock: %w", err)
	}
	if opts.Incremental != nil && res.IncrementalFallback == "" {
		rs.inc = opts.Incremental
		o := opts
		o.incremental = true
		err := runBaseBackup(ctx, rc, info.Major, sink, o, res)
		if err == nil {
			res.Incremental = true
		} else if len(res.Entries) > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("incremental base backup from %s: %w", dsn, err)
		} else {
			// Refused before sending anything (WAL summaries that do not
			// reach back to the previous backup): take a full one on a
			// new connection.
			res.IncrementalFallback = "the server refused an incremental backup: " + err.Error()
			rs.inc = nil
			rc.Close(context.Background())
			if rc, err = connectReplication(ctx, dsn); err != nil {
				return nil, err
			}
			defer rc.Close(context.Background())
		}
	}
	if !res.Incremental {
		if err := runBaseBackup(ctx, rc, info.Major, sink, opts, res); err != nil {
			return nil, fmt.Errorf("base backup from %s: %w", dsn, err)
		}
	}
	if rs != nil {
		res.FilesRead, res.FilesPatched = rs.whole, rs.patched
	}
	if err := sql.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&res.ConsistentTime); err != nil {
		return nil, fmt.Errorf("base backup: read server clock: %w", err)
	}
	res.Timeline = res.StopTimeline
	return res, nil
}

func baseBackupCommand(major int, o BackupOptions) string {
	label := o.Label
	if label == "" {
		label = "amber"
	}
	if major >= 15 {
		parts := []string{"LABEL " + quoteLiteral(label), "TABLESPACE_MAP"}
		if !o.SpreadCheckpoint {
			parts = append(parts, "CHECKPOINT 'fast'")
		}
		if !o.ExcludeWAL {
			// WAIT false: pg_basebackup also skips waiting for archive_command
			// when it takes the WAL itself.
			parts = append(parts, "WAL", "WAIT false")
		}
		if o.MaxRateKBps > 0 {
			parts = append(parts, fmt.Sprintf("MAX_RATE %d", o.MaxRateKBps))
		}
		if !o.NoManifest {
			parts = append(parts, "MANIFEST 'yes'", "MANIFEST_CHECKSUMS 'CRC32C'")
		}
		if o.incremental {
			parts = append(parts, "INCREMENTAL")
		}
		return "BASE_BACKUP (" + strings.Join(parts, ", ") + ")"
	}
	parts := []string{"LABEL " + quoteLiteral(label), "TABLESPACE_MAP"}
	if !o.SpreadCheckpoint {
		parts = append(parts, "FAST")
	}
	if !o.ExcludeWAL {
		parts = append(parts, "WAL", "NOWAIT")
	}
	if o.MaxRateKBps > 0 {
		parts = append(parts, fmt.Sprintf("MAX_RATE %d", o.MaxRateKBps))
	}
	if !o.NoManifest && major >= 13 {
		parts = append(parts, "MANIFEST 'yes'", "MANIFEST_CHECKSUMS 'CRC32C'")
	}
	return "BASE_BACKUP " + strings.Join(parts, " ")
}

// runBaseBackup speaks the BASE_BACKUP sub-protocol: a result set with the
// start position, one with the tablespaces, the archives (PostgreSQL 15+:
// one COPY stream of typed messages; older: one COPY per archive, then one
// for the manifest), and a result set with the stop position.
func runBaseBackup(ctx context.Context, conn *pgconn.PgConn, major int, sink Sink, opts BackupOptions, res *BackupResult) (err error) {
	conn.Frontend().SendQuery(&pgproto3.Query{String: baseBackupCommand(major, opts)})
	if err := conn.Frontend().Flush(); err != nil {
		return err
	}
	rows, err := readResultSet(ctx, conn, nil)
	if err != nil {
		return err
	}
	if res.StartLSN, res.StartTimeline, err = positionRow(rows); err != nil {
		return fmt.Errorf("start position: %w", err)
	}
	tbsRows, err := readResultSet(ctx, conn, nil)
	if err != nil {
		return err
	}
	var oldOrder []string // archive names in old-protocol order
	for _, r := range tbsRows {
		if len(r) < 2 || r[0] == nil {
			oldOrder = append(oldOrder, BaseTar)
			continue
		}
		oid, err := strconv.ParseUint(string(r[0]), 10, 32)
		if err != nil {
			return fmt.Errorf("tablespace oid %q: %w", r[0], err)
		}
		res.Tablespaces = append(res.Tablespaces, Tablespace{OID: uint32(oid), Location: string(r[1])})
		oldOrder = append(oldOrder, TablespaceTar(uint32(oid)))
	}

	var cur *entryStream
	defer func() {
		if cur != nil {
			cur.abort(err)
		}
	}()
	begin := func(name string) error {
		if cur != nil {
			if err := cur.finish(); err != nil {
				cur = nil
				return err
			}
		}
		cur = startEntry(ctx, sink, name)
		res.Entries = append(res.Entries, name)
		return nil
	}
	copies := 0
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.CopyOutResponse:
			if major < 15 {
				name := ManifestEntry
				if copies < len(oldOrder) {
					name = oldOrder[copies]
				}
				copies++
				if err := begin(name); err != nil {
					return err
				}
			}
		case *pgproto3.CopyData:
			if major < 15 {
				res.ServerBytes += int64(len(m.Data))
				if err := cur.write(m.Data); err != nil {
					return err
				}
				continue
			}
			if len(m.Data) == 0 {
				return errors.New("empty CopyData message")
			}
			switch m.Data[0] {
			case 'n': // new archive: name \0 tablespace path \0
				name, _, _ := bytes.Cut(m.Data[1:], []byte{0})
				if err := begin(string(name)); err != nil {
					return err
				}
			case 'm':
				if err := begin(ManifestEntry); err != nil {
					return err
				}
			case 'd':
				if cur == nil {
					return errors.New("archive data before archive header")
				}
				res.ServerBytes += int64(len(m.Data) - 1)
				if err := cur.write(m.Data[1:]); err != nil {
					return err
				}
			case 'p': // progress report
			default:
				return fmt.Errorf("unknown BASE_BACKUP message type %q", m.Data[0])
			}
		case *pgproto3.CopyDone:
			if major < 15 && cur != nil {
				err := cur.finish()
				cur = nil
				if err != nil {
					return err
				}
			}
		case *pgproto3.NoticeResponse:
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		case *pgproto3.RowDescription:
			if cur != nil {
				err := cur.finish()
				cur = nil
				if err != nil {
					return err
				}
			}
			rows, err := readResultSet(ctx, conn, m)
			if err != nil {
				return err
			}
			if res.StopLSN, res.StopTimeline, err = positionRow(rows); err != nil {
				return fmt.Errorf("stop position: %w", err)
			}
			return drainUntilReady(ctx, conn)
		default:
			return fmt.Errorf("unexpected %T during BASE_BACKUP", msg)
		}
	}
}

// readResultSet reads one result set; first is its RowDescription when
// already received.
func readResultSet(ctx context.Context, conn *pgconn.PgConn, first pgproto3.BackendMessage) ([][][]byte, error) {
	var rows [][][]byte
	for {
		msg := first
		first = nil
		if msg == nil {
			var err error
			if msg, err = conn.ReceiveMessage(ctx); err != nil {
				return nil, err
			}
		}
		switch m := msg.(type) {
		case *pgproto3.RowDescription, *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		case *pgproto3.DataRow:
			row := make([][]byte, len(m.Values))
			for i, v := range m.Values {
				if v != nil {
					row[i] = append([]byte{}, v...)
				}
			}
			rows = append(rows, row)
		case *pgproto3.CommandComplete:
			return rows, nil
		case *pgproto3.ErrorResponse:
			return nil, pgconn.ErrorResponseToPgError(m)
		default:
			return nil, fmt.Errorf("unexpected %T in result set", msg)
		}
	}
}

func drainUntilReady(ctx context.Context, conn *pgconn.PgConn) error {
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			return nil
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		}
	}
}

func positionRow(rows [][][]byte) (LSN, int32, error) {
	if len(rows) != 1 || len(rows[0]) < 2 {
		return 0, 0, fmt.Errorf("expected one row (recptr, tli), got %d", len(rows))
	}
	lsn, err := ParseLSN(string(rows[0][0]))
	if err != nil {
		return 0, 0, err
	}
	tli, err := strconv.ParseInt(string(rows[0][1]), 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("timeline %q: %w", rows[0][1], err)
	}
	return lsn, int32(tli), nil
}

// entryStream feeds one sink entry through a pipe while the protocol loop
// writes into it, so nothing is buffered beyond one protocol message.
type entryStream struct {
	name string
	pw   *io.PipeWriter
	done chan error
}

var errSinkStopped = errors.New("sink returned before reading the whole entry")

func startEntry(ctx context.Context, sink Sink, name string) *entryStream {
	pr, pw := io.Pipe()
	es := &entryStream{name: name, pw: pw, done: make(chan error, 1)}
	go func() {
		err := sink.Entry(ctx, name, pr)
		if err == nil {
			pr.CloseWithError(errSinkStopped)
		} else {
			pr.CloseWithError(err)
		}
		es.done <- err
	}()
	return es
}

func (es *entryStream) write(b []byte) error {
	if _, err := es.pw.Write(b); err != nil {
		serr := <-es.done
		es.done <- serr
		if serr != nil {
			return fmt.Errorf("entry %s: %w", es.name, serr)
		}
		return fmt.Errorf("entry %s: %w", es.name, err)
	}
	return nil
}

func (es *entryStream) finish() error {
	es.pw.Close()
	if err := <-es.done; err != nil {
		return fmt.Errorf("entry %s: %w", es.name, err)
	}
	return nil
}

func (es *entryStream) abort(cause error) {
	if cause == nil {
		cause = errors.New("backup aborted")
	}
	es.pw.CloseWithError(cause)
	<-es.done
}

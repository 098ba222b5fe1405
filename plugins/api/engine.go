package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Engine is what an engine plugin implements and what the host calls.
//
// Every method takes a context that is cancelled when the caller gives up.
// An engine that lacks a capability embeds Unsupported and does not declare
// the capability in Info; callers then get an error that wraps
// ErrUnsupported and names the engine and the capability.
type Engine interface {
	// Info describes the plugin. It must not touch a database.
	Info(ctx context.Context) (Info, error)
	// Probe connects to the target and reports version, role, lag, health.
	Probe(ctx context.Context, t Target) (Probe, error)
	// ParsePosition turns a position as a person writes it into a
	// Position. It must not touch a database.
	ParsePosition(ctx context.Context, text string) (Position, error)

	// LogicalDump writes a consistent logical copy to sink as named
	// entries, one at a time, and returns where and when it is consistent.
	LogicalDump(ctx context.Context, req BackupRequest, sink EntrySink) (BackupResult, error)
	// LogicalRestore reads the entries of a logical dump from src, in the
	// order LogicalDump wrote them, and loads them into the target.
	LogicalRestore(ctx context.Context, req RestoreRequest, src EntrySource) (RestoreResult, error)

	// PhysicalBackup writes a physical copy to sink as named entries.
	PhysicalBackup(ctx context.Context, req BackupRequest, sink EntrySink) (BackupResult, error)
	// PhysicalRestore lays the entries read from src out in req.Target.DataDir.
	PhysicalRestore(ctx context.Context, req RestoreRequest, src EntrySource) (RestoreResult, error)

	// Freeze quiesces the database for a volume snapshot. req.LeaseID names
	// the freeze; the engine must hold whatever it needs (a session, a
	// lock) beyond the return of Freeze, since ctx ends when Freeze
	// returns. Lease expiry is enforced by this package, which calls Thaw
	// itself when a lease runs out.
	Freeze(ctx context.Context, req FreezeRequest) (Frozen, error)
	// Thaw ends the freeze named leaseID and returns what the snapshot
	// needs to be restorable.
	Thaw(ctx context.Context, leaseID string) (Thawed, error)

	// Archive streams log segments to out until ctx is cancelled or
	// durable is closed. The host sends on durable the positions up to
	// which log is safe in the repository; the engine releases log on the
	// database (slot advance, binlog purge) only up to the last one
	// received. Archive returns nil when durable is closed, ctx.Err() when
	// cancelled.
	Archive(ctx context.Context, req ArchiveRequest, out SegmentSink, durable <-chan Position) error

	// Replay applies archived log, fetched from src, to the restored copy
	// in req.Target until req.To is reached.
	Replay(ctx context.Context, req ReplayRequest, src SegmentSource) (ReplayResult, error)

	// DescribeLogFile says which segment a log file, named as the server
	// names it, is stored as.
	DescribeLogFile(ctx context.Context, q LogFileQuery) (LogFile, error)
}

// Capability names an optional part of the protocol.
type Capability string

// The capabilities. Info and Probe are always implemented.
const (
	LogicalDump     Capability = "logical_dump"
	LogicalRestore  Capability = "logical_restore"
	PhysicalBackup  Capability = "physical_backup"
	PhysicalRestore Capability = "physical_restore"
	Freeze          Capability = "freeze"
	Archive         Capability = "archive"
	Replay          Capability = "replay"
	LogFiles        Capability = "log_files"
	// FileRecords: PhysicalBackup marks file records inside its entries
	// when asked (BackupRequest.FileRecords) and reuses those of
	// BackupRequest.Previous.
	FileRecords Capability = "file_records"
)

// AllCapabilities lists every capability in protocol order.
var AllCapabilities = []Capability{LogicalDump, LogicalRestore, PhysicalBackup, PhysicalRestore, Freeze, Archive, Replay, LogFiles, FileRecords}

// ErrUnsupported is wrapped by every error that reports a capability the
// engine does not have.
var ErrUnsupported = errors.New("capability not supported")

// UnsupportedError reports that Engine lacks Capability.
type UnsupportedError struct {
	Engine     string // may be empty inside a plugin; filled in by Serve
	Capability Capability
}

func (e *UnsupportedError) Error() string {
	name := e.Engine
	if name == "" {
		name = "plugin"
	}
	return fmt.Sprintf("engine %s does not support %s", name, e.Capability)
}

// Is makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// Unsupported implements every optional method of Engine by returning an
// *UnsupportedError. Engines embed it and override what they support.
type Unsupported struct{}

func (Unsupported) LogicalDump(context.Context, BackupRequest, EntrySink) (BackupResult, error) {
	return BackupResult{}, &UnsupportedError{Capability: LogicalDump}
}

func (Unsupported) LogicalRestore(context.Context, RestoreRequest, EntrySource) (RestoreResult, error) {
	return RestoreResult{}, &UnsupportedError{Capability: LogicalRestore}
}

func (Unsupported) PhysicalBackup(context.Context, BackupRequest, EntrySink) (BackupResult, error) {
	return BackupResult{}, &UnsupportedError{Capability: PhysicalBackup}
}

func (Unsupported) PhysicalRestore(context.Context, RestoreRequest, EntrySource) (RestoreResult, error) {
	return RestoreResult{}, &UnsupportedError{Capability: PhysicalRestore}
}

func (Unsupported) Freeze(context.Context, FreezeRequest) (Frozen, error) {
	return Frozen{}, &UnsupportedError{Capability: Freeze}
}

func (Unsupported) Thaw(context.Context, string) (Thawed, error) {
	return Thawed{}, &UnsupportedError{Capability: Freeze}
}

func (Unsupported) Archive(context.Context, ArchiveRequest, SegmentSink, <-chan Position) error {
	return &UnsupportedError{Capability: Archive}
}

func (Unsupported) Replay(context.Context, ReplayRequest, SegmentSource) (ReplayResult, error) {
	return ReplayResult{}, &UnsupportedError{Capability: Replay}
}

func (Unsupported) DescribeLogFile(context.Context, LogFileQuery) (LogFile, error) {
	return LogFile{}, &UnsupportedError{Capability: LogFiles}
}

// ParsePosition of an engine that names no positions: every text is refused.
func (Unsupported) ParsePosition(_ context.Context, text string) (Position, error) {
	return Position{}, fmt.Errorf("this engine has no log positions to parse (%q)", text)
}

// Info describes a plugin.
type Info struct {
	Engine           string // "postgres", the <engine> of amber-plugin-<engine>
	PluginVersion    string
	Capabilities     []Capability
	SupportedServers string // optional, e.g. "PostgreSQL 13-17"
	// PreviousEntries (optional, with FileRecords) names the entries of a
	// backup the plugin wants back whole in PreviousFiles.Entries.
	PreviousEntries []string
	// ReadsPipes is set by the plugin's framework, not the engine: the
	// plugin reads restore entries from pipes the host passes (Pipes).
	ReadsPipes bool
}

// Has reports whether the plugin declared c.
func (i Info) Has(c Capability) bool { return slices.Contains(i.Capabilities, c) }

// Role of a database server in its replication topology.
type Role string

const (
	RoleUnknown    Role = ""
	RolePrimary    Role = "primary"
	RoleReplica    Role = "replica"
	RoleStandalone Role = "standalone"
)

// Probe is what Probe reports about a server.
type Probe struct {
	ServerVersion  string
	Role           Role
	SystemID       string        // lineage: PG system identifier, MySQL server_uuid, replica set name
	Position       Position      // optional: current (or last replayed) position
	ReplicationLag time.Duration // replicas only; 0 on a primary
	Healthy        bool
	Detail         string // why not healthy, and what to do
	Facts          map[string]string
}

// Target says which database a call operates on.
type Target struct {
	DSN      Secret            // native connection string; may hold a password
	DataDir  string            // local data directory, when the call needs one
	Settings map[string]string // engine-specific (bin_dir, replication_dsn, ...)
}

// File is a small file returned whole, such as backup_label.
type File struct {
	Name    string // slash-separated, relative to the data directory
	Content []byte
	Mode    uint32 // 0 means 0600
}

// BackupRequest asks for a logical dump or a physical backup.
type BackupRequest struct {
	Target    Target
	Databases []string // logical dumps: which databases; empty means all
	Label     string
	Options   map[string]string
	// Archived (optional) is the end of the newest segment archived for
	// the server's log stream, as ArchiveRequest.Start would be; zero when
	// none is archived or the host does not know. An engine whose epochs
	// depend on more than its log position (MongoDB's rollbacks, MySQL's
	// source servers and binlog resets) numbers the backup's positions from
	// it.
	Archived Position
	// FileRecords (physical backups, plugins declaring FileRecords): the
	// sink takes file marks; the writers its Create returns implement
	// FileMarker.
	FileRecords bool
	// Previous, only with FileRecords, lists the file records of the
	// previous backup of the same database; the plugin may reuse them.
	Previous *PreviousFiles
}

// PreviousFiles lists the file records of an earlier backup.
type PreviousFiles struct {
	Backup string       // the earlier backup's id, for logs
	Result BackupResult // as its plugin returned it
	Files  []PreviousFile
	// Entries holds the earlier backup's entries named in
	// Info.PreviousEntries, by name: those it has and that fit in the
	// request.
	Entries map[string][]byte
}

// PreviousFile is one file record of an earlier backup.
type PreviousFile struct {
	Entry  string // the entry that holds it
	Key    string // unique in the entry
	Stamp  string // as the plugin marked it
	Length int64  // bytes
}

// FileMark ends the current file record of an entry, if any, and starts a
// new one at the entry's current offset; the record runs to the next mark
// or the end of the entry. The host cuts its chunks at every mark.
type FileMark struct {
	Key    string // unique in the entry; empty: the bytes that follow belong to no record
	Stamp  string // what identifies this version of the file, in the plugin's terms
	Length int64  // the record's length in bytes; required with Reuse
	// Reuse: the record's bytes are those of the record with the same
	// entry and key in BackupRequest.Previous; write none for it.
	Reuse bool
	// Base (optional, not with Reuse) makes the record a patch of the
	// record with key Base of the same entry in BackupRequest.Previous:
	// its first Keep bytes (fewer if it is shorter), zeros up to Length,
	// and each of Ranges replaced by the bytes written after the mark,
	// which are the ranges' bytes in order and nothing else.
	Base   string
	Keep   int64
	Ranges []ByteRange
}

// ByteRange is a run of bytes of a file record.
type ByteRange struct {
	Offset, Length int64
}

// PatchSize is the number of bytes a patch mark's ranges take, or -1 when
// they are not in increasing order, overlap, are empty or do not lie
// inside [0, length).
func PatchSize(ranges []ByteRange, length int64) int64 {
	var n, next int64
	for _, r := range ranges {
		if r.Length <= 0 || r.Offset < next || r.Offset > length-r.Length {
			return -1
		}
		next = r.Offset + r.Length
		n += r.Length
	}
	return n
}

// FileMarker is implemented by the entry writers an EntrySink's Create
// returns for a request with FileRecords set.
type FileMarker interface {
	MarkFile(m FileMark) error
}

// PartSource yields an entry with file records part by part.
type PartSource interface {
	// Next returns the next part: its mark (zero for the bytes before the
	// first mark) and, unless the mark reuses a record, a reader for its
	// bytes; io.EOF after the last part. Calling Next discards what is
	// left unread of the previous part.
	Next(ctx context.Context) (FileMark, io.Reader, error)
}

// FileSink is the EntrySink a host passes with BackupRequest.FileRecords:
// it also takes entries made of file records.
type FileSink interface {
	EntrySink
	// FileEntry stores entry e, whose content src yields part by part.
	FileEntry(ctx context.Context, e Entry, src PartSource) error
}

// BackupResult records where and when a backup is consistent.
// MetaLogFromStart is the BackupResult.Metadata key a plugin sets to
// "true" when the copy holds no log of its own: restoring it needs archived
// log from Start on (not only from Consistent), and the host checks that
// the archive holds it.
const MetaLogFromStart = "log_from_start"

// OptionSnapshotData is the RestoreRequest.Options key the host sets to
// "true" when Target.DataDir already holds the files of the backup's
// volume, restored from a volume snapshot (a snapshot backup, taken under
// Freeze): PhysicalRestore then reads no entries, writes the backup's Files
// (the thaw's) into the data directory and configures recovery. An engine
// without support refuses the request.
const OptionSnapshotData = "snapshot_data"

// RestoringMark is the file the host may leave in an otherwise empty
// Target.DataDir before a PhysicalRestore, to say that a restore into it
// has begun (it removes the file once the restore is complete). A plugin
// that wants an empty data directory treats one holding only this file as
// empty, and leaves the file alone.
const RestoringMark = ".amber-restoring"

type BackupResult struct {
	Start          Position  // log position at which the copy started
	Consistent     Position  // log position at which the copy is consistent
	ConsistentTime time.Time // wall-clock time at which it is consistent
	StartTime      time.Time
	ServerVersion  string
	SystemID       string
	Metadata       map[string]string
	Files          []File // to write beside the restored data (backup_label)
}

// ExportPathOption, among a logical RestoreRequest's Options, asks the
// engine to write the dump it reads, converted to the format of its
// engine's stock restore tool (mongodump's archive for MongoDB), to the
// file at this path (a named pipe the host reads and prints) instead of
// loading a database. The host sends it only for backups it cannot print
// as they are (several entries that are not SQL scripts); an engine that
// does not support it fails the call.
const ExportPathOption = "export_path"

// RestoreRequest asks for a logical or physical restore.
type RestoreRequest struct {
	Target  Target
	Backup  BackupResult // as recorded at backup time
	Options map[string]string

	// Physical restores only. To is where the copy recovers to when its
	// server starts, written in the engine's own recovery settings; the
	// zero target with LogCommand set means all archived log.
	To RecoveryTarget
	// LogCommand is the argv of a command that copies one archived log
	// file. The engine appends words "--setting=<key>=<value>" it wants
	// back in LogFileQuery.Settings, then the file name and the
	// destination path. Empty: the copy recovers only to the backup's
	// consistent point.
	LogCommand []string
	// LogDoneCommand, with LogCommand, is the argv of a command the engine
	// has its server run once recovery has ended; it revokes what
	// LogCommand was given.
	LogDoneCommand []string
	// KeepArchiving leaves the backup's log archiving settings on the
	// copy; by default the engine turns archiving off, so a copy never
	// writes into the original's archive.
	KeepArchiving bool
	// RunAs is the OS user that will run the restored server and own its
	// files; empty: the engine's default.
	RunAs string
}

// RestoreResult is where a restored copy stands.
type RestoreResult struct {
	Position       Position
	ConsistentTime time.Time
	Metadata       map[string]string
	// Owner is who owns the restored files (physical restores), so the
	// host can give the files LogCommand reads to the same user.
	Owner *FileOwner
}

// FileOwner is a numeric file owner.
type FileOwner struct{ UID, GID uint32 }

// Entry describes one named stream of bytes in a backup.
type Entry struct {
	Name     string // unique in the backup, slash-separated, no ".."
	Size     int64  // if known in advance, else -1 (or 0)
	Mode     uint32 // 0 means 0600
	Kind     string // "tar", "pg_dump-custom", "sql", ...
	Metadata map[string]string
}

// EntrySink receives the entries of a backup, one at a time.
type EntrySink interface {
	// Entry sends e with the bytes read from r until io.EOF. It returns
	// when r is exhausted or on the first error (from r or the transport).
	Entry(ctx context.Context, e Entry, r io.Reader) error
	// Create starts entry e and returns a writer for its bytes; Close ends
	// the entry. No other entry may be started before Close.
	Create(ctx context.Context, e Entry) (io.WriteCloser, error)
}

// EntrySource yields the entries of a backup in order.
type EntrySource interface {
	// Next returns the next entry and a reader for its bytes, or io.EOF
	// after the last one. Calling Next discards what is left unread of the
	// previous entry. The reader fails with io.ErrUnexpectedEOF when the
	// entry arrives truncated.
	Next(ctx context.Context) (Entry, io.Reader, error)
}

// FreezeRequest asks to quiesce the database under a lease.
type FreezeRequest struct {
	Target  Target
	Lease   time.Duration
	Label   string
	LeaseID string // set by Serve for the engine; ignored when calling a Client
	// Archived (optional): as BackupRequest.Archived.
	Archived Position
}

// Frozen is the answer to Freeze.
type Frozen struct {
	LeaseID        string    // set by Serve
	ExpiresAt      time.Time // set by Serve
	Position       Position  // log position at freeze time
	ConsistentTime time.Time
}

// Thawed is what a snapshot taken under a freeze needs to be restorable.
type Thawed struct {
	Consistent     Position // replay at least to here
	ConsistentTime time.Time
	Files          []File // e.g. backup_label, tablespace_map
	Metadata       map[string]string
}

// ArchiveRequest starts continuous archiving.
type ArchiveRequest struct {
	Target        Target
	Start         Position      // resume here; zero: engine's retained or current position
	FlushInterval time.Duration // max age of log in an open segment; 0: engine default
	Options       map[string]string
}

// SegmentHeader starts a log segment.
type SegmentHeader struct {
	Name  string   // engine-assigned: "00000001000000000000000A", "mysql-bin.000042"
	Start Position // first log in the segment; its Epoch is the segment's
	// Branch, for segments of an epoch that continues an earlier one, is
	// the position in the parent epoch where this epoch's log takes over
	// (PostgreSQL: parent timeline and switch LSN). Zero: the epoch begins
	// a history of its own.
	Branch Position
}

// SegmentTrailer ends a log segment.
type SegmentTrailer struct {
	End         Position // just past the last log in the segment
	Partial     bool     // cut before its natural end; a later segment of the same name supersedes it (or continues it: a piece)
	FirstCommit time.Time
	LastCommit  time.Time
	Size        int64 // bytes; filled in by the sink when zero
	// FileSize, when set, is the size of the file the engine reads the
	// segment back as; a shorter segment is served zero-filled to it.
	FileSize int64
}

// LogFileQuery names a log file for DescribeLogFile.
type LogFileQuery struct {
	Name     string            // as the server names it: "000000010000000000000003"
	Path     string            // optional: the file on local disk, which the plugin may read
	Size     int64             // optional: the size of the file at Path
	Settings map[string]string // what the plugin put on the log command line (RestoreRequest.LogCommand)
}

// LogFile is what DescribeLogFile says of a log file.
type LogFile struct {
	Ignore  bool    // nothing to archive (PostgreSQL .backup history files)
	Segment Segment // the segment the file is stored as; Start == End for metadata
}

// Segment describes a whole archived segment.
type Segment struct {
	SegmentHeader
	SegmentTrailer
}

// SegmentSink receives log segments from Archive.
type SegmentSink interface {
	// Begin starts a segment. The previous one must be finished or aborted.
	Begin(ctx context.Context, h SegmentHeader) (SegmentWriter, error)
}

// SegmentWriter takes the bytes of one segment.
type SegmentWriter interface {
	io.Writer
	// Finish ends the segment. t.Size may be left zero.
	Finish(t SegmentTrailer) error
	// Abort drops the segment; reason is logged by the host.
	Abort(reason string) error
}

// SegmentQuery asks for one archived segment: by Name, or the first one
// holding log after After. Stream, when set, restricts the answer.
type SegmentQuery struct {
	Name   string
	After  Position
	Stream string
}

// ErrNoSegment is returned by SegmentSource.Fetch when no archived segment
// matches the query.
var ErrNoSegment = errors.New("no such archived segment")

// SegmentSource gives Replay access to archived segments.
type SegmentSource interface {
	// Fetch returns the segment matching q and a reader for its bytes, or
	// an error wrapping ErrNoSegment. The reader must be read to io.EOF
	// or closed before the next Fetch.
	Fetch(ctx context.Context, q SegmentQuery) (Segment, io.ReadCloser, error)
}

// RecoveryTarget says where recovery stops. Set at most one of Time,
// Position, Txn, Name, Latest; none means Latest.
type RecoveryTarget struct {
	Time     time.Time
	Position Position
	Txn      string // a transaction id in the engine's own form (PostgreSQL xid)
	Name     string // a named restore point
	Latest   bool
	// Inclusive applies the transaction at exactly the target; false stops
	// just before it.
	Inclusive bool
}

// IsLatest reports whether t asks for all archived log.
func (t RecoveryTarget) IsLatest() bool {
	return t.Latest || (t.Time.IsZero() && t.Position.IsZero() && t.Txn == "" && t.Name == "")
}

// String describes t for people.
func (t RecoveryTarget) String() string {
	var s string
	switch {
	case !t.Time.IsZero():
		s = "time " + t.Time.UTC().Format(time.RFC3339Nano)
	case !t.Position.IsZero():
		s = "position " + t.Position.String()
	case t.Txn != "":
		s = "transaction " + t.Txn
	case t.Name != "":
		s = "restore point " + t.Name
	default:
		return "the latest archived log"
	}
	if !t.Inclusive {
		s += " (exclusive)"
	}
	return s
}

// ReplayRequest asks to apply archived log to a restored copy.
type ReplayRequest struct {
	Target  Target
	To      RecoveryTarget
	From    Position // where the restored copy stands
	Stream  string   // timeline to follow; empty: the one leading to the target
	Options map[string]string
	// LogStart, when set, is where the backup's own log begins
	// (BackupResult.Start), before From. A plugin may fetch archived log
	// from it to learn of work still open at From (MongoDB: transactions
	// that began before From and commit after it); it applies nothing
	// before From. The archive may not reach back that far: the host
	// checks coverage from From only.
	LogStart Position
}

// ReplayResult is where replay stopped.
type ReplayResult struct {
	Reached     Position
	ReachedTime time.Time
	Metadata    map[string]string
}

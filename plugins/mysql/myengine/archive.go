package myengine

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

// Segment is a run of whole binlog events, stored as a file that
// mariadb-binlog/mysqlbinlog reads on its own: the binlog magic, the
// Format_description event of the file the events come from, then the
// events as the server wrote them. Start and End are positions in the
// source's binlog: End is just past the last event, or, for the segment
// that ends a binlog file, the next file's first position (its Rotate
// event's target), so that segments are contiguous across rotations.
type Segment struct {
	Name        string // "<file>:<start position>"
	Start, End  Pos
	Data        []byte
	FirstCommit time.Time
	LastCommit  time.Time
	// Branch, for a segment of an epoch that continues an earlier one (a
	// new source server, a RESET MASTER), is the position in epoch
	// Start.Epoch-1 where this epoch takes over: the end of the log
	// archived before it. Zero in epoch 1.
	Branch Pos
}

// ArchiveOptions configure Archive.
type ArchiveOptions struct {
	// Start resumes after archived log (the end of the newest archived
	// segment, with its epoch, GTID set and server); zero: the oldest
	// binlog the server still has. StartBranch is the branch of Start's
	// epoch (zero in epoch 1).
	Start       Pos
	StartBranch Pos
	// ServerID is the replica server id the archiver connects with; 0:
	// DefaultServerID(lineage).
	ServerID uint32
	// FlushInterval bounds how long a committed transaction waits before
	// it is sent; default 1 s.
	FlushInterval time.Duration
	// MaxSegment is the size at which a segment is cut; default 16 MiB.
	MaxSegment int
	Lineage    string
	Logger     *slog.Logger
	// Stop, when closed, ends Archive cleanly: it reads on up to the
	// position the server reports at that moment (for at most
	// StopDrain), sends what it holds at a transaction boundary and
	// returns nil.
	Stop      <-chan struct{}
	StopDrain time.Duration // default 5 s
}

// syncerAddr is go-mysql's Host and Port for a go-sql-driver address:
// host:port (3306 when absent), or, for a unix socket, the socket's path
// and port 0 (go-mysql dials a unix socket for an address with a "/" and
// no port).
func syncerAddr(network, addr string) (string, int) {
	if network == "unix" {
		return addr, 0
	}
	host, port, _ := strings.Cut(addr, ":")
	p, _ := strconv.Atoi(port)
	if p == 0 {
		p = 3306
	}
	return host, p
}

// DefaultServerID derives the archiver's replica server id from the
// lineage: 0x40000000 plus 30 bits of its FNV-1a hash, so it stays the same
// across restarts and stays clear of the small ids servers usually get.
func DefaultServerID(lineage string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(lineage))
	return 0x40000000 | h.Sum32()&0x3fffffff
}

// ErrLogLost is wrapped by the error Archive returns when the binlog it
// must resume from was purged before it was archived.
var ErrLogLost = errors.New("binlog lost")

// Archive streams d's binlog as a replica and hands out segments, cut at
// transaction boundaries at most FlushInterval after a commit, at
// MaxSegment bytes and at every binlog rotation. It returns ctx.Err() when
// cancelled.
func Archive(ctx context.Context, d DSN, o ArchiveOptions, out func(context.Context, Segment) error) error {
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if o.MaxSegment <= 0 {
		o.MaxSegment = 16 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	db, cfg, err := Open(ctx, d)
	if err != nil {
		return err
	}
	info, err := probeDB(ctx, db, o.Lineage)
	if err != nil {
		db.Close()
		return err
	}
	logs, err := binaryLogs(ctx, db)
	db.Close()
	if err != nil {
		return err
	}
	if len(logs) == 0 {
		return errors.New("the server lists no binary logs (SHOW BINARY LOGS); is log_bin on?")
	}
	plan, err := planResume(info, logs, o.Start, o.StartBranch)
	if err != nil {
		return err
	}
	start := plan.start
	if o.ServerID == 0 {
		o.ServerID = DefaultServerID(info.Lineage)
	}
	host, p := syncerAddr(cfg.Net, cfg.Addr)
	flavor := gomysql.MySQLFlavor
	if info.MariaDB {
		flavor = gomysql.MariaDBFlavor
	}
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: o.ServerID, Flavor: flavor, Host: host, Port: uint16(p), User: cfg.User, Password: cfg.Passwd,
		HeartbeatPeriod: 5 * time.Second, DisableRetrySync: true, Logger: o.Logger,
		RawModeEnabled: false,
	})
	defer syncer.Close()
	var stream *replication.BinlogStreamer
	if plan.byGTID {
		// The new source's binlog holds the archived transactions under
		// other coordinates: ask for what follows the archived GTID set;
		// the server says where that is.
		var set gomysql.GTIDSet
		if info.MariaDB {
			set, err = gomysql.ParseMariadbGTIDSet(start.GTID)
		} else {
			set, err = gomysql.ParseMysqlGTIDSet(start.GTID)
		}
		if err == nil {
			stream, err = syncer.StartSyncGTID(set)
		}
	} else {
		stream, err = syncer.StartSync(gomysql.Position{Name: start.File, Pos: start.Pos})
	}
	if err != nil {
		return fmt.Errorf("start reading the binlog at %s: %w", start.Text(), err)
	}
	gs, err := newGTIDState(info.MariaDB, start.GTID)
	if err != nil {
		return fmt.Errorf("archive start %s: %w", start.Text(), err)
	}
	start.Epoch, start.Server = plan.epoch, info.Identity()
	if plan.epoch != max(o.Start.Epoch, 1) {
		o.Logger.Warn("the binlog's history forked: archiving goes on in a new epoch", "epoch", plan.epoch,
			"branch", plan.branch.Text(), "why", plan.why)
	}
	o.Logger.Info("archiving binlog", "from", start.Text(), "epoch", plan.epoch, "server_id", o.ServerID)

	a := &archiver{out: out, o: o, file: start.File, cur: start.Pos, segStart: start, boundary: true,
		epoch: plan.epoch, branch: plan.branch, server: info.Identity(), gtid: gs, seeking: plan.byGTID}
	if o.StopDrain <= 0 {
		o.StopDrain = 5 * time.Second
	}
	stopping := false
	var drainTo Pos
	var drainUntil time.Time
	for {
		if !stopping && o.Stop != nil {
			select {
			case <-o.Stop:
				stopping, drainUntil = true, time.Now().Add(o.StopDrain)
				drainTo = serverPos(ctx, d, info.MariaDB)
				o.Logger.Info("stopping: reading the binlog up to the server's position", "to", drainTo.Text())
			default:
			}
		}
		if stopping {
			at := a.pos()
			if drainTo.File == "" || at.Offset() >= drainTo.Offset() || time.Now().After(drainUntil) {
				if a.boundary && a.body.Len() > 0 {
					if err := a.emit(ctx, at); err != nil {
						return err
					}
				}
				return nil
			}
		}
		wait := o.FlushInterval
		if a.body.Len() > 0 {
			wait = max(time.Millisecond, o.FlushInterval-time.Since(a.opened))
		}
		if o.Stop != nil {
			wait = min(wait, 100*time.Millisecond) // notice Stop soon
		}
		gctx, cancel := context.WithTimeout(ctx, wait)
		ev, err := stream.GetEvent(gctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				if a.boundary && a.body.Len() > 0 && (stopping || time.Since(a.opened) >= o.FlushInterval-time.Millisecond) {
					if err := a.emit(ctx, a.pos()); err != nil {
						return err
					}
				}
				continue
			}
			if a.seeking && strings.Contains(err.Error(), "1236") {
				return fmt.Errorf("%w: server %s has applied the archived transactions (up to %s) but its binlog does not hold what follows them (%v): archiving from it needs log_slave_updates=ON while it replicated; take a new base backup, then restart archiving",
					ErrLogLost, a.server, start.GTID, err)
			}
			if strings.Contains(err.Error(), "1236") || strings.Contains(strings.ToLower(err.Error()), "could not find first log file") {
				return fmt.Errorf("%w: reading the binlog from %s failed (%v): log was lost; take a new base backup, then restart archiving", ErrLogLost, a.file, err)
			}
			return fmt.Errorf("read the binlog at %s:%d: %w", a.file, a.cur, err)
		}
		if err := a.event(ctx, ev); err != nil {
			return err
		}
	}
}

// serverPos is d's current binlog position, or the zero Pos when it
// cannot be read (the server went away): then there is nothing more to
// wait for.
func serverPos(ctx context.Context, d DSN, mariadb bool) Pos {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	db, _, err := Open(ctx, d)
	if err != nil {
		return Pos{}
	}
	defer db.Close()
	p, err := masterStatus(ctx, db, mariadb)
	if err != nil {
		return Pos{}
	}
	return p
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// binaryLogs lists the server's binlog files, oldest first.
func binaryLogs(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, fmt.Errorf("list binary logs: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		m, err := rowMap(rows)
		if err != nil {
			return nil, err
		}
		names = append(names, m["Log_name"])
	}
	return names, rows.Err()
}

// binlogMagic starts every binlog file.
var binlogMagic = []byte{0xfe, 'b', 'i', 'n'}

// archiver cuts the event stream into segments.
type archiver struct {
	out      func(context.Context, Segment) error
	o        ArchiveOptions
	file     string // binlog file being read
	cur      uint32 // position just past the last event seen
	fde      []byte // the file's Format_description event
	segStart Pos
	body     bytes.Buffer
	opened   time.Time
	boundary bool // the body ends at a transaction boundary
	first    time.Time
	last     time.Time
	prevLast time.Time // the last commit of earlier segments
	epoch    uint32
	branch   Pos // the epoch's branch, zero in epoch 1
	server   string
	gtid     *gtidState // the GTID set up to cur
	// seeking: the stream was asked for by GTID set and the position
	// where the server resumes is not known yet; events before it (the
	// head of its file) are skipped.
	seeking bool
}

// pos is the position just past the last event seen.
func (a *archiver) pos() Pos {
	return Pos{Epoch: a.epoch, File: a.file, Pos: a.cur, GTID: a.gtid.String(), Server: a.server}
}

func (a *archiver) event(ctx context.Context, ev *replication.BinlogEvent) error {
	h := ev.Header
	switch h.EventType {
	case replication.ROTATE_EVENT:
		rot := ev.Event.(*replication.RotateEvent)
		if h.Timestamp == 0 || h.LogPos == 0 {
			// Sent by the server at the start of a stream: where it reads.
			if a.body.Len() == 0 {
				a.file, a.cur = string(rot.NextLogName), uint32(rot.Position)
				a.segStart = a.pos()
			}
			return nil
		}
		if a.seeking {
			// Passing over a file the server resumes after.
			a.file, a.cur, a.fde = string(rot.NextLogName), uint32(rot.Position), nil
			a.segStart = a.pos()
			return nil
		}
		a.add(ev)
		a.file, a.cur = string(rot.NextLogName), uint32(rot.Position)
		if err := a.emit(ctx, a.pos()); err != nil {
			return err
		}
		a.segStart, a.fde = a.pos(), nil
		return nil
	case replication.FORMAT_DESCRIPTION_EVENT:
		a.fde = bytes.Clone(ev.RawData)
		if h.LogPos > a.cur {
			a.cur = h.LogPos
		}
		return nil
	case replication.HEARTBEAT_EVENT, replication.HEARTBEAT_LOG_EVENT_V2:
		return nil
	}
	if a.seeking {
		switch h.EventType {
		case replication.MARIADB_GTID_LIST_EVENT:
			if h.Timestamp != 0 {
				return nil // the head of the file
			}
			// MariaDB's fake Gtid_list: the server resumes here.
			a.cur, a.seeking = h.LogPos, false
			a.segStart = a.pos()
			return nil
		case replication.GTID_EVENT, replication.ANONYMOUS_GTID_EVENT, replication.MARIADB_GTID_EVENT, replication.QUERY_EVENT:
			// The first transaction sent: it starts where the server resumed.
			a.cur, a.seeking = h.LogPos-h.EventSize, false
			a.segStart = a.pos()
		default:
			return nil
		}
	}
	a.track(ev)
	a.add(ev)
	if h.LogPos != 0 {
		a.cur = h.LogPos
	}
	commit := false
	switch h.EventType {
	case replication.XID_EVENT:
		commit = true
	case replication.QUERY_EVENT:
		q := strings.TrimSpace(string(ev.Event.(*replication.QueryEvent).Query))
		commit = !strings.EqualFold(q, "BEGIN")
	case replication.MARIADB_GTID_EVENT, replication.GTID_EVENT, replication.ANONYMOUS_GTID_EVENT,
		replication.TABLE_MAP_EVENT, replication.MARIADB_ANNOTATE_ROWS_EVENT,
		replication.WRITE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv1,
		replication.WRITE_ROWS_EVENTv2, replication.UPDATE_ROWS_EVENTv2, replication.DELETE_ROWS_EVENTv2:
		a.boundary = false
		return nil
	default:
		return nil
	}
	if commit {
		a.boundary = true
		t := time.Unix(int64(h.Timestamp), 0).UTC()
		if a.first.IsZero() {
			a.first = t
		}
		a.last = t
		if a.body.Len() >= a.o.MaxSegment || time.Since(a.opened) >= a.o.FlushInterval {
			return a.emit(ctx, a.pos())
		}
	}
	return nil
}

func (a *archiver) add(ev *replication.BinlogEvent) {
	if a.body.Len() == 0 {
		a.opened = time.Now()
	}
	a.body.Write(ev.RawData)
}

// emit sends the buffered events as a segment ending at end.
func (a *archiver) emit(ctx context.Context, end Pos) error {
	if a.body.Len() == 0 && a.segStart.File == end.File {
		return nil
	}
	if a.fde == nil && a.body.Len() > 0 {
		return fmt.Errorf("binlog %s: events before its Format_description event", a.file)
	}
	data := make([]byte, 0, len(binlogMagic)+len(a.fde)+a.body.Len())
	data = append(append(append(data, binlogMagic...), a.fde...), a.body.Bytes()...)
	if a.last.IsZero() {
		// No commit in it: the log up to its end is as recent as the
		// last commit before it.
		a.first, a.last = a.prevLast, a.prevLast
	}
	a.prevLast = a.last
	s := Segment{Name: fmt.Sprintf("%s:%d", a.segStart.File, a.segStart.Pos), Start: a.segStart, End: end,
		Data: data, FirstCommit: a.first, LastCommit: a.last, Branch: a.branch}
	if err := a.out(ctx, s); err != nil {
		return err
	}
	a.body.Reset()
	a.segStart, a.first, a.last, a.boundary = end, time.Time{}, time.Time{}, true
	return nil
}

// track advances the GTID set with a transaction's GTID, or with the
// list a binlog file starts with.
func (a *archiver) track(ev *replication.BinlogEvent) {
	switch e := ev.Event.(type) {
	case *replication.MariadbGTIDEvent:
		if a.gtid.mariadb {
			a.gtid.addMaria(e.GTID.DomainID, e.GTID.ServerID, e.GTID.SequenceNumber)
		}
	case *replication.MariadbGTIDListEvent:
		if a.gtid.mariadb {
			for _, g := range e.GTIDs {
				a.gtid.addMaria(g.DomainID, g.ServerID, g.SequenceNumber)
			}
		}
	case *replication.GTIDEvent:
		if a.gtid.mysql != nil && ev.Header.EventType == replication.GTID_EVENT { // not an anonymous one
			if next, err := e.GTIDNext(); err == nil {
				_ = a.gtid.mysql.Add(*next.(*gomysql.MysqlGTIDSet))
			}
		}
	case *replication.PreviousGTIDsEvent:
		if a.gtid.mysql != nil {
			if set, err := gomysql.ParseMysqlGTIDSet(e.GTIDSets); err == nil {
				_ = a.gtid.mysql.Add(*set.(*gomysql.MysqlGTIDSet))
			}
		}
	}
}

// resumePlan is where and in which epoch archiving goes on.
type resumePlan struct {
	start  Pos // by file and position, or, when byGTID, after start.GTID
	byGTID bool
	epoch  uint32
	branch Pos    // the epoch's branch (zero in epoch 1)
	why    string // for a new epoch: what forked the history
}

// planResume decides how archiving goes on against the server info
// describes (its binlog files logs, oldest first) after the archived end
// (zero for a new stream) whose epoch began at endBranch:
//
//   - the same server, whose binlog still holds end's history (its GTID
//     set covers end's) and end's file: on from end, same epoch;
//   - the same server whose binlog restarted (RESET MASTER: its GTID set
//     no longer covers end's, or its files are numbered below end's): a
//     new epoch from its oldest binlog, branching at end;
//   - another server (a promoted replica) that has applied end's GTID set:
//     a new epoch in its binlog, after those transactions, branching at
//     end; one that has not is refused, naming what it lacks.
func planResume(info *Info, logs []string, end, endBranch Pos) (resumePlan, error) {
	oldest := Pos{File: logs[0], Pos: 4}
	if end.File == "" {
		return resumePlan{start: oldest, epoch: 1}, nil
	}
	epoch := max(end.Epoch, 1)
	applied := info.Pos.GTID // gtid_binlog_pos (MariaDB), Executed_Gtid_Set (MySQL)
	if end.Server == "" || end.Server == info.Identity() {
		newest, _ := FileNumber(logs[len(logs)-1])
		endNo, _ := FileNumber(end.File)
		reset := newest < endNo
		why := fmt.Sprintf("binlog files are numbered up to %s, below the archived %s", logs[len(logs)-1], end.File)
		if !reset && end.GTID != "" && applied != "" {
			miss, err := missingGTIDs(info.MariaDB, end.GTID, applied)
			if err != nil {
				return resumePlan{}, fmt.Errorf("compare the archived GTID set with the server's: %w", err)
			}
			reset, why = miss != "", fmt.Sprintf("the binlog's GTID set %s no longer holds the archived %s", applied, end.GTID)
		}
		switch {
		case reset:
			return resumePlan{start: oldest, epoch: epoch + 1, branch: end, why: "binlog reset (RESET MASTER): " + why}, nil
		case contains(logs, end.File):
			return resumePlan{start: end, epoch: epoch, branch: endBranch}, nil
		}
		return resumePlan{}, fmt.Errorf("%w: binlog %s, where archiving must resume (%s), was purged before it was archived (the server's oldest is %s): log was lost; take a new base backup, then restart archiving",
			ErrLogLost, end.File, end.Text(), logs[0])
	}
	who := fmt.Sprintf("server %s", info.Identity())
	if end.GTID == "" {
		return resumePlan{}, fmt.Errorf("the archive's end %s was written by server %s, not by %s, and records no GTID set, so whether %s holds the archived history cannot be told: take a new base backup of it and archive it under a lineage of its own (target setting lineage)",
			end.Text(), end.Server, who, who)
	}
	have := []string{applied}
	if info.MariaDB {
		have = append(have, info.SlavePos)
	}
	miss, err := missingGTIDs(info.MariaDB, end.GTID, have...)
	if err != nil {
		return resumePlan{}, fmt.Errorf("compare the archived GTID set with the server's: %w", err)
	}
	if miss != "" {
		return resumePlan{}, fmt.Errorf("%s has not applied every archived transaction: it lacks %s (the archive of server %s ends at %s); it cannot continue this archive. Point the archiver at a server that has them, or take a new base backup of %s and archive it under a lineage of its own (target setting lineage)",
			who, miss, end.Server, end.Text(), who)
	}
	return resumePlan{start: Pos{GTID: end.GTID}, byGTID: true, epoch: epoch + 1, branch: end,
		why: fmt.Sprintf("new source: %s continues the archive of server %s", who, end.Server)}, nil
}

// BackupEpoch is the epoch of a backup taken now on the server d names,
// given the end of the log archived in its lineage's stream (zero when
// nothing is archived): the epoch in which Archive goes on, or would go
// on, on this server (planResume), so that the backup and the archive
// name the same epoch. It also returns the server's identity.
func BackupEpoch(ctx context.Context, d DSN, lineage string, archived, archivedBranch Pos) (uint32, string, error) {
	db, _, err := Open(ctx, d)
	if err != nil {
		return 0, "", err
	}
	defer db.Close()
	info, err := probeDB(ctx, db, lineage)
	if err != nil {
		return 0, "", err
	}
	if archived.File == "" {
		return 1, info.Identity(), nil
	}
	logs, err := binaryLogs(ctx, db)
	if err != nil || len(logs) == 0 {
		return 0, "", fmt.Errorf("list binary logs: %v", err)
	}
	plan, err := planResume(info, logs, archived, archivedBranch)
	if err != nil {
		// Archiving cannot go on here (lost log, or a server without
		// the archived history): the backup still names its server's
		// epoch, the archive's on the same server, a new one on another.
		if archived.Server == "" || archived.Server == info.Identity() {
			return max(archived.Epoch, 1), info.Identity(), nil
		}
		return max(archived.Epoch, 1) + 1, info.Identity(), nil
	}
	return plan.epoch, info.Identity(), nil
}

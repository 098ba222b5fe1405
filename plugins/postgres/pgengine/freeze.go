package pgengine

import (
	"context"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// FreezeOptions tune Freeze.
type FreezeOptions struct {
	Label string        // default "amber"
	Lease time.Duration // default 10 minutes
	// SpreadCheckpoint waits for a spread checkpoint instead of a fast one.
	SpreadCheckpoint bool
	Clock            clock.Clock // default clock.Real
}

// ErrLeaseExpired: Thaw came after the freeze lease ran out; the backup was
// aborted and the snapshot taken meanwhile is not restorable.
var ErrLeaseExpired = errors.New("freeze lease expired; the backup was aborted, take the snapshot again")

// Frozen is a running non-exclusive backup (pg_backup_start) held by its own
// session. Take the volume snapshot, then call Thaw.
type Frozen struct {
	StartLSN LSN
	Timeline int32
	Started  time.Time

	conn    *pgx.Conn
	major   int
	mu      sync.Mutex
	timer   clock.Timer
	expired bool
	done    bool
}

// ThawResult is what a snapshot needs to be restorable: write BackupLabel to
// <datadir>/backup_label and, if not empty, TablespaceMap to
// <datadir>/tablespace_map in the restored snapshot.
type ThawResult struct {
	StartLSN      LSN
	StopLSN       LSN
	BackupLabel   string
	TablespaceMap string
	StopTime      time.Time // server clock after pg_backup_stop; consistent from here
}

// Freeze starts a non-exclusive backup in a dedicated session. If Thaw is
// not called within the lease, the session is closed, which aborts the
// backup on the server.
func Freeze(ctx context.Context, dsn DSN, opts FreezeOptions) (*Frozen, error) {
	info, err := Probe(ctx, dsn)
	if info == nil {
		return nil, err
	}
	if info.WALLevel == "minimal" {
		return nil, fmt.Errorf("%w; set wal_level=replica and restart", ErrWALLevelMinimal)
	}
	conn, err := connectSQL(ctx, dsn)
	if err != nil {
		return nil, err
	}
	label := opts.Label
	if label == "" {
		label = "amber"
	}
	f := &Frozen{conn: conn, major: info.Major}
	q := "SELECT pg_backup_start($1, $2)::text"
	if info.Major < 15 {
		q = "SELECT pg_start_backup($1, $2, false)::text"
	}
	if err := conn.QueryRow(ctx, q, label, !opts.SpreadCheckpoint).Scan(&f.StartLSN); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("freeze %s: %w", dsn, err)
	}
	if err := conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&f.Started); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("freeze %s: %w", dsn, err)
	}
	f.Timeline = info.Timeline
	lease := opts.Lease
	if lease <= 0 {
		lease = 10 * time.Minute
	}
	f.timer = clock.Or(opts.Clock).AfterFunc(lease, f.expire)
	return f, nil
}

func (f *Frozen) expire() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	f.expired, f.done = true, true
	// Closing the session makes the server abort the backup.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.conn.Close(ctx)
}

// Thaw ends the backup with pg_backup_stop and returns the backup label and
// tablespace map. It fails with ErrLeaseExpired after the lease ran out.
func (f *Frozen) Thaw(ctx context.Context) (*ThawResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.expired {
		return nil, ErrLeaseExpired
	}
	if f.done {
		return nil, errors.New("thaw: backup already ended")
	}
	f.done = true
	f.timer.Stop()
	defer f.conn.Close(context.Background())
	res := &ThawResult{StartLSN: f.StartLSN}
	q := "SELECT lsn::text, labelfile, coalesce(spcmapfile, ''), clock_timestamp() FROM pg_backup_stop(true)"
	if f.major < 15 {
		q = "SELECT lsn::text, labelfile, coalesce(spcmapfile, ''), clock_timestamp() FROM pg_stop_backup(false, true)"
	}
	if err := f.conn.QueryRow(ctx, q).Scan(&res.StopLSN, &res.BackupLabel, &res.TablespaceMap, &res.StopTime); err != nil {
		return nil, fmt.Errorf("thaw: pg_backup_stop: %w", err)
	}
	return res, nil
}

// Abort ends the freeze without a result (closing the session).
func (f *Frozen) Abort() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	f.done = true
	f.timer.Stop()
	f.conn.Close(context.Background())
}

// PID is the server process id of the session holding the backup.
func (f *Frozen) PID() uint32 { return f.conn.PgConn().PID() }

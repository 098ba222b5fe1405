package myengine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api/clock"
)

// FreezeOptions tune Freeze.
type FreezeOptions struct {
	// LockWait bounds the wait for running statements and commits to let
	// the lock through (lock_wait_timeout); default 60 s.
	LockWait time.Duration
	// Lease closes the session by itself if Thaw does not come within it;
	// default 10 minutes. (The plugin's contract enforces the caller's
	// lease; this is a backstop for a plugin that outlives its host.)
	Lease time.Duration
	Clock clock.Clock // default clock.Real
}

// Freeze methods.
const (
	// FreezeBackupStage is MariaDB's (10.4 and newer) backup lock:
	// BACKUP STAGE START, FLUSH, BLOCK_DDL, BLOCK_COMMIT. Statements keep
	// running; DDL, commits and writes to non-transactional tables wait.
	// It is the stage MariaDB documents for storage snapshots.
	FreezeBackupStage = "BACKUP STAGE BLOCK_COMMIT"
	// FreezeReadLock is FLUSH TABLES WITH READ LOCK (MySQL, older
	// MariaDB): every write waits.
	FreezeReadLock = "FLUSH TABLES WITH READ LOCK"
)

// ErrLeaseExpired: Thaw came after the freeze's own lease ran out and the
// lock was released; a snapshot taken meanwhile must be discarded.
var ErrLeaseExpired = errors.New("freeze lease expired; the lock was released, take the snapshot again")

// Frozen is a lock held by a session of its own. Take the volume snapshot,
// then call Thaw. Closing the session (Abort, the lease, the plugin's
// death) releases the lock on the server.
type Frozen struct {
	Pos    Pos       // the binlog position while frozen: the snapshot is consistent here
	Time   time.Time // server time once frozen (UTC)
	Method string    // FreezeBackupStage or FreezeReadLock
	ConnID int64     // the server's id of the session holding the lock
	// DataDir is the server's data directory (@@datadir), read before
	// the lock: where a server started on the snapshot finds its files.
	DataDir string

	db      *sql.DB
	conn    *sql.Conn
	mu      sync.Mutex
	timer   clock.Timer
	expired bool
	done    bool
}

// Freeze takes the lock in a dedicated session and reads the binlog
// position under it.
func Freeze(ctx context.Context, d DSN, o FreezeOptions) (*Frozen, error) {
	if o.LockWait <= 0 {
		o.LockWait = 60 * time.Second
	}
	if o.Lease <= 0 {
		o.Lease = 10 * time.Minute
	}
	db, _, err := Open(ctx, d)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			db.Close()
		}
	}()
	info, err := probeDB(ctx, db, "")
	if err != nil {
		return nil, err
	}
	// A released connection is closed, never pooled: closing the session
	// is what releases the lock.
	db.SetMaxIdleConns(0)
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	f := &Frozen{db: db, conn: conn, Method: FreezeReadLock}
	stmts := []string{FreezeReadLock}
	if info.MariaDB && versionAtLeast(info.Version, 10, 4) {
		f.Method = FreezeBackupStage
		stmts = []string{"BACKUP STAGE START", "BACKUP STAGE FLUSH", "BACKUP STAGE BLOCK_DDL", "BACKUP STAGE BLOCK_COMMIT"}
	}
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID(), @@datadir").Scan(&f.ConnID, &f.DataDir); err != nil {
		return nil, err
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("SET SESSION lock_wait_timeout = %d", max(1, int(o.LockWait.Seconds())))); err != nil {
		return nil, err
	}
	for _, q := range stmts {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("freeze: %s (the user needs RELOAD; running statements must let it through within lock_wait_seconds): %w", q, err)
		}
	}
	pos, err := masterStatus(ctx, conn, info.MariaDB)
	if err != nil {
		return nil, fmt.Errorf("freeze: %w", err)
	}
	pos.Epoch = 1
	f.Pos = pos
	var now string
	if err := conn.QueryRowContext(ctx, "SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ')").Scan(&now); err != nil {
		return nil, fmt.Errorf("freeze: read the server's time: %w", err)
	}
	if f.Time, err = time.Parse(time.RFC3339Nano, now); err != nil {
		return nil, fmt.Errorf("freeze: server time %q: %w", now, err)
	}
	f.timer = clock.Or(o.Clock).AfterFunc(o.Lease, f.expire)
	ok = true
	return f, nil
}

// versionAtLeast compares @@version's leading major.minor.
func versionAtLeast(v string, major, minor int) bool {
	f := strings.SplitN(strings.SplitN(v, "-", 2)[0], ".", 3)
	if len(f) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(f[0])
	mi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}

// close ends the session, which releases the lock on the server.
func (f *Frozen) close() {
	f.conn.Close()
	f.db.Close()
}

func (f *Frozen) expire() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	f.expired, f.done = true, true
	f.close()
}

// Thaw releases the lock (BACKUP STAGE END or UNLOCK TABLES) and ends the
// session. It fails with ErrLeaseExpired after the lease ran out, and
// when the session was lost (the lock went with it).
func (f *Frozen) Thaw(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.expired {
		return ErrLeaseExpired
	}
	if f.done {
		return errors.New("thaw: the freeze already ended")
	}
	f.done = true
	f.timer.Stop()
	defer f.close()
	q := "UNLOCK TABLES"
	if f.Method == FreezeBackupStage {
		q = "BACKUP STAGE END"
	}
	// The session must be the one that froze: a lost connection must not
	// be replaced by a new one that releases nothing and hides the loss.
	var id int64
	if err := f.conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil || id != f.ConnID {
		return fmt.Errorf("thaw: the session holding the lock was lost (%v), and the lock with it: a snapshot taken under this freeze must be discarded", err)
	}
	if _, err := f.conn.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("thaw: %s: %w", q, err)
	}
	return nil
}

// Abort ends the freeze without a result, closing the session.
func (f *Frozen) Abort() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	f.done = true
	f.timer.Stop()
	f.close()
}

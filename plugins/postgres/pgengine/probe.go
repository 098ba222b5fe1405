package pgengine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Info describes a server as Probe found it.
type Info struct {
	ServerVersion    string // e.g. "15.14 (Debian 15.14-0+deb12u1)"
	VersionNum       int    // server_version_num, e.g. 150014
	Major            int    // e.g. 15
	Standby          bool   // pg_is_in_recovery()
	Timeline         int32  // current timeline (0 if no replication connection)
	CurrentLSN       LSN    // flush position (primary) or replay position (standby)
	WALLevel         string // minimal, replica or logical
	WALSegmentSize   int64  // bytes, normally 16 MiB
	User             string
	Superuser        bool
	Replication      bool // the role has REPLICATION (or is superuser)
	ReplicationConns bool // a walsender connection was accepted
	SystemID         string
	// Standbys only (standbyLag): Lag is how far the standby trails, as
	// time; LagUnknown says why it could not be told (Lag is then 0);
	// WALReceiver is the WAL receiver's status ("streaming", ...),
	// "running" when the role may not see it (it lacks pg_read_all_stats),
	// or "none" when the standby runs none.
	Lag         time.Duration
	LagUnknown  string
	WALReceiver string
}

// Probe connects to the server, reports what it is, and checks what the
// physical capabilities need. When it could connect, it returns the Info
// together with any problems joined into the error (errors.Is works with
// ErrNoReplication and ErrWALLevelMinimal); a failed connection returns a
// nil Info and an ErrConnect error. Errors never contain the password.
func Probe(ctx context.Context, dsn DSN) (*Info, error) {
	conn, err := connectSQL(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	info := &Info{}
	var segSize string
	err = conn.QueryRow(ctx, `SELECT version(), current_setting('server_version_num')::int,
		pg_is_in_recovery(), current_setting('wal_level'), current_setting('wal_segment_size'),
		current_user, r.rolsuper, r.rolreplication OR r.rolsuper,
		CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text ELSE pg_current_wal_flush_lsn()::text END,
		(SELECT system_identifier::text FROM pg_control_system())
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(
		&info.ServerVersion, &info.VersionNum, &info.Standby, &info.WALLevel, &segSize,
		&info.User, &info.Superuser, &info.Replication, &info.CurrentLSN, &info.SystemID)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", dsn, err)
	}
	info.Major = info.VersionNum / 10000
	if info.Major < 10 {
		return info, fmt.Errorf("PostgreSQL %s is not supported; use 10 or newer", info.ServerVersion)
	}
	if info.Standby {
		if err := standbyLag(ctx, conn, info); err != nil {
			info.LagUnknown = "cannot read it: " + err.Error()
		}
	}
	info.WALSegmentSize, err = parseSize(segSize)
	if err != nil {
		return info, fmt.Errorf("probe %s: wal_segment_size %q: %w", dsn, segSize, err)
	}

	var problems []error
	if info.WALLevel == "minimal" {
		problems = append(problems, fmt.Errorf("%w; set wal_level=replica and restart", ErrWALLevelMinimal))
	}
	if !info.Replication {
		problems = append(problems, fmt.Errorf("%w: role %s lacks REPLICATION; ALTER ROLE %s REPLICATION",
			ErrNoReplication, info.User, info.User))
	}
	if info.Replication && info.WALLevel != "minimal" {
		rc, err := connectReplication(ctx, dsn)
		if err != nil {
			problems = append(problems, err)
		} else {
			sys, err := pglogrepl.IdentifySystem(ctx, rc)
			rc.Close(context.Background())
			if err != nil {
				problems = append(problems, fmt.Errorf("IDENTIFY_SYSTEM: %w", err))
			} else {
				info.ReplicationConns = true
				info.Timeline = sys.Timeline
				if !info.Standby {
					info.CurrentLSN = LSN(sys.XLogPos)
				}
			}
		}
	}
	return info, errors.Join(problems...)
}

// standbyLag sets info's Lag, LagUnknown and WALReceiver for a standby.
// While its WAL receiver streams and it has replayed all the WAL it
// received, the lag is 0. Otherwise it is the age of the last transaction
// it replayed (pg_last_xact_replay_timestamp), as monitoring tools count
// it: a standby that replays behind what it received, or that receives
// nothing (its primary gone, or fed only by restore_command), is reported
// as stale as its newest replayed commit, never less (with the two
// servers' clocks in sync: the age is the standby's clock against the
// primary's commit times). A standby that has replayed no commit since it
// started, and is not caught up, has an unknown lag.
func standbyLag(ctx context.Context, conn *pgx.Conn, info *Info) error {
	var (
		receiver string
		caughtUp bool
		age      *float64
	)
	// pg_stat_wal_receiver shows a role without pg_read_all_stats the
	// receiver's pid only.
	err := conn.QueryRow(ctx, `SELECT COALESCE((SELECT COALESCE(status, 'running') FROM pg_stat_wal_receiver WHERE pid IS NOT NULL), 'none'),
		COALESCE(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false),
		GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()))::float8`).Scan(&receiver, &caughtUp, &age)
	if err != nil {
		return err
	}
	info.WALReceiver = receiver
	switch {
	case (receiver == "streaming" || receiver == "running") && caughtUp:
	case age != nil:
		info.Lag = time.Duration(*age * float64(time.Second))
	default:
		info.LagUnknown = "no transaction replayed since the standby started, and it has not replayed all it received (WAL receiver: " + receiver + ")"
	}
	return nil
}

// parseSize parses a PostgreSQL size setting as SHOW/current_setting prints it.
func parseSize(s string) (int64, error) {
	var n int64
	var unit string
	if _, err := fmt.Sscanf(s, "%d%s", &n, &unit); err != nil {
		if _, err := fmt.Sscanf(s, "%d", &n); err != nil {
			return 0, err
		}
	}
	switch unit {
	case "", "B":
	case "kB":
		n <<= 10
	case "MB":
		n <<= 20
	case "GB":
		n <<= 30
	default:
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	return n, nil
}

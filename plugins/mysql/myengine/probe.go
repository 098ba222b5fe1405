package myengine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Info is what Probe learns about a server.
type Info struct {
	Version      string // @@version
	MariaDB      bool
	ReadOnly     bool
	Replica      bool          // replicating from a source
	Lag          time.Duration // Seconds_Behind_Master on a replica
	LogBin       bool
	BinlogFormat string
	ServerID     uint32
	DomainID     uint32 // MariaDB gtid_domain_id
	ServerUUID   string // MySQL
	SourceID     string // the source's server id (MariaDB) or UUID (MySQL) on a replica
	// SlavePos is MariaDB's gtid_slave_pos: the last GTID applied from a
	// source, per domain; it outlives a promotion (RESET SLAVE ALL keeps it).
	SlavePos    string
	Lineage     string
	Pos         Pos // current binlog position, when log_bin is on
	User        string
	Missing     []string // privileges missing for backups and archiving
	BackupAdmin bool     // MySQL 8's BACKUP_ADMIN (LOCK INSTANCE FOR BACKUP, performance_schema.log_status)
}

// Problems lists what stops backups and archiving, each saying what to do.
func (i *Info) Problems() []string {
	var p []string
	if !i.LogBin {
		p = append(p, "the binary log is off (log_bin=OFF): start the server with --log-bin (log_bin in its config) and restart it; backups need a binlog position and archiving reads the binlog")
	} else if !strings.EqualFold(i.BinlogFormat, "ROW") {
		p = append(p, fmt.Sprintf("binlog_format is %s: set binlog_format=ROW (SET GLOBAL binlog_format=ROW, and in the config so it survives a restart)", i.BinlogFormat))
	}
	if len(i.Missing) > 0 {
		p = append(p, fmt.Sprintf("user %s lacks the privileges %s: run GRANT RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO %s",
			i.User, strings.Join(i.Missing, ", "), i.User))
	}
	return p
}

// Probe connects to d and describes the server. It returns Info even when
// the server is unfit for backups, with an error listing why.
func Probe(ctx context.Context, d DSN, lineage string) (*Info, error) {
	db, _, err := Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return probeDB(ctx, db, lineage)
}

func probeDB(ctx context.Context, db *sql.DB, lineage string) (*Info, error) {
	i := &Info{}
	var logBin, readOnly int
	if err := db.QueryRowContext(ctx, `SELECT @@version, @@log_bin, @@binlog_format, @@read_only, @@server_id, CURRENT_USER()`).
		Scan(&i.Version, &logBin, &i.BinlogFormat, &readOnly, &i.ServerID, &i.User); err != nil {
		return nil, fmt.Errorf("probe server: %w", err)
	}
	i.LogBin, i.ReadOnly = logBin == 1, readOnly == 1
	i.MariaDB = strings.Contains(strings.ToLower(i.Version), "mariadb")
	if u, h, ok := strings.Cut(i.User, "@"); ok {
		i.User = "'" + u + "'@'" + h + "'"
	}
	if i.MariaDB {
		if err := db.QueryRowContext(ctx, `SELECT @@gtid_domain_id, @@gtid_slave_pos`).Scan(&i.DomainID, &i.SlavePos); err != nil {
			return nil, fmt.Errorf("probe gtid_domain_id: %w", err)
		}
	} else if err := db.QueryRowContext(ctx, `SELECT @@server_uuid`).Scan(&i.ServerUUID); err != nil {
		return nil, fmt.Errorf("probe server_uuid: %w", err)
	}
	if err := replicaStatus(ctx, db, i); err != nil {
		return nil, err
	}
	missing, have, err := missingPrivileges(ctx, db, i.User)
	if err != nil {
		return nil, err
	}
	i.Missing, i.BackupAdmin = missing, have["BACKUP_ADMIN"]
	if i.LogBin && len(missing) == 0 {
		p, err := masterStatus(ctx, db, i.MariaDB)
		if err != nil {
			return nil, err
		}
		p.Epoch, p.Server = 1, i.Identity()
		i.Pos = p
	}
	i.Lineage = lineage
	if i.Lineage == "" {
		i.Lineage = defaultLineage(i)
	}
	if p := i.Problems(); len(p) > 0 {
		return i, errors.New(strings.Join(p, "; "))
	}
	return i, nil
}

// defaultLineage names the history a server belongs to. A replica names
// its source, so a primary and its replicas share the lineage: MariaDB
// "mariadb-<gtid_domain_id>-<source server_id>", MySQL "mysql-<source
// server_uuid>". A MariaDB primary that was a replica (a promoted one: its
// gtid_slave_pos holds a GTID of its domain that another server wrote)
// names the server it replicated from, so that the archive of its former
// primary goes on in the same stream (in a new epoch). A MySQL promotion
// changes the lineage unless the "lineage" setting fixes it.
func defaultLineage(i *Info) string {
	if i.MariaDB {
		src := strconv.FormatUint(uint64(i.ServerID), 10)
		if i.Replica && i.SourceID != "" {
			src = i.SourceID
		} else if !i.Replica {
			if m, err := parseMariaPos(i.SlavePos); err == nil {
				if g, ok := m[i.DomainID]; ok && g.server != i.ServerID {
					src = strconv.FormatUint(uint64(g.server), 10)
				}
			}
		}
		return fmt.Sprintf("mariadb-%d-%s", i.DomainID, src)
	}
	src := i.ServerUUID
	if i.Replica && i.SourceID != "" {
		src = i.SourceID
	}
	return "mysql-" + src
}

// Identity names the server whose binlog a position is in: server_id on
// MariaDB, server_uuid on MySQL.
func (i *Info) Identity() string {
	if i.MariaDB {
		return strconv.FormatUint(uint64(i.ServerID), 10)
	}
	return i.ServerUUID
}

// rowMap reads one row of a SHOW statement into column -> value.
func rowMap(rows *sql.Rows) (map[string]string, error) {
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for k := range vals {
		ptrs[k] = &vals[k]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	m := make(map[string]string, len(cols))
	for k, c := range cols {
		m[c] = vals[k].String
	}
	return m, nil
}

func showOne(ctx context.Context, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, q string) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	return rowMap(rows)
}

func replicaStatus(ctx context.Context, db *sql.DB, i *Info) error {
	m, err := showOne(ctx, db, "SHOW SLAVE STATUS")
	if err != nil {
		m, err = showOne(ctx, db, "SHOW REPLICA STATUS")
	}
	if err != nil {
		// Without REPLICATION CLIENT the role is read_only alone.
		i.Replica = i.ReadOnly
		return nil
	}
	if m == nil {
		return nil
	}
	i.Replica = true
	i.SourceID = m["Master_Server_Id"]
	if !i.MariaDB && m["Master_UUID"] != "" {
		i.SourceID = m["Master_UUID"]
	}
	if s, err := strconv.Atoi(m["Seconds_Behind_Master"]); err == nil {
		i.Lag = time.Duration(s) * time.Second
	}
	return nil
}

// missingPrivileges lists the global privileges user lacks among RELOAD
// (the dump's brief global read lock), REPLICATION CLIENT (binlog
// position; BINLOG MONITOR on MariaDB 10.5+) and REPLICATION SLAVE
// (reading the binlog).
func missingPrivileges(ctx context.Context, db *sql.DB, user string) ([]string, map[string]bool, error) {
	rows, err := db.QueryContext(ctx, `SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?`, user)
	if err != nil {
		return nil, nil, fmt.Errorf("read the privileges of %s: %w", user, err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, nil, err
		}
		have[strings.ToUpper(p)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	var missing []string
	if !have["RELOAD"] {
		missing = append(missing, "RELOAD")
	}
	if !have["REPLICATION CLIENT"] && !have["BINLOG MONITOR"] {
		missing = append(missing, "REPLICATION CLIENT")
	}
	if !have["REPLICATION SLAVE"] {
		missing = append(missing, "REPLICATION SLAVE")
	}
	return missing, have, nil
}

// masterStatus reads the current binlog file, position and GTID set.
func masterStatus(ctx context.Context, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, mariadb bool) (Pos, error) {
	m, err := showOne(ctx, db, "SHOW MASTER STATUS")
	if err != nil {
		// MySQL 8.4 renamed it.
		m, err = showOne(ctx, db, "SHOW BINARY LOG STATUS")
	}
	if err != nil {
		return Pos{}, fmt.Errorf("read the binlog position: %w", err)
	}
	if m == nil {
		return Pos{}, errors.New("the server reports no binlog position: is log_bin on?")
	}
	n, err := strconv.ParseUint(m["Position"], 10, 32)
	if err != nil {
		return Pos{}, fmt.Errorf("binlog position %q: %w", m["Position"], err)
	}
	p := Pos{File: m["File"], Pos: uint32(n), GTID: strings.ReplaceAll(m["Executed_Gtid_Set"], "\n", "")}
	if mariadb {
		rows, err := db.QueryContext(ctx, "SELECT @@gtid_binlog_pos")
		if err != nil {
			return Pos{}, fmt.Errorf("read gtid_binlog_pos: %w", err)
		}
		defer rows.Close()
		if rows.Next() {
			if err := rows.Scan(&p.GTID); err != nil {
				return Pos{}, err
			}
		}
	}
	return p, nil
}

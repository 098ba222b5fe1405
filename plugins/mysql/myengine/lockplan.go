package myengine

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// lockPlan is the statement sequence a logical dump runs to start its
// workers' snapshots at one binlog position. LogicalDump runs, on one lock
// session, Lock (writes are blocked from Lock[Blocks] on), then Snapshot in
// every worker session, then Position (on the lock session), then Release
// (writes resume; the lock time ends), and Final when the dump is over.
//
// The strategies:
//
//   - MariaDB, MySQL before 8.0.14, or a MySQL user without BACKUP_ADMIN:
//     FLUSH TABLES WITH READ LOCK, the snapshots, SHOW MASTER STATUS
//     (plus @@gtid_binlog_pos on MariaDB), UNLOCK TABLES.
//   - MySQL 8.0.14 and newer with BACKUP_ADMIN: LOCK INSTANCE FOR BACKUP
//     first, held for the whole dump, then the same brief FLUSH TABLES WITH
//     READ LOCK for the snapshots, the position read from
//     performance_schema.log_status, UNLOCK TABLES, and UNLOCK INSTANCE when
//     the dump ends. LOCK INSTANCE FOR BACKUP alone is not a consistency
//     point: it permits DML, so transactions would commit between one
//     worker's START TRANSACTION WITH CONSISTENT SNAPSHOT and the next, and
//     between the snapshots and any position read (MySQL has no
//     binlog_snapshot_file/pos status like MariaDB's). The read lock is what
//     stops commits while the snapshots start, so every snapshot sees the
//     same set of committed transactions, exactly those up to the position
//     read under it. The backup lock adds what the read lock, released
//     after a few milliseconds, does not give: no DDL, TRUNCATE, RENAME,
//     OPTIMIZE or REPAIR for the rest of the dump, so a table cannot be
//     rebuilt under an open snapshot (MySQL then fails the read with "Table
//     definition has changed") or renamed between the schema and data
//     reads. log_status reports binary_log_file, binary_log_position and
//     gtid_executed from one collection taken with commits blocked, so the
//     three agree with each other (SHOW MASTER STATUS would too under the
//     read lock; log_status needs BACKUP_ADMIN and performance_schema, and
//     when it cannot be read the dump falls back to SHOW MASTER STATUS).
type lockPlan struct {
	Name     string   // for messages and docs
	Lock     []string // on the lock session, in order
	Blocks   int      // index in Lock of the statement that blocks writes
	Snapshot string   // in every worker
	Position string   // "" = SHOW MASTER STATUS (and @@gtid_binlog_pos on MariaDB)
	Release  []string // on the lock session once the position is read
	Final    []string // on the lock session when the dump ends
}

// lockFacts is what chooses a plan.
type lockFacts struct {
	MariaDB     bool
	Version     string // @@version
	BackupAdmin bool
}

const (
	ftwrl             = "FLUSH TABLES WITH READ LOCK"
	consistentSnap    = "START TRANSACTION WITH CONSISTENT SNAPSHOT"
	logStatusPosition = "SELECT LOCAL FROM performance_schema.log_status"
)

// chooseLockPlan picks the dump's lock strategy for a server.
func chooseLockPlan(f lockFacts) lockPlan {
	ftwrlPlan := lockPlan{Name: "FLUSH TABLES WITH READ LOCK", Lock: []string{ftwrl}, Snapshot: consistentSnap, Release: []string{"UNLOCK TABLES"}}
	if f.MariaDB || !f.BackupAdmin || !versionPatchAtLeast(f.Version, 8, 0, 14) {
		return ftwrlPlan
	}
	return lockPlan{
		Name:     "LOCK INSTANCE FOR BACKUP + FLUSH TABLES WITH READ LOCK",
		Lock:     []string{"LOCK INSTANCE FOR BACKUP", ftwrl},
		Blocks:   1,
		Snapshot: consistentSnap,
		Position: logStatusPosition,
		Release:  []string{"UNLOCK TABLES"},
		Final:    []string{"UNLOCK INSTANCE"},
	}
}

// Steps is the whole sequence for workers sessions, each statement
// prefixed by the session that runs it ("lock: ", "worker N: ").
func (p lockPlan) Steps(workers int) []string {
	var s []string
	for _, q := range p.Lock {
		s = append(s, "lock: "+q)
	}
	for k := 1; k <= workers; k++ {
		s = append(s, fmt.Sprintf("worker %d: %s", k, p.Snapshot))
	}
	if p.Position == "" {
		s = append(s, "lock: SHOW MASTER STATUS")
	} else {
		s = append(s, "lock: "+p.Position)
	}
	for _, q := range p.Release {
		s = append(s, "lock: "+q)
	}
	for _, q := range p.Final {
		s = append(s, "lock: "+q)
	}
	return s
}

var versionRE = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)`)

// versionPatchAtLeast reports whether a server version ("8.0.36", "8.4.0-log",
// "10.11.6-MariaDB-0+deb12u1") is at least major.minor.patch. An
// unreadable version is not.
func versionPatchAtLeast(v string, major, minor, patch int) bool {
	m := versionRE.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return false
	}
	var n [3]int
	for k := range n {
		n[k], _ = strconv.Atoi(m[k+1])
	}
	want := [3]int{major, minor, patch}
	for k := range n {
		if n[k] != want[k] {
			return n[k] > want[k]
		}
	}
	return true
}

// parseLogStatus reads performance_schema.log_status's LOCAL column:
// {"gtid_executed": "uuid:1-5,\nuuid2:1-3", "binary_log_file":
// "binlog.000003", "binary_log_position": 1234}.
func parseLogStatus(local []byte) (Pos, error) {
	var l struct {
		GTID string      `json:"gtid_executed"`
		File string      `json:"binary_log_file"`
		Pos  json.Number `json:"binary_log_position"`
	}
	if err := json.Unmarshal(local, &l); err != nil {
		return Pos{}, fmt.Errorf("performance_schema.log_status LOCAL %q: %w", local, err)
	}
	if l.File == "" {
		return Pos{}, errors.New("performance_schema.log_status reports no binary_log_file: is log_bin on?")
	}
	n, err := strconv.ParseUint(l.Pos.String(), 10, 32)
	if err != nil {
		return Pos{}, fmt.Errorf("performance_schema.log_status binary_log_position %q: %w", l.Pos, err)
	}
	gtid, err := normalizeMySQLGTIDSet(l.GTID)
	if err != nil {
		return Pos{}, err
	}
	return Pos{File: l.File, Pos: uint32(n), GTID: gtid}, nil
}

var (
	mysqlUUIDRE     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	mysqlIntervalRE = regexp.MustCompile(`^([1-9][0-9]*)(?:-([1-9][0-9]*))?$`)
	mysqlTagRE      = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,31}$`)
)

// normalizeMySQLGTIDSet checks a MySQL GTID set ("uuid:1-5:7,uuid2:1-3",
// with MySQL 8.4's tags "uuid:tag:1-3" too) and returns it without the
// whitespace and newlines the server puts after each comma. The empty set
// is "".
func normalizeMySQLGTIDSet(s string) (string, error) {
	s = strings.Join(strings.Fields(s), "")
	if s == "" {
		return "", nil
	}
	for _, part := range strings.Split(s, ",") {
		f := strings.Split(part, ":")
		if len(f) < 2 || !mysqlUUIDRE.MatchString(f[0]) {
			return "", fmt.Errorf("GTID set %q: %q is not <server uuid>:<interval>[:<interval>...]", s, part)
		}
		for _, iv := range f[1:] {
			if mysqlTagRE.MatchString(iv) {
				continue
			}
			m := mysqlIntervalRE.FindStringSubmatch(iv)
			if m == nil {
				return "", fmt.Errorf("GTID set %q: interval %q is not N or N-M", s, iv)
			}
			if m[2] != "" {
				a, err1 := strconv.ParseUint(m[1], 10, 63)
				b, err2 := strconv.ParseUint(m[2], 10, 63)
				if err1 != nil || err2 != nil || b < a {
					return "", fmt.Errorf("GTID set %q: interval %q is not N-M with N <= M < 2^63", s, iv)
				}
			} else if _, err := strconv.ParseUint(m[1], 10, 63); err != nil {
				return "", fmt.Errorf("GTID set %q: interval %q is not below 2^63", s, iv)
			}
		}
	}
	return s, nil
}

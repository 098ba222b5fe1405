package myengine

import (
	"slices"
	"testing"
)

func TestChooseLockPlan(t *testing.T) {
	ftwrl := []string{
		"lock: FLUSH TABLES WITH READ LOCK",
		"worker 1: START TRANSACTION WITH CONSISTENT SNAPSHOT",
		"worker 2: START TRANSACTION WITH CONSISTENT SNAPSHOT",
		"lock: SHOW MASTER STATUS",
		"lock: UNLOCK TABLES",
	}
	backup := []string{
		"lock: LOCK INSTANCE FOR BACKUP",
		"lock: FLUSH TABLES WITH READ LOCK",
		"worker 1: START TRANSACTION WITH CONSISTENT SNAPSHOT",
		"worker 2: START TRANSACTION WITH CONSISTENT SNAPSHOT",
		"lock: SELECT LOCAL FROM performance_schema.log_status",
		"lock: UNLOCK TABLES",
		"lock: UNLOCK INSTANCE",
	}
	for _, c := range []struct {
		name  string
		facts lockFacts
		want  []string
	}{
		{"MariaDB 10.11", lockFacts{MariaDB: true, Version: "10.11.6-MariaDB-0+deb12u1-log"}, ftwrl},
		{"MariaDB with a BACKUP_ADMIN-looking grant", lockFacts{MariaDB: true, Version: "11.4.2-MariaDB", BackupAdmin: true}, ftwrl},
		{"MySQL 8.0.36 without BACKUP_ADMIN", lockFacts{Version: "8.0.36"}, ftwrl},
		{"MySQL 8.0.13 with BACKUP_ADMIN (no log_status)", lockFacts{Version: "8.0.13-log", BackupAdmin: true}, ftwrl},
		{"MySQL 5.7 with BACKUP_ADMIN", lockFacts{Version: "5.7.44-log", BackupAdmin: true}, ftwrl},
		{"unreadable version", lockFacts{Version: "custom", BackupAdmin: true}, ftwrl},
		{"MySQL 8.0.14 with BACKUP_ADMIN", lockFacts{Version: "8.0.14", BackupAdmin: true}, backup},
		{"MySQL 8.0.36 with BACKUP_ADMIN", lockFacts{Version: "8.0.36-0ubuntu0.22.04.1", BackupAdmin: true}, backup},
		{"MySQL 8.4.3 with BACKUP_ADMIN", lockFacts{Version: "8.4.3", BackupAdmin: true}, backup},
		{"MySQL 9.1.0 with BACKUP_ADMIN", lockFacts{Version: "9.1.0-commercial", BackupAdmin: true}, backup},
	} {
		p := chooseLockPlan(c.facts)
		if got := p.Steps(2); !slices.Equal(got, c.want) {
			t.Errorf("%s: steps\n%q\nwant\n%q", c.name, got, c.want)
		}
		// The lock time starts at the statement that blocks writes.
		if p.Lock[p.Blocks] != "FLUSH TABLES WITH READ LOCK" {
			t.Errorf("%s: writes are blocked from %q", c.name, p.Lock[p.Blocks])
		}
	}
}

func TestParseLogStatus(t *testing.T) {
	local := `{"gtid_executed": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n8a94f357-aab4-11df-86ab-c80aa9429562:1-3:7-9", "binary_log_file": "binlog.000003", "binary_log_position": 1234}`
	p, err := parseLogStatus([]byte(local))
	if err != nil {
		t.Fatal(err)
	}
	want := Pos{File: "binlog.000003", Pos: 1234, GTID: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,8a94f357-aab4-11df-86ab-c80aa9429562:1-3:7-9"}
	if p != want {
		t.Errorf("got %+v, want %+v", p, want)
	}
	// gtid_mode=OFF: the set is empty.
	if p, err := parseLogStatus([]byte(`{"gtid_executed": "", "binary_log_file": "binlog.000001", "binary_log_position": 157}`)); err != nil || p != (Pos{File: "binlog.000001", Pos: 157}) {
		t.Errorf("empty GTID set: %+v, %v", p, err)
	}
	for _, bad := range []string{`{}`, `not json`, `{"binary_log_file": "binlog.000001", "binary_log_position": -1}`,
		`{"binary_log_file": "binlog.000001", "binary_log_position": 4294967296}`,
		`{"gtid_executed": "0-1-42", "binary_log_file": "binlog.000001", "binary_log_position": 4}`} {
		if p, err := parseLogStatus([]byte(bad)); err == nil {
			t.Errorf("%s parsed to %+v", bad, p)
		}
	}
}

func TestNormalizeMySQLGTIDSet(t *testing.T) {
	for in, want := range map[string]string{
		"": "",
		"3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5":                                            "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5",
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n8a94f357-aab4-11df-86ab-c80aa9429562:1-3": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,8a94f357-aab4-11df-86ab-c80aa9429562:1-3",
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11:20-30":                                   "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11:20-30",
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:backup_tag:1-2":                             "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:backup_tag:1-2",
	} {
		got, err := normalizeMySQLGTIDSet(in)
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{
		"0-1-42",                                   // MariaDB's format
		"3e11fa47-71ca-11e1-9e33-c80aa9429562",     // no interval
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:0-5", // GTIDs start at 1
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:5-1", // backwards
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,",
		"not-a-uuid:1-5",
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-99999999999999999999",
	} {
		if got, err := normalizeMySQLGTIDSet(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

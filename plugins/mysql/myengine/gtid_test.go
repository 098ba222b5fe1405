package myengine

import (
	"strings"
	"testing"
)

func TestMissingGTIDs(t *testing.T) {
	const u1, u2 = "3e11fa47-71ca-11e1-9e33-c80aa9429562", "4e11fa47-71ca-11e1-9e33-c80aa9429562"
	for _, c := range []struct {
		name    string
		mariadb bool
		want    string
		have    []string
		miss    string
	}{
		{"mariadb applied", true, "0-1-500", []string{"0-2-510", ""}, ""},
		{"mariadb applied through slave_pos", true, "0-1-500,1-1-7", []string{"1-3-9", "0-1-500"}, ""},
		{"mariadb behind", true, "0-1-500", []string{"0-1-480", "0-1-490"}, "domain 0 after 0-1-490 up to 0-1-500"},
		{"mariadb domain never seen", true, "0-1-5,2-1-3", []string{"0-1-5"}, "domain 2 up to 2-1-3 (none applied)"},
		{"mysql applied", false, u1 + ":1-100", []string{u1 + ":1-120," + u2 + ":1-5"}, ""},
		{"mysql lacks a range", false, u1 + ":1-100," + u2 + ":1-5", []string{u1 + ":1-90,\n" + u2 + ":1-5"}, u1 + ":91-100"},
		{"mysql lacks a source", false, u1 + ":1-10," + u2 + ":1-3", []string{u1 + ":1-10"}, u2 + ":1-3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := missingGTIDs(c.mariadb, c.want, c.have...)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.miss {
				t.Errorf("missing(%s from %v) = %q, want %q", c.want, c.have, got, c.miss)
			}
		})
	}
	if _, err := missingGTIDs(true, "0-1", "0-1-2"); err == nil {
		t.Error("a malformed MariaDB GTID was accepted")
	}
}

func TestEndToken(t *testing.T) {
	end := Pos{Epoch: 2, File: "mysql-bin.000007", Pos: 900, GTID: "0-2-612", Server: "2"}
	branch := Pos{Epoch: 1, File: "mysql-bin.000042", Pos: 1532, GTID: "0-1-600", Server: "1"}
	p, b, err := ParseEndToken(2, end.EndToken(branch))
	if err != nil {
		t.Fatal(err)
	}
	if p != end {
		t.Errorf("end %+v, want %+v", p, end)
	}
	if want := (Pos{Epoch: 1, File: branch.File, Pos: branch.Pos, GTID: branch.GTID}); b != want {
		t.Errorf("branch %+v, want %+v", b, want)
	}
	// A token written before servers were recorded.
	p, b, err = ParseEndToken(1, []byte("mysql-bin.000001:4\n0-1-3"))
	if err != nil || p != (Pos{Epoch: 1, File: "mysql-bin.000001", Pos: 4, GTID: "0-1-3"}) || b.File != "" {
		t.Errorf("old token: %+v %+v %v", p, b, err)
	}
}

func TestPlanResume(t *testing.T) {
	primary := &Info{MariaDB: true, ServerID: 1, Pos: Pos{File: "mysql-bin.000003", Pos: 800, GTID: "0-1-600"}}
	promoted := &Info{MariaDB: true, ServerID: 2, Pos: Pos{File: "mysql-bin.000002", Pos: 300, GTID: "0-2-640"}, SlavePos: "0-1-600"}
	lagging := &Info{MariaDB: true, ServerID: 3, Pos: Pos{File: "mysql-bin.000001", Pos: 300, GTID: "0-1-550"}, SlavePos: "0-1-550"}
	reset := &Info{MariaDB: true, ServerID: 1, Pos: Pos{File: "mysql-bin.000001", Pos: 700, GTID: "0-1-4"}}
	end := Pos{Epoch: 1, File: "mysql-bin.000003", Pos: 512, GTID: "0-1-600", Server: "1"}
	end2 := Pos{Epoch: 2, File: "mysql-bin.000002", Pos: 100, GTID: "0-2-620", Server: "2"}
	logs := []string{"mysql-bin.000002", "mysql-bin.000003"}
	for _, c := range []struct {
		name     string
		info     *Info
		logs     []string
		end, br  Pos
		want     resumePlan
		errWants []string
	}{
		{"new stream", primary, logs, Pos{}, Pos{}, resumePlan{start: Pos{File: "mysql-bin.000002", Pos: 4}, epoch: 1}, nil},
		{"same server", primary, logs, end, Pos{}, resumePlan{start: end, epoch: 1}, nil},
		{"old token", primary, logs, Pos{Epoch: 1, File: "mysql-bin.000003", Pos: 512}, Pos{}, resumePlan{start: Pos{Epoch: 1, File: "mysql-bin.000003", Pos: 512}, epoch: 1}, nil},
		{"purged", primary, []string{"mysql-bin.000004"}, end, Pos{}, resumePlan{}, []string{"purged", "new base backup"}},
		{"reset master", reset, []string{"mysql-bin.000001"}, end, Pos{}, resumePlan{start: Pos{File: "mysql-bin.000001", Pos: 4}, epoch: 2, branch: end}, nil},
		{"reset master, file reused", reset, []string{"mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"}, end, Pos{},
			resumePlan{start: Pos{File: "mysql-bin.000001", Pos: 4}, epoch: 2, branch: end}, nil},
		{"promoted replica", promoted, []string{"mysql-bin.000001", "mysql-bin.000002"}, end, Pos{},
			resumePlan{start: Pos{GTID: "0-1-600"}, byGTID: true, epoch: 2, branch: end}, nil},
		{"promoted replica resumes its epoch", promoted, []string{"mysql-bin.000001", "mysql-bin.000002"}, end2, end,
			resumePlan{start: end2, epoch: 2, branch: end}, nil},
		{"lagging replica", lagging, []string{"mysql-bin.000001"}, end, Pos{}, resumePlan{}, []string{"server 3 has not applied", "domain 0 after 0-1-550 up to 0-1-600", "lineage"}},
		{"no GTID recorded", promoted, logs, Pos{Epoch: 1, File: "mysql-bin.000003", Pos: 512, Server: "1"}, Pos{}, resumePlan{}, []string{"no GTID set"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := planResume(c.info, c.logs, c.end, c.br)
			if c.errWants != nil {
				if err == nil {
					t.Fatalf("plan %+v, want an error", got)
				}
				for _, w := range c.errWants {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.why = ""
			if got != c.want {
				t.Errorf("plan %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestDefaultLineage(t *testing.T) {
	for _, c := range []struct {
		info Info
		want string
	}{
		{Info{MariaDB: true, ServerID: 1}, "mariadb-0-1"},
		{Info{MariaDB: true, ServerID: 2, Replica: true, SourceID: "1", SlavePos: "0-1-40"}, "mariadb-0-1"},
		// Promoted: no longer a replica, its gtid_slave_pos names its former primary.
		{Info{MariaDB: true, ServerID: 2, SlavePos: "0-1-40"}, "mariadb-0-1"},
		{Info{MariaDB: true, ServerID: 2, SlavePos: "0-2-40"}, "mariadb-0-2"},
		{Info{MariaDB: true, ServerID: 2, DomainID: 3, SlavePos: "0-1-40"}, "mariadb-3-2"},
		{Info{ServerUUID: "u2", Replica: true, SourceID: "u1"}, "mysql-u1"},
	} {
		if got := defaultLineage(&c.info); got != c.want {
			t.Errorf("defaultLineage(%+v) = %s, want %s", c.info, got, c.want)
		}
	}
}

package mgengine

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestChooseSecondary(t *testing.T) {
	c := func(host string, secondary, oplog bool, set string, lag time.Duration, known bool) candidate {
		return candidate{host: host, secondary: secondary, oplog: oplog, setName: set, lag: lag, lagKnown: known}
	}
	for _, tc := range []struct {
		name  string
		cands []candidate
		want  int
	}{
		{"none", nil, -1},
		{"only the primary answered", []candidate{c("a", false, true, "rs", 0, true)}, -1},
		{"least lag", []candidate{c("a", true, true, "rs", 3*time.Second, true), c("b", true, true, "rs", time.Second, true), c("c", true, true, "rs", 2*time.Second, true)}, 1},
		{"known lag before unknown", []candidate{c("a", true, true, "rs", 0, false), c("b", true, true, "rs", 5*time.Second, true)}, 1},
		{"no oplog, other set, not secondary", []candidate{c("a", true, false, "rs", 0, true), c("b", true, true, "other", 0, true), c("c", false, true, "rs", 0, true), c("d", true, true, "rs", time.Minute, true)}, 3},
	} {
		if got := chooseSecondary(tc.cands, "rs"); got != tc.want {
			t.Errorf("%s: chose %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestReplicationLag reads members shaped as replSetGetStatus documents
// them (name, stateStr, optimeDate, self).
func TestReplicationLag(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	members := []memberStatus{
		{Name: "a:27017", StateStr: "PRIMARY", OptimeDate: now},
		{Name: "b:27017", StateStr: "SECONDARY", OptimeDate: now.Add(-1500 * time.Millisecond), Self: true},
		{Name: "c:27017", StateStr: "ARBITER"},
	}
	if lag, why := replicationLag(members); lag != 1500*time.Millisecond || why != "" {
		t.Errorf("lag %v (%q), want 1.5s", lag, why)
	}
	members[1].OptimeDate = now.Add(time.Second) // ahead of a stale primary entry: never negative
	if lag, _ := replicationLag(members); lag != 0 {
		t.Errorf("lag %v, want 0", lag)
	}
	if _, why := replicationLag(members[1:]); why == "" {
		t.Error("no primary: want a reason the lag is unknown")
	}
	if _, why := replicationLag(members[:1]); why == "" {
		t.Error("no self: want a reason the lag is unknown")
	}
}

func TestDumpReadPreferenceRefused(t *testing.T) {
	_, err := LogicalDump(t.Context(), "mongodb://127.0.0.1:1/", nil, DumpOptions{ReadPreference: "nearest"})
	if err == nil || !strings.Contains(err.Error(), "secondaryPreferred or primary") {
		t.Errorf("read preference nearest: %v", err)
	}
}

func TestExplainUnauthorized(t *testing.T) {
	c := &Conn{Hosts: []string{"db:27017"}, uri: "mongodb://u:secretpw@db:27017/"}
	err := c.explain(errors.New("list databases: (Unauthorized) not authorized on admin to execute command { listDatabases: 1 }"))
	for _, want := range []string{"refused the user", "backup role", "restore role", "clusterMonitor", "grantRolesToUser"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "secretpw") {
		t.Errorf("%v holds the password", err)
	}
}

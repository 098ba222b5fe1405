package mongodb

import (
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// TestProbeOf: the role, state and lag Probe reports for what hello,
// replSetGetStatus and local.oplog.rs said (FerretDB, the test bed's
// server, is only ever a standalone with or without an oplog).
func TestProbeOf(t *testing.T) {
	for _, c := range []struct {
		name  string
		info  mgengine.Info
		err   error
		role  api.Role
		state string
		lag   time.Duration
		ok    bool
	}{
		{"primary", mgengine.Info{SetName: "rs0", Primary: true, Oplog: true, Lineage: "rs0"}, nil, api.RolePrimary, "PRIMARY", 0, true},
		{"secondary with its lag", mgengine.Info{SetName: "rs0", Secondary: true, Oplog: true, Lag: 3 * time.Second}, nil, api.RoleReplica, "SECONDARY", 3 * time.Second, true},
		{"arbiter or recovering", mgengine.Info{SetName: "rs0", Oplog: true}, nil, api.RoleStandalone, "OTHER", 0, true},
		{"standalone with an oplog (no setName)", mgengine.Info{Oplog: true}, nil, api.RoleStandalone, "STANDALONE", 0, true},
		{"standalone without an oplog", mgengine.Info{}, mgengine.ErrNoOplog, api.RoleStandalone, "STANDALONE", 0, false},
	} {
		p := probeOf(&c.info, c.err)
		if p.Role != c.role || p.Facts["state"] != c.state || p.ReplicationLag != c.lag || p.Healthy != c.ok {
			t.Errorf("%s: role %v, state %s, lag %v, healthy %v; want %v, %s, %v, %v", c.name, p.Role, p.Facts["state"], p.ReplicationLag, p.Healthy, c.role, c.state, c.lag, c.ok)
		}
		if !c.ok && p.Detail == "" {
			t.Errorf("%s: unhealthy without a detail", c.name)
		}
	}
	p := probeOf(&mgengine.Info{SetName: "rs0", Secondary: true, Oplog: true, LagErr: "grant the user the clusterMonitor role to see replication lag"}, nil)
	if p.Facts["lag_unknown"] == "" {
		t.Errorf("a secondary whose lag is unknown: facts %v", p.Facts)
	}
}

package mgengine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Info is what Probe learns about a server.
type Info struct {
	Version    string // buildInfo.version
	SetName    string // replica set name; "" for a standalone
	Primary    bool   // hello.isWritablePrimary
	Secondary  bool   // hello.secondary
	Oplog      bool   // local.oplog.rs exists
	Last       Pos    // newest oplog entry, when Oplog
	FerretDB   bool   // the server reports itself as FerretDB
	Lineage    string // replica set name, or "standalone-<hosts>"
	Databases  int
	URIDB      string // the database the URI names, if any
	HostsLabel string
	// Replica set members as the server's hello lists them.
	Me, PrimaryHost string
	Members         []string // hello.hosts: electable members (not arbiters, passives or hidden ones)
	// Lag is how far this member's oplog stands behind the primary's
	// (replSetGetStatus optimeDate), for a secondary; LagErr says why it
	// is unknown (replSetGetStatus needs the clusterMonitor role).
	Lag    time.Duration
	LagErr string
}

// ErrNoOplog explains why a server without an oplog cannot be archived.
var ErrNoOplog = errors.New("the server has no oplog (local.oplog.rs): it is a standalone mongod; run it as a replica set (--replSet, even of one member, then rs.initiate()) to archive its oplog and restore to a point in time")

// Probe connects and describes the server. A server without an oplog is
// described with ErrNoOplog (Info is still returned).
func Probe(ctx context.Context, uri URI) (*Info, error) {
	c, err := Connect(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Probe(ctx)
}

// Probe describes the server c is connected to.
func (c *Conn) Probe(ctx context.Context) (*Info, error) {
	admin := c.Client.Database("admin")
	var hello struct {
		IsWritablePrimary bool     `bson:"isWritablePrimary"`
		IsMaster          bool     `bson:"ismaster"`
		Secondary         bool     `bson:"secondary"`
		SetName           string   `bson:"setName"`
		Hosts             []string `bson:"hosts"`
		Primary           string   `bson:"primary"`
		Me                string   `bson:"me"`
	}
	if err := admin.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		if err2 := admin.RunCommand(ctx, bson.D{{Key: "isMaster", Value: 1}}).Decode(&hello); err2 != nil {
			return nil, c.explain(fmt.Errorf("hello: %w", err))
		}
	}
	var build bson.M
	if err := admin.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&build); err != nil {
		return nil, c.explain(fmt.Errorf("buildInfo: %w", err))
	}
	info := &Info{SetName: hello.SetName, Primary: hello.IsWritablePrimary || hello.IsMaster, Secondary: hello.Secondary,
		URIDB: c.Database, HostsLabel: strings.Join(c.Hosts, ","), Me: hello.Me, PrimaryHost: hello.Primary, Members: hello.Hosts}
	if info.Secondary {
		info.Lag, info.LagErr = c.lag(ctx)
	}
	info.Version, _ = build["version"].(string)
	if fv, ok := build["ferretdbVersion"].(string); ok {
		info.FerretDB = true
		info.Version += " (FerretDB " + fv + ")"
	}
	info.Lineage = info.SetName
	if info.Lineage == "" {
		info.Lineage = "standalone-" + info.HostsLabel
	}
	last, ok, err := c.LastOplog(ctx)
	if err != nil {
		return info, err
	}
	info.Oplog, info.Last = ok, last
	if !ok {
		return info, ErrNoOplog
	}
	return info, nil
}

// LastOplog returns the ts of the newest oplog entry; ok is false when the
// server has no oplog.
func (c *Conn) LastOplog(ctx context.Context) (Pos, bool, error) {
	local := c.Client.Database("local")
	names, err := local.ListCollectionNames(ctx, bson.D{{Key: "name", Value: "oplog.rs"}})
	if err != nil {
		return Pos{}, false, c.explain(fmt.Errorf("list local collections: %w", err))
	}
	if len(names) == 0 {
		return Pos{}, false, nil
	}
	var e struct {
		TS bson.Timestamp `bson:"ts"`
	}
	err = local.Collection("oplog.rs").FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}})).Decode(&e)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Pos{}, true, nil
	}
	if err != nil {
		return Pos{}, true, c.explain(fmt.Errorf("read the newest oplog entry: %w", err))
	}
	return Pos{T: e.TS.T, I: e.TS.I}, true, nil
}

// memberStatus is a member of replSetGetStatus's reply.
type memberStatus struct {
	Name       string    `bson:"name"`
	StateStr   string    `bson:"stateStr"`
	OptimeDate time.Time `bson:"optimeDate"`
	Self       bool      `bson:"self"`
}

// lag reads how far this member's applied oplog stands behind the
// primary's, from replSetGetStatus.
func (c *Conn) lag(ctx context.Context) (time.Duration, string) {
	var st struct {
		Members []memberStatus `bson:"members"`
	}
	if err := c.Client.Database("admin").RunCommand(ctx, bson.D{{Key: "replSetGetStatus", Value: 1}}).Decode(&st); err != nil {
		var ce mongo.CommandError
		if errors.As(err, &ce) && ce.Code == codeUnauthorized {
			return 0, "replSetGetStatus is not allowed: grant the user the clusterMonitor role to see replication lag"
		}
		return 0, "replSetGetStatus: " + Redact(err.Error(), URI(c.uri))
	}
	return replicationLag(st.Members)
}

// replicationLag is the primary's optime minus this member's, never
// negative.
func replicationLag(members []memberStatus) (time.Duration, string) {
	var self, primary *memberStatus
	for i := range members {
		if members[i].Self {
			self = &members[i]
		}
		if members[i].StateStr == "PRIMARY" {
			primary = &members[i]
		}
	}
	switch {
	case self == nil:
		return 0, "replSetGetStatus lists no member as this one"
	case primary == nil:
		return 0, "the replica set has no primary: lag unknown"
	}
	return max(0, primary.OptimeDate.Sub(self.OptimeDate)), ""
}

package mgengine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Users and roles, on request (DumpOptions.Users), as mongodump
// --dumpDbUsersAndRoles and a full mongodump keep them and mongorestore
// loads them back:
//
//	auth/system.users.bson   documents of admin.system.users, as the server stores them (credentials hashed)
//	auth/system.roles.bson   documents of admin.system.roles (user-defined roles)
//
// A dump of named databases keeps the users and roles defined on them
// ({db: {$in: [...]}}); a dump of every database keeps all of them, those
// of admin included. A restore loads each into a temporary collection of
// admin (amber_tempusers, amber_temproles) and merges it with the
// server's _mergeAuthzCollections command, as mongorestore does, then
// drops the temporary collections: users keep their passwords, which
// createUser could not do from the stored hashes.
const (
	UsersEntry = "auth/system.users.bson"
	RolesEntry = "auth/system.roles.bson"

	tempUsers = "amber_tempusers"
	tempRoles = "amber_temproles"
)

// Auth says what users and roles a dump holds (Metadata.Auth).
type Auth struct {
	// Databases whose users and roles were dumped; empty: every database.
	Databases []string `json:"databases,omitempty"`
	Users     string   `json:"users"` // entry name
	Roles     string   `json:"roles"` // entry name
}

// authFilter selects the users or roles of dbs, or all of them when dbs
// is empty.
func authFilter(dbs []string) bson.D {
	if len(dbs) == 0 {
		return bson.D{}
	}
	in := bson.A{}
	for _, d := range dbs {
		in = append(in, d)
	}
	return bson.D{{Key: "db", Value: bson.D{{Key: "$in", Value: in}}}}
}

// dumpAuth writes the users and the roles auth names to sink.
func dumpAuth(ctx context.Context, c *Conn, sink Sink, auth *Auth) (users, roles int, err error) {
	if users, err = dumpAuthColl(ctx, c, sink, "system.users", auth.Users, auth.Databases); err != nil {
		return 0, 0, err
	}
	if roles, err = dumpAuthColl(ctx, c, sink, "system.roles", auth.Roles, auth.Databases); err != nil {
		return users, 0, err
	}
	return users, roles, nil
}

func dumpAuthColl(ctx context.Context, c *Conn, sink Sink, coll, entry string, dbs []string) (int, error) {
	w, err := sink.Create(ctx, entry, "bson")
	if err != nil {
		return 0, err
	}
	cur, err := c.Client.Database("admin").Collection(coll).Find(ctx, authFilter(dbs))
	if err != nil {
		w.Close()
		return 0, c.explain(fmt.Errorf("read admin.%s (option users=true): %w", coll, err))
	}
	defer cur.Close(ctx)
	bw := bufio.NewWriter(w)
	n := 0
	for cur.Next(ctx) {
		if _, err := bw.Write(cur.Current); err != nil {
			w.Close()
			return n, err
		}
		n++
	}
	if err := cur.Err(); err != nil {
		w.Close()
		return n, c.explain(fmt.Errorf("read admin.%s (option users=true): %w", coll, err))
	}
	if err := bw.Flush(); err != nil {
		w.Close()
		return n, err
	}
	return n, w.Close()
}

// mergeAuthCommand is the _mergeAuthzCollections command that merges the
// temporary collections into admin.system.users and admin.system.roles:
// db "" merges the users and roles of every database (a dump of all of
// them), drop replaces those of the merged databases instead of adding to
// them.
func mergeAuthCommand(db string, users, roles, drop bool) bson.D {
	cmd := bson.D{{Key: "_mergeAuthzCollections", Value: 1}}
	if users {
		cmd = append(cmd, bson.E{Key: "tempUsersCollection", Value: "admin." + tempUsers})
	}
	if roles {
		cmd = append(cmd, bson.E{Key: "tempRolesCollection", Value: "admin." + tempRoles})
	}
	return append(cmd, bson.E{Key: "drop", Value: drop}, bson.E{Key: "db", Value: db},
		bson.E{Key: "writeConcern", Value: bson.D{{Key: "w", Value: "majority"}}})
}

// restoreAuth loads users and roles (documents of admin.system.users and
// admin.system.roles) into the server: into temporary collections, then
// merged by _mergeAuthzCollections; the temporary collections are dropped
// whatever happens.
func restoreAuth(ctx context.Context, c *Conn, auth *Auth, users, roles []bson.Raw, drop bool, log *slog.Logger) error {
	if len(users) == 0 && len(roles) == 0 {
		return nil
	}
	admin := c.Client.Database("admin")
	for _, t := range []struct {
		name string
		docs []bson.Raw
	}{{tempUsers, users}, {tempRoles, roles}} {
		if len(t.docs) == 0 {
			continue
		}
		tc := admin.Collection(t.name)
		if err := tc.Drop(ctx); err != nil {
			return c.explain(fmt.Errorf("drop admin.%s: %w", t.name, err))
		}
		defer func() {
			if err := tc.Drop(context.WithoutCancel(ctx)); err != nil {
				log.Warn("could not drop a temporary collection", "ns", "admin."+t.name, "err", redact(err.Error(), c.uri))
			}
		}()
		docs := make([]any, len(t.docs))
		for i, d := range t.docs {
			docs[i] = d
		}
		if _, err := tc.InsertMany(ctx, docs); err != nil {
			return c.explain(fmt.Errorf("load users and roles into admin.%s: %w", t.name, err))
		}
	}
	for _, cmd := range mergeAuthCommands(auth, len(users) > 0, len(roles) > 0, drop) {
		err := admin.RunCommand(ctx, cmd).Err()
		var ce mongo.CommandError
		if errors.As(err, &ce) && ce.Code == codeCommandNotFound {
			return fmt.Errorf("the backup holds %d users and %d roles, and this server cannot load them (it has no _mergeAuthzCollections command; FerretDB has none): the data is restored, the users and roles are not", len(users), len(roles))
		}
		if err != nil {
			return c.explain(fmt.Errorf("merge users and roles (_mergeAuthzCollections): %w", err))
		}
	}
	return nil
}

// mergeAuthCommands are the merges of a dump's users and roles: one for
// every database (db ""), or one per database the dump named, since a
// merge takes one database or all.
func mergeAuthCommands(auth *Auth, users, roles, drop bool) []bson.D {
	if len(auth.Databases) == 0 {
		return []bson.D{mergeAuthCommand("", users, roles, drop)}
	}
	var out []bson.D
	for _, db := range auth.Databases {
		out = append(out, mergeAuthCommand(db, users, roles, drop))
	}
	return out
}

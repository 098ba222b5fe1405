package mgengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Source yields the entries of a dump in order.
type Source interface {
	Next(ctx context.Context) (name string, r io.Reader, err error)
}

// RestoreOptions tune LogicalRestore.
type RestoreOptions struct {
	Workers int // insert batches in flight; default 4
	// Drop drops a collection that exists in the target before loading
	// it; without it, a non-empty target collection is refused.
	Drop bool
	// NoOplog skips the oplog window recorded with the dump.
	NoOplog bool
	// NoUsers skips the users and roles a dump holds (Metadata.Auth).
	NoUsers bool
	Logger  *slog.Logger
}

// RestoreResult says what a restore loaded.
type RestoreResult struct {
	Collections, Indexes int
	Docs, Bytes          int64
	OplogOps             int
	TimeSeriesSkipped    int               // entries of the oplog window writing to time-series collections, not applied
	Users, Roles         int               // users and roles merged into the server
	AuthSkipped          string            // why the dump's users and roles were not loaded, when they were not
	Renamed              map[string]string // source database -> target database, when they differ
}

const (
	batchDocs  = 1000
	batchBytes = 8 << 20
)

// LogicalRestore loads a dump read from src into the server at uri: every
// collection is created with its options, its documents inserted by
// several workers at once, then its indexes built, then views created,
// then the dump's oplog window applied. When uri names a database and the
// dump holds exactly one, that database is restored under the URI's name.
func LogicalRestore(ctx context.Context, uri URI, src Source, o RestoreOptions) (*RestoreResult, error) {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	name, r, err := src.Next(ctx)
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the backup holds no entries")
	}
	if err != nil {
		return nil, err
	}
	if name != MetadataEntry {
		return nil, fmt.Errorf("the backup starts with %q, not %s: not a MongoDB logical backup", name, MetadataEntry)
	}
	var meta Metadata
	if err := json.NewDecoder(r).Decode(&meta); err != nil {
		return nil, fmt.Errorf("read %s: %w", MetadataEntry, err)
	}
	if meta.Format != FormatVersion {
		return nil, fmt.Errorf("%s: format %q, this plugin reads %q", MetadataEntry, meta.Format, FormatVersion)
	}
	c, err := Connect(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	res := &RestoreResult{Renamed: map[string]string{}}
	rename := func(db string) string { return db }
	if c.Database != "" && !(len(meta.Databases) == 1 && meta.Databases[0] == c.Database) {
		if len(meta.Databases) != 1 {
			return nil, fmt.Errorf("the backup holds %d databases (%s) and the restore URI names one (%s): give a URI without a database to restore them under their own names",
				len(meta.Databases), strings.Join(meta.Databases, ", "), c.Database)
		}
		res.Renamed[meta.Databases[0]] = c.Database
		rename = func(string) string { return c.Database }
	}
	byEntry := map[string]Collection{}
	for _, coll := range meta.Collections {
		coll.Database = rename(coll.Database)
		if coll.Type == "view" {
			continue
		}
		if err := createCollection(ctx, c, coll, o.Drop); err != nil {
			return nil, err
		}
		byEntry[coll.Entry] = coll
		res.Collections++
	}

	// Data: entries arrive one at a time; their documents are inserted in
	// batches by a pool of workers, so several batches (of one collection
	// or of consecutive ones) load at once.
	type batch struct {
		coll *mongo.Collection
		ns   string
		docs []any
	}
	batches := make(chan batch, o.Workers)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				if rctx.Err() != nil {
					continue
				}
				if _, err := b.coll.InsertMany(rctx, b.docs, options.InsertMany().SetOrdered(false).SetBypassDocumentValidation(true)); err != nil {
					fail(c.explain(fmt.Errorf("insert into %s: %w", b.ns, err)))
				}
			}
		}()
	}
	var docs, bytes atomic.Int64
	var oplog, users, roles []bson.Raw
	readErr := func() error {
		for {
			name, r, err := src.Next(rctx)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if name == OplogEntry {
				err := ReadDocs(r, func(d bson.Raw) error {
					oplog = append(oplog, bson.Raw(append([]byte(nil), d...)))
					return nil
				})
				if err != nil {
					return fmt.Errorf("%s: %w", OplogEntry, err)
				}
				continue
			}
			if meta.Auth != nil && (name == meta.Auth.Users || name == meta.Auth.Roles) {
				var got []bson.Raw
				err := ReadDocs(r, func(d bson.Raw) error {
					got = append(got, bson.Raw(append([]byte(nil), d...)))
					return nil
				})
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				if name == meta.Auth.Users {
					users = got
				} else {
					roles = got
				}
				continue
			}
			coll, ok := byEntry[name]
			if !ok {
				return fmt.Errorf("entry %s is not in %s", name, MetadataEntry)
			}
			mc := c.Client.Database(coll.Database).Collection(coll.Name)
			var cur []any
			var curBytes int
			flush := func() error {
				if len(cur) == 0 {
					return nil
				}
				select {
				case batches <- batch{coll: mc, ns: coll.NS(), docs: cur}:
				case <-rctx.Done():
					return rctx.Err()
				}
				cur, curBytes = nil, 0
				return nil
			}
			err = ReadDocs(r, func(d bson.Raw) error {
				if len(cur) > 0 && (len(cur) >= batchDocs || curBytes+len(d) > batchBytes) {
					if err := flush(); err != nil {
						return err
					}
				}
				cur = append(cur, bson.Raw(append([]byte(nil), d...)))
				curBytes += len(d)
				docs.Add(1)
				bytes.Add(int64(len(d)))
				return nil
			})
			if err == nil {
				err = flush()
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}()
	close(batches)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if readErr != nil {
		return nil, readErr
	}
	res.Docs, res.Bytes = docs.Load(), bytes.Load()

	// Indexes after the data, collections in parallel.
	var n atomic.Int64
	if err := forEach(ctx, o.Workers, meta.Collections, func(ctx context.Context, coll Collection) error {
		if coll.Type == "view" {
			return nil
		}
		coll.Database = rename(coll.Database)
		k, err := createIndexes(ctx, c, coll)
		n.Add(int64(k))
		return err
	}); err != nil {
		return nil, err
	}
	res.Indexes = int(n.Load())
	for _, coll := range meta.Collections {
		if coll.Type != "view" {
			continue
		}
		coll.Database = rename(coll.Database)
		if err := createCollection(ctx, c, coll, o.Drop); err != nil {
			return nil, err
		}
	}
	switch {
	case meta.Auth == nil || len(users)+len(roles) == 0:
	case o.NoUsers:
		res.AuthSkipped = "option users=false"
	case len(res.Renamed) > 0:
		// Merged, they would replace the users of the source database.
		res.AuthSkipped = "restored under another database name"
	default:
		if err := restoreAuth(ctx, c, meta.Auth, users, roles, o.Drop, o.Logger); err != nil {
			return nil, err
		}
		res.Users, res.Roles = len(users), len(roles)
	}
	if res.AuthSkipped != "" {
		o.Logger.Warn("the backup's users and roles were not restored", "users", len(users), "roles", len(roles), "why", res.AuthSkipped)
	}
	if meta.Oplog && !o.NoOplog && len(oplog) > 0 {
		only := map[string]bool{}
		for _, d := range meta.Databases {
			only[d] = true
		}
		// Time-series collections hold their measurements as the dump
		// read them: their bucket writes in the window are skipped
		// (ErrTimeSeries says why they cannot be applied).
		// A transaction whose first entries precede the window (a dump
		// that could not read config.transactions, or one by a plugin
		// that did not open the window at the oldest open transaction)
		// is applied with the entries the window has, and reported.
		a := &Applier{Client: c.Client, Rename: rename, Only: only, SkipTimeSeries: true, PartialStart: true}
		for _, e := range oplog {
			if err := a.Apply(ctx, e); err != nil {
				return nil, err
			}
		}
		res.OplogOps = a.Applied
		if a.PartialTxns > 0 {
			o.Logger.Warn("the dump's oplog window holds the end of transactions whose first entries precede it: applied with the entries the window has, so the restored copy may hold part of them",
				"transactions", a.PartialTxns)
		}
		if n := a.Pending(); n > 0 {
			o.Logger.Info("transactions open at the end of the dump's oplog window are not applied: they commit after the backup's consistent point", "transactions", n)
		}
		if res.TimeSeriesSkipped = a.TimeSeriesSkipped; res.TimeSeriesSkipped > 0 {
			o.Logger.Warn("the dump's oplog window holds writes to time-series collections: not applied; those collections hold their measurements as the dump read them, which may miss writes made while it ran",
				"entries", a.TimeSeriesSkipped)
		}
	}
	return res, nil
}

// forEach runs fn on every item with at most n at once, stopping at the
// first error.
func forEach[T any](ctx context.Context, n int, items []T, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var first error
	var once sync.Once
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, it); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return first
}

// createCollection creates coll (a collection or a view) with its options.
func createCollection(ctx context.Context, c *Conn, coll Collection, drop bool) error {
	db := c.Client.Database(coll.Database)
	existing, err := db.ListCollectionNames(ctx, bson.D{{Key: "name", Value: coll.Name}})
	if err != nil {
		return c.explain(fmt.Errorf("list collections of %s: %w", coll.Database, err))
	}
	if len(existing) > 0 {
		if drop {
			if err := db.Collection(coll.Name).Drop(ctx); err != nil {
				return c.explain(fmt.Errorf("drop %s: %w", coll.NS(), err))
			}
		} else if coll.Type == "view" {
			return fmt.Errorf("view %s already exists in the target: restore into an empty database (name a new one in the URI) or drop the view first", coll.NS())
		} else {
			n, err := db.Collection(coll.Name).EstimatedDocumentCount(ctx)
			if err != nil {
				return c.explain(fmt.Errorf("count %s: %w", coll.NS(), err))
			}
			if n > 0 {
				return fmt.Errorf("collection %s already holds %d documents in the target: restore into an empty database (name a new one in the URI) or drop the collection first", coll.NS(), n)
			}
			return nil
		}
	}
	cmd, err := CreateCommand(coll)
	if err != nil {
		return err
	}
	if err := db.RunCommand(ctx, cmd).Err(); err != nil {
		return c.explain(fmt.Errorf("create %s %s: %w", coll.Type, coll.NS(), err))
	}
	return nil
}

// CreateCommand is the command that creates coll (a collection, a view
// or a time-series collection) with the options listCollections reported
// (validator, validationLevel/Action, collation, capped, size, max,
// viewOn, pipeline, timeseries, expireAfterSeconds, clusteredIndex, ...),
// but those the server assigns (uuid) or no longer takes (autoIndexId).
func CreateCommand(coll Collection) (bson.D, error) {
	var opts bson.D
	if err := bson.UnmarshalExtJSON(coll.Options, true, &opts); err != nil {
		return nil, fmt.Errorf("options of %s: %w", coll.NS(), err)
	}
	cmd := bson.D{{Key: "create", Value: coll.Name}}
	for _, e := range opts {
		switch e.Key {
		case "uuid", "autoIndexId":
			continue // assigned by the server / deprecated
		case "clusteredIndex":
			// listCollections adds the index version, which create refuses.
			if d, ok := e.Value.(bson.D); ok {
				var ci bson.D
				for _, f := range d {
					if f.Key != "v" {
						ci = append(ci, f)
					}
				}
				e.Value = ci
			}
		}
		cmd = append(cmd, e)
	}
	return cmd, nil
}

// CreateIndexesCommand is the createIndexes command that builds coll's
// indexes as listIndexes described them (key, name, unique, sparse,
// expireAfterSeconds, partialFilterExpression, collation, text weights,
// ...), but _id's (the server makes it) and without the fields only
// listIndexes reports (v, ns); nil when there is none to build.
func CreateIndexesCommand(coll Collection) (bson.D, int, error) {
	var specs bson.A
	for _, j := range coll.Indexes {
		var spec bson.D
		if err := bson.UnmarshalExtJSON(j, true, &spec); err != nil {
			return nil, 0, fmt.Errorf("index of %s: %w", coll.NS(), err)
		}
		var clean bson.D
		isID := false
		for _, e := range spec {
			switch e.Key {
			case "v", "ns":
				continue
			case "name":
				isID = e.Value == "_id_"
			}
			clean = append(clean, e)
		}
		if !isID {
			specs = append(specs, clean)
		}
	}
	if len(specs) == 0 {
		return nil, 0, nil
	}
	return bson.D{{Key: "createIndexes", Value: coll.Name}, {Key: "indexes", Value: specs}}, len(specs), nil
}

// createIndexes builds coll's indexes but _id's.
func createIndexes(ctx context.Context, c *Conn, coll Collection) (int, error) {
	cmd, n, err := CreateIndexesCommand(coll)
	if err != nil || cmd == nil {
		return 0, err
	}
	if err := c.Client.Database(coll.Database).RunCommand(ctx, cmd).Err(); err != nil {
		return 0, c.explain(fmt.Errorf("create indexes of %s: %w", coll.NS(), err))
	}
	return n, nil
}

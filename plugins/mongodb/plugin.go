// Package mongodb adapts mgengine, Amber's MongoDB knowledge, to the
// plugin contract (plugins/api). cmd/amber-plugin-mongodb serves it.
//
// Target.DSN is a mongodb:// URI (a secret: never logged). A URI that
// names a database limits a dump to it, and a restore into such a URI
// loads a one-database backup under that name.
//
// Options it reads:
//   - LogicalDump options "workers" (collections read at once, default 4),
//     "spool_dir" (where a collection read while another is sent waits,
//     default the temp dir), "batch_size" (documents per cursor batch).
//   - LogicalRestore options "workers" (insert batches in flight, default
//     4), "drop" (true: drop target collections that exist; default a
//     non-empty one is refused), "no_oplog" (true: skip the oplog window
//     recorded with the dump).
//
// Positions: epoch 1, offset = ts seconds << 32 | increment, token = the
// 8-byte big-endian offset, text "Timestamp(1700000000, 3)".
//
// Like every plugin it must never import sidecar/ or controller/.
package mongodb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// Version is the plugin's version, reported by Info.
var Version = "0.1.0"

// Engine implements api.Engine for MongoDB.
type Engine struct {
	api.Unsupported
}

var _ api.Engine = (*Engine)(nil)

// New returns the MongoDB engine.
func New() *Engine { return &Engine{} }

func (e *Engine) Info(context.Context) (api.Info, error) {
	return api.Info{
		Engine:           "mongodb",
		PluginVersion:    Version,
		Capabilities:     []api.Capability{api.LogicalDump, api.LogicalRestore},
		SupportedServers: "MongoDB 5.0 and newer (untested); the MongoDB wire protocol of FerretDB 1.24 (tested)",
	}, nil
}

func uri(t api.Target) mgengine.URI { return mgengine.URI(string(t.DSN)) }

// Position converts an oplog position to the contract's form.
func Position(p mgengine.Pos) api.Position {
	if p.IsZero() {
		return api.Position{}
	}
	return api.Position{Epoch: 1, Offset: p.Offset(), Token: p.Token(), Text: p.Text()}
}

func (e *Engine) Probe(ctx context.Context, t api.Target) (api.Probe, error) {
	info, err := mgengine.Probe(ctx, uri(t))
	if info == nil {
		return api.Probe{}, err
	}
	p := api.Probe{
		ServerVersion: info.Version,
		Role:          api.RoleStandalone,
		SystemID:      info.Lineage,
		Position:      Position(info.Last),
		Healthy:       err == nil,
		Facts: map[string]string{
			"oplog":    strconv.FormatBool(info.Oplog),
			"set_name": info.SetName,
			"ferretdb": strconv.FormatBool(info.FerretDB),
		},
	}
	switch {
	case info.SetName != "" && info.Primary:
		p.Role = api.RolePrimary
	case info.SetName != "" && info.Secondary:
		p.Role = api.RoleReplica
	}
	if err != nil {
		p.Detail = err.Error()
	}
	return p, nil
}

// ParsePosition reads "Timestamp(1700000000, 3)" or "1700000000:3".
func (e *Engine) ParsePosition(_ context.Context, text string) (api.Position, error) {
	p, err := mgengine.ParseText(text)
	if err != nil {
		return api.Position{}, err
	}
	pos := Position(p)
	pos.Epoch = 0 // the text names no epoch
	return pos, nil
}

type entrySink struct{ sink api.EntrySink }

func (s entrySink) Create(ctx context.Context, name, kind string) (io.WriteCloser, error) {
	return s.sink.Create(ctx, api.Entry{Name: name, Size: -1, Kind: kind})
}

func intOption(opts map[string]string, key string) (int, error) {
	v := opts[key]
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("option %s=%q: want a positive number", key, v)
	}
	return n, nil
}

// LogicalDump dumps every database (or the URI's, or req.Databases) as
// metadata.json, one BSON entry per collection and, on a server with an
// oplog, the oplog entries written while the data was read.
func (e *Engine) LogicalDump(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	o := mgengine.DumpOptions{Databases: req.Databases, SpoolDir: req.Options["spool_dir"], Logger: slog.Default()}
	var err error
	if o.Workers, err = intOption(req.Options, "workers"); err != nil {
		return api.BackupResult{}, err
	}
	bs, err := intOption(req.Options, "batch_size")
	if err != nil {
		return api.BackupResult{}, err
	}
	o.BatchSize = int32(bs)
	start := time.Now()
	res, err := mgengine.LogicalDump(ctx, uri(req.Target), entrySink{sink}, o)
	if err != nil {
		return api.BackupResult{}, err
	}
	took := time.Since(start)
	slog.Info("dump done", "databases", len(res.Databases), "collections", res.Collections, "docs", res.Docs,
		"bytes", res.Bytes, "oplog_ops", res.OplogOps, "took", took)
	return api.BackupResult{
		Start: Position(res.Start), Consistent: Position(res.End), StartTime: start, ConsistentTime: res.Time,
		ServerVersion: res.Info.Version, SystemID: res.Info.Lineage,
		Metadata: map[string]string{
			"format":      mgengine.FormatVersion,
			"databases":   strings.Join(res.Databases, ","),
			"collections": strconv.Itoa(res.Collections),
			"documents":   strconv.FormatInt(res.Docs, 10),
			"bson_bytes":  strconv.FormatInt(res.Bytes, 10),
			"oplog_ops":   strconv.Itoa(res.OplogOps),
			"dump_ms":     strconv.FormatInt(took.Milliseconds(), 10),
		},
	}, nil
}

type entrySource struct{ src api.EntrySource }

func (s entrySource) Next(ctx context.Context) (string, io.Reader, error) {
	e, r, err := s.src.Next(ctx)
	return e.Name, r, err
}

// LogicalRestore loads a dump into the target: collections with their
// options, data by several workers, then indexes, views and the dump's
// oplog window.
func (e *Engine) LogicalRestore(ctx context.Context, req api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	o := mgengine.RestoreOptions{Drop: req.Options["drop"] == "true", NoOplog: req.Options["no_oplog"] == "true", Logger: slog.Default()}
	var err error
	if o.Workers, err = intOption(req.Options, "workers"); err != nil {
		return api.RestoreResult{}, err
	}
	if string(req.Target.DSN) == "" {
		return api.RestoreResult{}, errors.New("a MongoDB restore needs a target URI: give --dsn mongodb://user:password@host:27017/[database]")
	}
	start := time.Now()
	res, err := mgengine.LogicalRestore(ctx, uri(req.Target), entrySource{src}, o)
	if err != nil {
		return api.RestoreResult{}, err
	}
	took := time.Since(start)
	slog.Info("restore done", "collections", res.Collections, "indexes", res.Indexes, "docs", res.Docs, "bytes", res.Bytes,
		"oplog_ops", res.OplogOps, "took", took)
	return api.RestoreResult{Position: req.Backup.Consistent, ConsistentTime: req.Backup.ConsistentTime, Metadata: map[string]string{
		"collections": strconv.Itoa(res.Collections),
		"indexes":     strconv.Itoa(res.Indexes),
		"documents":   strconv.FormatInt(res.Docs, 10),
		"bson_bytes":  strconv.FormatInt(res.Bytes, 10),
		"oplog_ops":   strconv.Itoa(res.OplogOps),
		"restore_ms":  strconv.FormatInt(took.Milliseconds(), 10),
	}}, nil
}

package mgengine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Entry is one oplog entry, in the shape MongoDB documents for
// local.oplog.rs (5.0 and newer; FerretDB's emulation writes the same
// fields for op i, u and d).
type Entry struct {
	TS   bson.Timestamp `bson:"ts"`
	Term int64          `bson:"t,omitempty"`
	Op   string         `bson:"op"` // i, u, d, c, n
	NS   string         `bson:"ns"`
	O    bson.Raw       `bson:"o"`
	O2   bson.Raw       `bson:"o2,omitempty"`
}

// Applier applies oplog entries to a server idempotently: applying an
// entry twice, or to data that already holds its effect, gives the same
// documents, as the oplog's own replay on a secondary does.
type Applier struct {
	Client *mongo.Client
	// Rename maps a source database to the target's; nil keeps names.
	Rename func(db string) string
	// Only, when not empty, names the source databases to apply; entries
	// of others are skipped. admin, local and config are always skipped.
	Only    map[string]bool
	Applied int
	// SkipTimeSeries skips the entries of time-series collections (their
	// system.buckets.<name> collections), counting them in
	// TimeSeriesSkipped; without it such an entry is refused with
	// ErrTimeSeries.
	SkipTimeSeries    bool
	TimeSeriesSkipped int
	// PartialStart applies a transaction whose first entries precede the
	// log at its commit, with the entries it has, counting it in
	// PartialTxns; without it such a commit is refused with
	// ErrTxnStartMissing.
	PartialStart bool
	PartialTxns  int
	held         map[txnKey]*heldTxn // transactions waiting for their commit (txn.go)
}

// ErrTimeSeries is returned for an oplog entry that writes to a
// time-series collection. MongoDB logs those writes as writes of bucket
// documents to system.buckets.<name>, and a restored time-series
// collection holds other buckets (the server made them from the restored
// measurements): applied as they are, the source's buckets would add
// their measurements a second time, and their updates would miss.
var ErrTimeSeries = errors.New("replaying writes to time-series collections is not supported")

// timeSeriesOf returns the time-series collection an entry writes to
// (its buckets collection's name without the prefix), "" for others.
func timeSeriesOf(e Entry) string {
	const prefix = "system.buckets."
	_, coll, _ := strings.Cut(e.NS, ".")
	if e.Op == "c" {
		coll = ""
		if els, err := e.O.Elements(); err == nil && len(els) > 0 {
			coll, _ = els[0].Value().StringValueOK()
		}
	}
	if name, ok := strings.CutPrefix(coll, prefix); ok {
		return name
	}
	return ""
}

// Apply applies one oplog entry.
func (a *Applier) Apply(ctx context.Context, raw bson.Raw) error {
	var e Entry
	if err := bson.Unmarshal(raw, &e); err != nil {
		return fmt.Errorf("oplog entry: %w", err)
	}
	if ok, err := a.transaction(ctx, raw, e); ok || err != nil {
		if err != nil {
			return fmt.Errorf("apply oplog entry %s %s at %s: %w", e.Op, e.NS, Pos{T: e.TS.T, I: e.TS.I}.Text(), err)
		}
		return nil
	}
	if err := a.apply(ctx, e); err != nil {
		return fmt.Errorf("apply oplog entry %s %s at %s: %w", e.Op, e.NS, Pos{T: e.TS.T, I: e.TS.I}.Text(), err)
	}
	return nil
}

func (a *Applier) split(ns string) (db, coll string) {
	db, coll, _ = strings.Cut(ns, ".")
	if a.Rename != nil {
		db = a.Rename(db)
	}
	return db, coll
}

func (a *Applier) apply(ctx context.Context, e Entry) error {
	srcDB, _, _ := strings.Cut(e.NS, ".")
	isApplyOps := e.Op == "c" && len(e.O) > 5
	if isApplyOps {
		if els, err := e.O.Elements(); err == nil && len(els) > 0 {
			isApplyOps = els[0].Key() == "applyOps"
		}
	}
	if !isApplyOps && (slices.Contains(systemDatabases, srcDB) || (len(a.Only) > 0 && !a.Only[srcDB])) {
		return nil
	}
	if ts := timeSeriesOf(e); ts != "" {
		if a.SkipTimeSeries {
			a.TimeSeriesSkipped++
			return nil
		}
		return fmt.Errorf("%w: the entry writes to time-series collection %s.%s (system.buckets.%s); restore to a target before %s (the backup holds the collection's measurements as dumped)",
			ErrTimeSeries, srcDB, ts, ts, Pos{T: e.TS.T, I: e.TS.I}.Text())
	}
	db, coll := a.split(e.NS)
	c := a.Client.Database(db).Collection(coll)
	switch e.Op {
	case "n":
		return nil
	case "i":
		id, err := e.O.LookupErr("_id")
		if err != nil {
			return errors.New("insert without _id")
		}
		_, err = c.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, e.O, options.Replace().SetUpsert(true))
		a.Applied++
		return err
	case "d":
		_, err := c.DeleteOne(ctx, e.O)
		a.Applied++
		return err
	case "u":
		id, err := e.O2.LookupErr("_id")
		if err != nil {
			return errors.New("update without o2._id")
		}
		filter := bson.D{{Key: "_id", Value: id}}
		kind, update, err := UpdateOf(e.O)
		if err != nil {
			return err
		}
		switch kind {
		case "replace":
			_, err = c.ReplaceOne(ctx, filter, update, options.Replace().SetUpsert(true))
		case "modifiers":
			_, err = c.UpdateOne(ctx, filter, update)
		case "diff":
			var cur bson.D
			switch err = c.FindOne(ctx, filter).Decode(&cur); {
			case errors.Is(err, mongo.ErrNoDocuments):
				// Deleted later in the log: a replay reaches that delete.
				a.Applied++
				return nil
			case err != nil:
				return err
			}
			var diff bson.D
			if err := bson.Unmarshal(update.(bson.Raw), &diff); err != nil {
				return err
			}
			next, err := ApplyDiff(cur, diff)
			if err != nil {
				return err
			}
			_, err = c.ReplaceOne(ctx, filter, next)
		}
		a.Applied++
		return err
	case "c":
		return a.command(ctx, db, e)
	}
	return fmt.Errorf("unknown oplog op %q", e.Op)
}

// UpdateOf classifies the o field of an update entry: "replace" (o is the
// whole new document), "modifiers" ($v 1: $set/$unset, passed to update
// as they are, $v dropped) or "diff" ($v 2: o.diff, returned as bson.Raw).
func UpdateOf(o bson.Raw) (kind string, update any, err error) {
	elems, err := o.Elements()
	if err != nil {
		return "", nil, err
	}
	v := int32(0)
	if val, err := o.LookupErr("$v"); err == nil {
		if n, ok := val.AsInt64OK(); ok {
			v = int32(n)
		}
	}
	if v == 2 {
		d, err := o.LookupErr("diff")
		if err != nil {
			return "", nil, errors.New("$v: 2 update without diff")
		}
		doc, ok := d.DocumentOK()
		if !ok {
			return "", nil, errors.New("$v: 2 update whose diff is not a document")
		}
		return "diff", doc, nil
	}
	var mods bson.D
	for _, el := range elems {
		k := el.Key()
		if k == "$v" {
			continue
		}
		if strings.HasPrefix(k, "$") {
			mods = append(mods, bson.E{Key: k, Value: el.Value()})
		}
	}
	if len(mods) > 0 {
		return "modifiers", mods, nil
	}
	return "replace", o, nil
}

// ApplyDiff applies a $v: 2 update diff (MongoDB 5.0+) to doc and returns
// the new document. A diff is a document of sections:
//
//	d: {field: false}      delete fields
//	u: {field: value}      set fields (in place when present, else appended)
//	i: {field: value}      insert fields (appended at the end)
//	s<field>: {...}        a sub-diff of a nested document or array
//
// An array sub-diff carries a: true, optionally l: <new length>, and
// u<index>: value / s<index>: sub-diff for its elements.
func ApplyDiff(doc bson.D, diff bson.D) (bson.D, error) {
	out := append(bson.D(nil), doc...)
	index := func(k string) int {
		for i, e := range out {
			if e.Key == k {
				return i
			}
		}
		return -1
	}
	for _, sec := range diff {
		switch {
		case sec.Key == "d":
			for _, f := range asD(sec.Value) {
				if i := index(f.Key); i >= 0 {
					out = append(out[:i], out[i+1:]...)
				}
			}
		case sec.Key == "u":
			for _, f := range asD(sec.Value) {
				if i := index(f.Key); i >= 0 {
					out[i].Value = f.Value
				} else {
					out = append(out, f)
				}
			}
		case sec.Key == "i":
			for _, f := range asD(sec.Value) {
				if i := index(f.Key); i >= 0 {
					out = append(out[:i], out[i+1:]...)
				}
				out = append(out, f)
			}
		case strings.HasPrefix(sec.Key, "s"):
			field := sec.Key[1:]
			sub := asD(sec.Value)
			i := index(field)
			if i < 0 {
				return nil, fmt.Errorf("diff names field %q, which the document lacks", field)
			}
			v, err := applySub(out[i].Value, sub)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", field, err)
			}
			out[i].Value = v
		default:
			return nil, fmt.Errorf("unknown diff section %q", sec.Key)
		}
	}
	return out, nil
}

func applySub(v any, sub bson.D) (any, error) {
	isArray := false
	for _, e := range sub {
		if e.Key == "a" {
			isArray, _ = e.Value.(bool)
		}
	}
	if !isArray {
		d, ok := v.(bson.D)
		if !ok {
			return nil, fmt.Errorf("document diff on a %T", v)
		}
		return ApplyDiff(d, sub)
	}
	arr, ok := v.(bson.A)
	if !ok {
		return nil, fmt.Errorf("array diff on a %T", v)
	}
	arr = append(bson.A(nil), arr...)
	for _, e := range sub {
		switch {
		case e.Key == "a":
		case e.Key == "l":
			n, ok := asInt(e.Value)
			if !ok || n < 0 {
				return nil, fmt.Errorf("array diff length %v", e.Value)
			}
			for len(arr) < n {
				arr = append(arr, nil)
			}
			arr = arr[:n]
		case strings.HasPrefix(e.Key, "u"):
			i, err := strconv.Atoi(e.Key[1:])
			if err != nil || i < 0 {
				return nil, fmt.Errorf("array diff key %q", e.Key)
			}
			for len(arr) <= i {
				arr = append(arr, nil)
			}
			arr[i] = e.Value
		case strings.HasPrefix(e.Key, "s"):
			i, err := strconv.Atoi(e.Key[1:])
			if err != nil || i < 0 || i >= len(arr) {
				return nil, fmt.Errorf("array diff key %q on %d elements", e.Key, len(arr))
			}
			nv, err := applySub(arr[i], asD(e.Value))
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			arr[i] = nv
		default:
			return nil, fmt.Errorf("unknown array diff key %q", e.Key)
		}
	}
	return arr, nil
}

// oplogCommand is the command that applies the o field of a command
// entry, nil when the entry changes nothing by itself.
func oplogCommand(o bson.D) (bson.D, error) {
	switch name := o[0].Key; name {
	case "create", "drop", "dropIndexes", "deleteIndexes", "collMod", "dropDatabase":
		return o, nil
	case "createIndexes":
		return createIndexesOf(o), nil
	case "commitIndexBuild":
		return commitToCreateIndexes(o), nil
	case "startIndexBuild", "abortIndexBuild":
		return nil, nil // the commit builds the index; an aborted build leaves none
	case "renameCollection":
		// The oplog names the collection a rename replaced by its UUID
		// (dropTarget: UUID); the command takes true.
		for i, el := range o {
			if el.Key == "dropTarget" {
				if _, isBool := el.Value.(bool); !isBool {
					o[i].Value = true
				}
			}
		}
		return o, nil
	default:
		return nil, fmt.Errorf("oplog command %q is not supported", name)
	}
}

// createIndexesOf turns a createIndexes oplog entry's o, one index
// specification inline, into the createIndexes command; a command that
// already has indexes only loses their versions (indexSpec).
func createIndexesOf(o bson.D) bson.D {
	var spec bson.D
	for _, el := range o[1:] {
		if el.Key == "indexes" {
			return commitToCreateIndexes(o)
		}
		spec = append(spec, el)
	}
	return bson.D{o[0], {Key: "indexes", Value: bson.A{indexSpec(spec)}}}
}

// commitToCreateIndexes turns a commitIndexBuild oplog entry's o
// ({commitIndexBuild: "c", indexBuildUUID: UUID, indexes: [...]}) into the
// createIndexes command building the same indexes.
func commitToCreateIndexes(o bson.D) bson.D {
	var specs bson.A
	for _, el := range o[1:] {
		if el.Key == "indexes" {
			arr, _ := el.Value.(bson.A)
			for _, s := range arr {
				if d, ok := s.(bson.D); ok {
					specs = append(specs, indexSpec(d))
				} else {
					specs = append(specs, s)
				}
			}
		}
	}
	return bson.D{{Key: "createIndexes", Value: o[0].Value}, {Key: "indexes", Value: specs}}
}

// indexSpec drops the fields an index specification carries in the oplog
// that createIndexes need not be given: v (the server picks the version)
// and ns (before 4.4).
func indexSpec(spec bson.D) bson.D {
	var out bson.D
	for _, el := range spec {
		if el.Key != "v" && el.Key != "ns" {
			out = append(out, el)
		}
	}
	return out
}

func asD(v any) bson.D {
	d, _ := v.(bson.D)
	return d
}

func asInt(v any) (int, bool) {
	switch n := v.(type) {
	case int32:
		return int(n), true
	case int64:
		return int(n), true
	case float64:
		return int(n), n == float64(int(n))
	}
	return 0, false
}

// command applies a command entry (op c). applyOps recurses into its
// operations; create, drop and the index commands run as they are, with
// "already exists" and "not found" taken as already applied. Index builds
// come in the shapes MongoDB 4.4+ logs them: on an empty collection one
// createIndexes entry holding one index specification inline
// ({createIndexes: "c", v: 2, key: {...}, name: "..."}), run as
// createIndexes with that index; on a collection with documents a
// two-phase build, startIndexBuild then commitIndexBuild (or
// abortIndexBuild), whose commit (its indexes array) is run as
// createIndexes and whose start and abort change nothing.
func (a *Applier) command(ctx context.Context, db string, e Entry) error {
	elems, err := e.O.Elements()
	if err != nil || len(elems) == 0 {
		return fmt.Errorf("empty command")
	}
	name := elems[0].Key()
	if name == "applyOps" {
		ops, ok := elems[0].Value().ArrayOK()
		if !ok {
			return errors.New("applyOps without an array")
		}
		vals, err := ops.Values()
		if err != nil {
			return err
		}
		for _, v := range vals {
			doc, ok := v.DocumentOK()
			if !ok {
				return errors.New("applyOps element is not a document")
			}
			var sub Entry
			if err := bson.Unmarshal(doc, &sub); err != nil {
				return err
			}
			sub.TS = e.TS
			if err := a.apply(ctx, sub); err != nil {
				return err
			}
		}
		return nil
	}
	var cmd bson.D
	if err := bson.Unmarshal(e.O, &cmd); err != nil {
		return err
	}
	cmd, err = oplogCommand(cmd)
	if err != nil || cmd == nil {
		return err
	}
	if name == "renameCollection" {
		for i, el := range cmd {
			if s, ok := el.Value.(string); ok && a.Rename != nil && (el.Key == "renameCollection" || el.Key == "to") {
				d, c, _ := strings.Cut(s, ".")
				cmd[i].Value = a.Rename(d) + "." + c
			}
		}
		db = "admin" // renameCollection runs only there
	}
	a.Applied++
	err = a.Client.Database(db).RunCommand(ctx, cmd).Err()
	var ce mongo.CommandError
	if errors.As(err, &ce) && (ce.Name == "NamespaceExists" || ce.Name == "NamespaceNotFound" || ce.Name == "IndexNotFound" || ce.Code == 48 || ce.Code == 26 || ce.Code == 27) {
		return nil
	}
	return err
}

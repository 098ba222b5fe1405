package mgengine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The entries of a logical dump, in the order they are written:
//
//	metadata.json                 every database and collection: type, options, indexes (Metadata)
//	data/<db>/<collection>.bson   the collection's documents, concatenated BSON, one entry per collection
//	oplog.bson                    the oplog entries written while the data was read (when the server has an oplog)
//
// Database and collection names are path-escaped in entry names;
// Metadata.Collections[].Entry names each collection's entry exactly.
const (
	MetadataEntry = "metadata.json"
	OplogEntry    = "oplog.bson"
	FormatVersion = "amber-mongodb/1"
)

// Metadata is the first entry of a dump.
type Metadata struct {
	Format        string       `json:"format"`
	ServerVersion string       `json:"server_version"`
	Databases     []string     `json:"databases"`
	Collections   []Collection `json:"collections"`
	// Oplog says whether an oplog.bson entry follows the data, and the
	// window it covers: (Start, End].
	Oplog bool   `json:"oplog"`
	Start string `json:"start,omitempty"` // Pos.Text
	End   string `json:"end,omitempty"`
	// Auth, when set, says the dump holds users and roles (DumpOptions.Users).
	Auth *Auth `json:"auth,omitempty"`
}

// Collection describes one collection or view.
type Collection struct {
	Database string `json:"database"`
	Name     string `json:"name"`
	Type     string `json:"type"`            // "collection", "view", "timeseries"
	Entry    string `json:"entry,omitempty"` // data entry; none for views
	// Options and Indexes are MongoDB canonical extended JSON, as
	// listCollections and listIndexes return them.
	Options json.RawMessage   `json:"options"`
	Indexes []json.RawMessage `json:"indexes,omitempty"`
}

// NS is "<db>.<collection>".
func (c Collection) NS() string { return c.Database + "." + c.Name }

// Sink receives the entries of a dump, one at a time.
type Sink interface {
	Create(ctx context.Context, name, kind string) (io.WriteCloser, error)
}

// DumpOptions tune LogicalDump.
type DumpOptions struct {
	// Databases to dump; empty: the URI's database, or every database but
	// admin, local and config when the URI names none.
	Databases []string
	Workers   int    // collections read at once; default 4
	SpoolDir  string // where a collection read while another is sent waits; default the temp dir
	BatchSize int32  // documents per cursor batch; 0: the server's default
	// ReadPreference: "secondaryPreferred" (the default) dumps, data and
	// oplog window alike, from one secondary of a replica set, the least
	// lagging, connected directly, when there is one; "primary" from the
	// member the URI selects.
	ReadPreference string
	// Users adds the users and roles of the dumped databases (of every
	// database, admin's included, when the dump is of all of them): see
	// UsersEntry.
	Users bool
	// Archived is the archived end of the server's oplog stream, when the
	// host holds one: the dump names the epoch of its window from it
	// (Conn.EpochOf).
	Archived Archived
	Logger   *slog.Logger
}

// Read preferences of DumpOptions.
const (
	ReadSecondaryPreferred = "secondaryPreferred"
	ReadPrimary            = "primary"
)

// DumpResult says what a dump holds and where it is consistent.
type DumpResult struct {
	Info        *Info
	Databases   []string
	Collections int
	Docs, Bytes int64
	Start, End  Pos    // oplog window; zero without an oplog
	Epoch       uint32 // the epoch of the window's end (Conn.EpochOf); 1 without an oplog
	OplogOps    int
	Users       int // users and roles dumped, with DumpOptions.Users
	Roles       int
	Time        time.Time
	Member      string // the replica set member read ("host:port"), when known
}

// systemDatabases are never dumped.
var systemDatabases = []string{"admin", "local", "config"}

// LogicalDump writes a dump of the server at uri to sink.
func LogicalDump(ctx context.Context, uri URI, sink Sink, o DumpOptions) (*DumpResult, error) {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch o.ReadPreference {
	case "":
		o.ReadPreference = ReadSecondaryPreferred
	case ReadSecondaryPreferred, ReadPrimary:
	default:
		return nil, fmt.Errorf("read preference %q: want %s or %s", o.ReadPreference, ReadSecondaryPreferred, ReadPrimary)
	}
	c, err := Connect(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer func() { c.Close() }()
	info, err := c.Probe(ctx)
	if err != nil && !errors.Is(err, ErrNoOplog) {
		return nil, err
	}
	// Data and oplog window come from one member: a secondary, when the
	// set has a healthy one, connected directly.
	if o.ReadPreference == ReadSecondaryPreferred && info.SetName != "" && !info.Secondary {
		if sc, si := pickSecondary(ctx, uri, info, o.Logger); sc != nil {
			c.Close()
			c, info = sc, si
		}
	}
	res := &DumpResult{Info: info, Member: info.Me, Epoch: 1}

	// The oplog window opens before the first read: at the newest entry
	// Probe read (one query fewer; on FerretDB every query of its oplog
	// emulation reads the whole collection).
	if info.Oplog {
		res.Start = info.Last
		// A transaction open then (a large one part-written, a prepared
		// one not yet committed) may commit inside the window: the window
		// opens before its first entry, so the restore applies it whole
		// (txn.go), as mongodump does.
		if first, ok := oldestOpenTxn(ctx, c, o.Logger); ok && first.Less(res.Start.Next()) {
			res.Start = lastOf(first)
		}
	}
	dbs := o.Databases
	if len(dbs) == 0 && c.Database != "" {
		dbs = []string{c.Database}
	}
	if len(dbs) == 0 {
		names, err := c.Client.ListDatabaseNames(ctx, bson.D{})
		if err != nil {
			return nil, c.explain(fmt.Errorf("list databases: %w", err))
		}
		for _, n := range names {
			if !slices.Contains(systemDatabases, n) {
				dbs = append(dbs, n)
			}
		}
	}
	slices.Sort(dbs)
	res.Databases = dbs
	meta := Metadata{Format: FormatVersion, ServerVersion: info.Version, Databases: dbs, Oplog: info.Oplog}
	for _, db := range dbs {
		colls, err := listCollections(ctx, c, db)
		if err != nil {
			return nil, err
		}
		if len(colls) == 0 && len(o.Databases) == 0 && c.Database != "" {
			return nil, fmt.Errorf("database %q holds no collections on %s (MongoDB has no such database): check the database name in the URI, or name none to dump every database", db, info.HostsLabel)
		}
		meta.Collections = append(meta.Collections, colls...)
	}
	if info.Oplog {
		meta.Start = res.Start.Text()
	}
	if o.Users {
		meta.Auth = &Auth{Users: UsersEntry, Roles: RolesEntry}
		if len(o.Databases) > 0 || c.Database != "" {
			meta.Auth.Databases = dbs
		}
	}
	if err := writeJSON(ctx, sink, MetadataEntry, meta); err != nil {
		return nil, err
	}

	var docs, bytes atomic.Int64
	d := &dumper{c: c, sink: sink, o: o, docs: &docs, bytes: &bytes}
	jobs := make(chan Collection)
	errc := make(chan error, o.Workers)
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for coll := range jobs {
				if err := d.collection(dctx, coll); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, coll := range meta.Collections {
		if coll.Entry == "" {
			continue
		}
		res.Collections++
		select {
		case jobs <- coll:
		case <-dctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res.Docs, res.Bytes = docs.Load(), bytes.Load()
	if meta.Auth != nil {
		if res.Users, res.Roles, err = dumpAuth(ctx, c, sink, meta.Auth); err != nil {
			return nil, err
		}
	}

	// ... and closes after the last: every entry past Start that one query,
	// made once the reads are done, returns; the window ends at the last
	// of them. Applied, they make the copy consistent at the window's end.
	if info.Oplog {
		if res.End, res.OplogOps, err = dumpOplog(ctx, c, sink, res.Start); err != nil {
			return nil, err
		}
		if res.Epoch, err = c.EpochOf(ctx, o.Archived, res.End.Next()); err != nil {
			return nil, err
		}
	}
	res.Time = time.Now()
	return res, nil
}

func writeJSON(ctx context.Context, sink Sink, name string, v any) error {
	w, err := sink.Create(ctx, name, "json")
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		w.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	return w.Close()
}

// listCollections describes db's collections and views, system ones left out.
func listCollections(ctx context.Context, c *Conn, db string) ([]Collection, error) {
	d := c.Client.Database(db)
	cur, err := d.ListCollections(ctx, bson.D{})
	if err != nil {
		return nil, c.explain(fmt.Errorf("list collections of %s: %w", db, err))
	}
	defer cur.Close(ctx)
	var out []Collection
	for cur.Next(ctx) {
		var spec struct {
			Name    string   `bson:"name"`
			Type    string   `bson:"type"`
			Options bson.Raw `bson:"options"`
		}
		if err := cur.Decode(&spec); err != nil {
			return nil, fmt.Errorf("list collections of %s: %w", db, err)
		}
		if strings.HasPrefix(spec.Name, "system.") {
			continue
		}
		if spec.Type == "" {
			spec.Type = "collection"
		}
		if spec.Options == nil {
			spec.Options = bson.Raw(emptyDoc)
		}
		opts, err := bson.MarshalExtJSON(spec.Options, true, false)
		if err != nil {
			return nil, fmt.Errorf("collection %s.%s options: %w", db, spec.Name, err)
		}
		coll := Collection{Database: db, Name: spec.Name, Type: spec.Type, Options: opts}
		if spec.Type != "view" {
			coll.Entry = "data/" + url.PathEscape(db) + "/" + url.PathEscape(spec.Name) + ".bson"
			if coll.Indexes, err = listIndexes(ctx, c, d.Collection(spec.Name)); err != nil {
				return nil, err
			}
		}
		out = append(out, coll)
	}
	if err := cur.Err(); err != nil {
		return nil, c.explain(fmt.Errorf("list collections of %s: %w", db, err))
	}
	slices.SortFunc(out, func(a, b Collection) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

var emptyDoc = []byte{5, 0, 0, 0, 0}

func listIndexes(ctx context.Context, c *Conn, coll *mongo.Collection) ([]json.RawMessage, error) {
	cur, err := coll.Indexes().List(ctx)
	if err != nil {
		return nil, c.explain(fmt.Errorf("list indexes of %s.%s: %w", coll.Database().Name(), coll.Name(), err))
	}
	defer cur.Close(ctx)
	var out []json.RawMessage
	for cur.Next(ctx) {
		j, err := bson.MarshalExtJSON(cur.Current, true, false)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, cur.Err()
}

type dumper struct {
	c           *Conn
	sink        Sink
	o           DumpOptions
	sinkMu      sync.Mutex
	docs, bytes *atomic.Int64
}

// collection reads one collection: straight into the sink when it is free,
// else into a spool file that is sent once the sink is.
func (d *dumper) collection(ctx context.Context, coll Collection) error {
	start := time.Now()
	if d.sinkMu.TryLock() {
		defer d.sinkMu.Unlock()
		w, err := d.sink.Create(ctx, coll.Entry, "bson")
		if err != nil {
			return err
		}
		n, size, err := d.read(ctx, coll, w)
		if err != nil {
			w.Close()
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		d.o.Logger.Debug("collection dumped", "ns", coll.NS(), "docs", n, "bytes", size, "spooled", false, "took", time.Since(start))
		return nil
	}
	f, err := os.CreateTemp(d.o.SpoolDir, "amber-mongodb-*.bson")
	if err != nil {
		return fmt.Errorf("spool %s: %w", coll.NS(), err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, size, err := d.read(ctx, coll, f)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	d.sinkMu.Lock()
	defer d.sinkMu.Unlock()
	w, err := d.sink.Create(ctx, coll.Entry, "bson")
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, f); err != nil {
		w.Close()
		return fmt.Errorf("send %s: %w", coll.NS(), err)
	}
	if err := w.Close(); err != nil {
		return err
	}
	d.o.Logger.Debug("collection dumped", "ns", coll.NS(), "docs", n, "bytes", size, "spooled", true, "took", time.Since(start))
	return nil
}

// read writes every document of coll to w as BSON.
func (d *dumper) read(ctx context.Context, coll Collection, w io.Writer) (docs, size int64, err error) {
	fo := options.Find()
	if d.o.BatchSize > 0 {
		fo.SetBatchSize(d.o.BatchSize)
	}
	cur, err := d.c.Client.Database(coll.Database).Collection(coll.Name).Find(ctx, bson.D{}, fo)
	if err != nil {
		return 0, 0, d.c.explain(fmt.Errorf("read %s: %w", coll.NS(), err))
	}
	defer cur.Close(ctx)
	bw := bufio.NewWriterSize(w, 1<<20)
	for cur.Next(ctx) {
		if _, err := bw.Write(cur.Current); err != nil {
			return docs, size, fmt.Errorf("write %s: %w", coll.NS(), err)
		}
		docs++
		size += int64(len(cur.Current))
	}
	if err := cur.Err(); err != nil {
		return docs, size, d.c.explain(fmt.Errorf("read %s: %w", coll.NS(), err))
	}
	if err := bw.Flush(); err != nil {
		return docs, size, fmt.Errorf("write %s: %w", coll.NS(), err)
	}
	d.docs.Add(docs)
	d.bytes.Add(size)
	return docs, size, nil
}

// oldestOpenTxn returns the optime of the first oplog entry of the oldest
// transaction in progress or prepared, from config.transactions
// (startOpTime, MongoDB 4.2+); false when there is none, or it cannot be
// read (FerretDB has no config.transactions; a user without read access
// to it gets a warning).
func oldestOpenTxn(ctx context.Context, c *Conn, log *slog.Logger) (Pos, bool) {
	var doc struct {
		StartOpTime *struct {
			TS bson.Timestamp `bson:"ts"`
		} `bson:"startOpTime"`
	}
	err := c.Client.Database("config").Collection("transactions").FindOne(ctx,
		bson.D{{Key: "state", Value: bson.D{{Key: "$in", Value: bson.A{"prepared", "inProgress"}}}}},
		options.FindOne().SetSort(bson.D{{Key: "startOpTime", Value: 1}})).Decode(&doc)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return Pos{}, false
	case err != nil:
		log.Warn("cannot read config.transactions: a transaction open when the dump began and committed during it would be refused at restore", "error", c.explain(err))
		return Pos{}, false
	case doc.StartOpTime == nil || doc.StartOpTime.TS.T == 0:
		return Pos{}, false
	}
	return Pos{T: doc.StartOpTime.TS.T, I: doc.StartOpTime.TS.I}, true
}

// dumpOplog writes the oplog entries after start as oplog.bson, in the
// oplog's order, and returns the last one's position (start when there is
// none): the window (start, end].
func dumpOplog(ctx context.Context, c *Conn, sink Sink, start Pos) (end Pos, n int, err error) {
	end = start
	w, err := sink.Create(ctx, OplogEntry, "bson")
	if err != nil {
		return end, 0, err
	}
	filter := bson.D{{Key: "ts", Value: bson.D{{Key: "$gt", Value: bson.Timestamp{T: start.T, I: start.I}}}}}
	cur, err := c.Client.Database("local").Collection("oplog.rs").Find(ctx, filter)
	if err != nil {
		w.Close()
		return end, 0, c.explain(fmt.Errorf("read the oplog: %w", err))
	}
	defer cur.Close(ctx)
	bw := bufio.NewWriterSize(w, 1<<20)
	for cur.Next(ctx) {
		t, i, ok := cur.Current.Lookup("ts").TimestampOK()
		if !ok {
			w.Close()
			return end, n, errors.New("read the oplog: an entry without a ts timestamp")
		}
		end = Pos{T: t, I: i}
		if _, err := bw.Write(cur.Current); err != nil {
			w.Close()
			return end, n, err
		}
		n++
	}
	if err := cur.Err(); err != nil {
		w.Close()
		return end, n, c.explain(fmt.Errorf("read the oplog: %w", err))
	}
	if err := bw.Flush(); err != nil {
		w.Close()
		return end, n, err
	}
	return end, n, w.Close()
}

// ReadDocs calls fn with each BSON document read from r, until io.EOF.
// The slice passed to fn is only valid during the call.
func ReadDocs(r io.Reader, fn func(bson.Raw) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var hdr [4]byte
	buf := make([]byte, 0, 64<<10)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read a BSON document: %w", err)
		}
		n := int(uint32(hdr[0]) | uint32(hdr[1])<<8 | uint32(hdr[2])<<16 | uint32(hdr[3])<<24)
		if n < 5 || n > 64<<20 {
			return fmt.Errorf("read a BSON document: length %d out of range", n)
		}
		if cap(buf) < n {
			buf = make([]byte, 0, n)
		}
		buf = append(buf[:0], hdr[:]...)
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf[4:]); err != nil {
			return fmt.Errorf("read a BSON document of %d bytes: %w", n, err)
		}
		if err := fn(bson.Raw(buf)); err != nil {
			return err
		}
	}
}

// pickSecondary connects to each member hello lists but the primary and
// returns the secondary with an oplog that lags least, or nil when there
// is none.
func pickSecondary(ctx context.Context, uri URI, info *Info, log *slog.Logger) (*Conn, *Info) {
	var cands []candidate
	var conns []*Conn
	for _, h := range info.Members {
		if h == info.PrimaryHost || h == info.Me {
			continue
		}
		mc, err := ConnectMember(ctx, uri, h)
		if err != nil {
			log.Info("replica set member not usable for the dump", "member", h, "err", err)
			continue
		}
		mi, err := mc.Probe(ctx)
		if err != nil {
			log.Info("replica set member not usable for the dump", "member", h, "err", err)
			mc.Close()
			continue
		}
		cands = append(cands, candidate{host: h, secondary: mi.Secondary, oplog: mi.Oplog, setName: mi.SetName, lag: mi.Lag, lagKnown: mi.LagErr == "", info: mi})
		conns = append(conns, mc)
	}
	best := chooseSecondary(cands, info.SetName)
	for i, mc := range conns {
		if i != best {
			mc.Close()
		}
	}
	if best < 0 {
		log.Info("no secondary to dump from: reading the primary", "primary", info.PrimaryHost)
		return nil, nil
	}
	log.Info("dumping from a secondary", "member", cands[best].host, "lag", cands[best].lag)
	if cands[best].info.Me == "" {
		cands[best].info.Me = cands[best].host
	}
	return conns[best], cands[best].info
}

type candidate struct {
	host             string
	secondary, oplog bool
	setName          string
	lag              time.Duration
	lagKnown         bool
	info             *Info
}

// chooseSecondary returns the index of the secondary of set setName, with
// an oplog, that lags least (one whose lag is unknown after those whose
// lag is known), or -1.
func chooseSecondary(cands []candidate, setName string) int {
	best := -1
	for i, c := range cands {
		if !c.secondary || !c.oplog || c.setName != setName {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		b := cands[best]
		if (c.lagKnown && !b.lagKnown) || (c.lagKnown == b.lagKnown && c.lag < b.lag) {
			best = i
		}
	}
	return best
}

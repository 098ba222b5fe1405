// Command mgbench is the MongoDB part of `make bench` (docs/bench-mongodb.sh):
// it loads the benchmark's data set, describes a database so that a restore
// can be compared with its source, and measures the archive lag under a
// write load. It is a benchmark tool, not part of Amber.
//
//	mgbench load -uri mongodb://h:p/bench -mb 500      prints "<documents> <bytes>"
//	mgbench oplog -uri mongodb://h:p/ -mb 64           creates the capped local.oplog.rs (FerretDB's oplog emulation starts)
//	mgbench sum  -uri mongodb://h:p/bench              prints mgtest.Checksums, one line per collection
//	mgbench lag  -uri mongodb://h:p/lag -log REPO/log -seconds 30
//	                                                   prints "n p50 p90 p99 max missing writes/s"
package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine/mgtest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: mgbench load|sum|lag -uri URI ..."))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	uri := fs.String("uri", "", "MongoDB URI naming the database")
	mb := fs.Int("mb", 500, "load: MB (10^6 bytes) of BSON documents to insert")
	logDir := fs.String("log", "", "lag: the repository's log/ directory")
	seconds := fs.Int("seconds", 30, "lag: length of the write load")
	fs.Parse(os.Args[2:])
	ctx := context.Background()
	c, err := mgengine.Connect(ctx, mgengine.URI(*uri))
	if err != nil {
		fail(err)
	}
	defer c.Close()
	cl, db := c.Client, c.Client.Database(c.Database)
	switch os.Args[1] {
	case "load":
		n, b, err := load(ctx, db.Collection("bench_mixed"), int64(*mb)*1e6)
		if err != nil {
			fail(err)
		}
		fmt.Println(n, b)
	case "oplog":
		err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(int64(*mb)<<20))
		if err != nil {
			fail(err)
		}
	case "sum":
		sums, err := mgtest.Checksums(ctx, db)
		if err != nil {
			fail(err)
		}
		keys := make([]string, 0, len(sums))
		for k := range sums {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Printf("%s: %s\n", k, sums[k])
		}
	case "lag":
		if err := lag(ctx, cl, db, *logDir, time.Duration(*seconds)*time.Second); err != nil {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mgbench:", err)
	os.Exit(1)
}

var words = strings.Fields(`order shipped paid refunded pending customer invoice account balance transfer
	card payment delivery address street city country warehouse item product quantity price discount tax total
	note message support ticket open closed resolved priority high low normal review rating comment reply`)

// doc is one document of the data set: bench_mixed's columns (the standard
// data set's table, docs/bench.sh) as fields, plus a status, tags and a
// text body of common words, about 500 bytes of BSON.
func doc(r *rand.Rand, id int64) bson.D {
	sum := md5.Sum([]byte(strconv.FormatInt(id, 10)))
	note := hex.EncodeToString(sum[:]) + " " + fmt.Sprintf("%016x", r.Uint64())[:r.IntN(17)]
	var body strings.Builder
	for body.Len() < 250+r.IntN(200) {
		body.WriteString(words[r.IntN(len(words))])
		body.WriteByte(' ')
	}
	return bson.D{
		{Key: "_id", Value: id},
		{Key: "ts", Value: bson.NewDateTimeFromTime(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(id%5000000) * 7 * time.Second))},
		{Key: "amount", Value: float64(r.IntN(10000000)) / 100},
		{Key: "email", Value: "user" + strconv.Itoa(r.IntN(1000000)) + "@example.com"},
		{Key: "note", Value: note},
		{Key: "status", Value: words[r.IntN(8)]},
		{Key: "tags", Value: bson.A{words[r.IntN(len(words))], words[r.IntN(len(words))]}},
		{Key: "qty", Value: int32(r.IntN(100))},
		{Key: "body", Value: body.String()},
	}
}

// load inserts documents until about size bytes of BSON, two sessions of
// insertMany(1000) at once, into a new collection.
func load(ctx context.Context, c *mongo.Collection, size int64) (int64, int64, error) {
	if err := c.Drop(ctx); err != nil {
		return 0, 0, err
	}
	var next, bytes atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for bytes.Load() < size {
				from := next.Add(1000) - 1000
				docs := make([]any, 0, 1000)
				for i := from; i < from+1000; i++ {
					d, _ := bson.Marshal(doc(r, i+1))
					bytes.Add(int64(len(d)))
					docs = append(docs, bson.Raw(d))
				}
				if _, err := c.InsertMany(ctx, docs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	n, err := c.EstimatedDocumentCount(ctx)
	return n, bytes.Load(), err
}

type reach struct {
	at  time.Time
	end uint64
}

// maxEnd is the largest end offset of the segments under a repository's
// log/ directory (log/<stream>/<epoch>/<start>-<end>[.partial]): every
// object there is durable once listed (written, synced, renamed).
// objects counts the segment objects under a repository's log directory.
func objects(dir string) int {
	n := 0
	streams, _ := os.ReadDir(dir)
	for _, s := range streams {
		epochs, _ := os.ReadDir(filepath.Join(dir, s.Name()))
		for _, e := range epochs {
			objs, _ := os.ReadDir(filepath.Join(dir, s.Name(), e.Name()))
			for _, o := range objs {
				if !strings.HasPrefix(o.Name(), ".") {
					n++
				}
			}
		}
	}
	return n
}

func maxEnd(dir string) uint64 {
	var m uint64
	streams, _ := os.ReadDir(dir)
	for _, s := range streams {
		epochs, _ := os.ReadDir(filepath.Join(dir, s.Name()))
		for _, e := range epochs {
			objs, _ := os.ReadDir(filepath.Join(dir, s.Name(), e.Name()))
			for _, o := range objs {
				n := strings.TrimSuffix(o.Name(), ".partial")
				if strings.HasPrefix(n, ".") {
					continue
				}
				if i := strings.IndexByte(n, '-'); i > 0 {
					if v, err := strconv.ParseUint(n[i+1:], 16, 64); err == nil && v > m {
						m = v
					}
				}
			}
		}
	}
	return m
}

// lag runs two writers inserting one document at a time for d while a
// probe inserts a marker every 100 ms, notes the time before the insert
// and the newest oplog entry after it returned, and a watcher lists the
// repository's log directory every 10 ms. A marker's lag is the time from
// its insert to the first listing whose segments end past that entry.
func lag(ctx context.Context, cl *mongo.Client, db *mongo.Database, dir string, d time.Duration) error {
	var seen []reach
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var last uint64
		for {
			if m := maxEnd(dir); m > last {
				last = m
				seen = append(seen, reach{time.Now(), m})
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	type marker struct {
		at  time.Time
		pos uint64
	}
	var markers []marker
	var writes atomic.Int64
	// Writers and probe stop at the deadline; their operations run without
	// one (a driver read deadline can fire just before the context's).
	deadline := time.Now().Add(d)
	running := func() bool { return time.Now().Before(deadline) }
	objs0 := objects(dir)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w)+10, 2))
			c := db.Collection("lag_load")
			for i := int64(w) << 40; running(); i++ {
				if _, err := c.InsertOne(ctx, doc(r, i)); err != nil {
					errs <- err
					return
				}
				writes.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := db.Collection("lag_probe")
		oplog := cl.Database("local").Collection("oplog.rs")
		for i := 0; running(); i++ {
			at := time.Now()
			if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "t", Value: at}}); err != nil {
				errs <- err
				return
			}
			var e struct {
				TS bson.Timestamp `bson:"ts"`
			}
			err := oplog.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}})).Decode(&e)
			if err != nil {
				errs <- err
				return
			}
			markers = append(markers, marker{at, mgengine.Pos{T: e.TS.T, I: e.TS.I}.Next().Offset()})
			time.Sleep(100*time.Millisecond - time.Since(at))
		}
	}()
	wg.Wait()
	objs := objects(dir) - objs0
	close(errs)
	if err := <-errs; err != nil {
		close(stop)
		return err
	}
	time.Sleep(3 * time.Second) // the last markers become durable
	close(stop)
	<-watched
	var lags []float64
	missing := 0
	for _, m := range markers {
		k := sort.Search(len(seen), func(k int) bool { return seen[k].end >= m.pos })
		if k == len(seen) {
			missing++
			continue
		}
		lags = append(lags, max(0, seen[k].at.Sub(m.at).Seconds()))
	}
	sort.Float64s(lags)
	q := func(p float64) float64 {
		if len(lags) == 0 {
			return -1
		}
		return lags[min(len(lags)-1, int(p*float64(len(lags))))]
	}
	fmt.Printf("%d %.3f %.3f %.3f %.3f %d %d %d\n", len(lags), q(0.50), q(0.90), q(0.99), q(1), missing, writes.Load()/int64(d/time.Second),
		int64(objs)*int64(time.Minute)/int64(d))
	return nil
}

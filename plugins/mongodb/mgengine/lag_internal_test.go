package mgengine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance/testbed"
)

// BenchmarkArchiveLag splits the archive lag of markers written under a
// write load (two sessions inserting one document at a time, a marker
// every 100 ms, for BENCH_LAG_SECONDS, default 20) into its parts:
// append (the insert's start to the entry's wall time: the server writing
// the entry), read (wall time to the archiver receiving it from its
// cursor), hold (received to sent: the flush rule), write (the send: a
// file written and synced here, standing in for the repository). It
// reports p50 and p99 of each, and of the total, in milliseconds, and the
// segments per minute. Run: go test ./plugins/mongodb/mgengine -run '^$'
// -bench ArchiveLag -benchtime 1x
func BenchmarkArchiveLag(b *testing.B) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(b)
	cl, err := mongo.Connect(options.Client().ApplyURI(srv.Base))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Disconnect(ctx)
	if srv.FerretDB {
		if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<30)); err != nil {
			b.Fatal(err)
		}
	}
	seconds := 20
	if v := os.Getenv("BENCH_LAG_SECONDS"); v != "" {
		fmt.Sscan(v, &seconds)
	}
	db := cl.Database(srv.DBName)
	probeNS := srv.DBName + ".lag_probe"
	type times struct{ t0, wall, arrived, sendStart, sendEnd time.Time }
	var mu sync.Mutex
	marks := map[int32]*times{}
	mark := func(id int32) *times {
		if marks[id] == nil {
			marks[id] = &times{}
		}
		return marks[id]
	}
	type probeEntry struct {
		NS   string    `bson:"ns"`
		Wall time.Time `bson:"wall"`
		O    struct {
			ID int32 `bson:"_id"`
		} `bson:"o"`
	}
	traceRead = func(entries []bson.Raw, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		for _, raw := range entries {
			var e probeEntry
			if bson.Unmarshal(raw, &e) == nil && e.NS == probeNS {
				if m := mark(e.O.ID); m.arrived.IsZero() {
					m.arrived = at
				}
			}
		}
	}
	defer func() { traceRead = nil }()
	file := filepath.Join(b.TempDir(), "segments")
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	segs := 0
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Archive(ctx, URI(srv.Base), ArchiveOptions{Stop: stop}, func(_ context.Context, s Segment) error {
			began := time.Now()
			if _, err := f.Write(s.Data); err != nil {
				return err
			}
			if err := f.Sync(); err != nil {
				return err
			}
			end := time.Now()
			mu.Lock()
			defer mu.Unlock()
			segs++
			return ReadDocs(bytes.NewReader(s.Data), func(raw bson.Raw) error {
				var e probeEntry
				if bson.Unmarshal(raw, &e) == nil && e.NS == probeNS {
					m := mark(e.O.ID)
					m.wall, m.sendStart, m.sendEnd = e.Wall, began, end
				}
				return nil
			})
		})
	}()
	time.Sleep(2 * time.Second) // the archiver has its starting point
	mu.Lock()
	segs0 := segs
	mu.Unlock()
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := db.Collection("lag_load")
			for i := int64(w) << 40; time.Now().Before(deadline); i++ {
				if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "pad", Value: bytes.Repeat([]byte{'x'}, 200)}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	c := db.Collection("lag_probe")
	for i := int32(0); time.Now().Before(deadline); i++ {
		at := time.Now()
		mu.Lock()
		mark(i).t0 = at
		mu.Unlock()
		if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			b.Fatal(err)
		}
		time.Sleep(100*time.Millisecond - time.Since(at))
	}
	wg.Wait()
	mu.Lock()
	segsLoad := segs - segs0
	mu.Unlock()
	time.Sleep(3 * time.Second)
	close(stop)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	parts := map[string][]float64{}
	missing := 0
	for _, m := range marks {
		if m.t0.IsZero() || m.sendEnd.IsZero() || m.arrived.IsZero() {
			missing++
			continue
		}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		parts["append"] = append(parts["append"], ms(m.wall.Sub(m.t0)))
		parts["read"] = append(parts["read"], ms(m.arrived.Sub(m.wall)))
		parts["hold"] = append(parts["hold"], ms(m.sendStart.Sub(m.arrived)))
		parts["write"] = append(parts["write"], ms(m.sendEnd.Sub(m.sendStart)))
		parts["total"] = append(parts["total"], ms(m.sendEnd.Sub(m.t0)))
	}
	for _, k := range []string{"append", "read", "hold", "write", "total"} {
		v := parts[k]
		sort.Float64s(v)
		if len(v) == 0 {
			b.Fatalf("no marker archived (%d missing)", missing)
		}
		q := func(p float64) float64 { return v[min(len(v)-1, int(p*float64(len(v))))] }
		b.ReportMetric(q(0.5), k+"-p50-ms")
		b.ReportMetric(q(0.99), k+"-p99-ms")
	}
	b.ReportMetric(float64(len(parts["total"])), "markers")
	b.ReportMetric(float64(missing), "missing")
	b.ReportMetric(float64(segsLoad)*60/float64(seconds), "segments/min")
}

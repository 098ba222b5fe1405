package mgengine_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// TestArchiveFlushUnderLoad: while writers keep the oplog busy (the
// cursor always has a next entry), the archiver still sends what it holds
// every flush interval, not only when the cursor waits or a segment is
// full.
func TestArchiveFlushUnderLoad(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	if srv.FerretDB {
		if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(256<<20)); err != nil {
			t.Fatal(err)
		}
	}
	m := cl.Database(srv.DBName).Collection("load")
	const interval = 300 * time.Millisecond
	var mu sync.Mutex
	var sent []time.Time
	var entries atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- mgengine.Archive(ctx, mgengine.URI(srv.Base), mgengine.ArchiveOptions{FlushInterval: interval, Stop: stop},
			func(_ context.Context, s mgengine.Segment) error {
				mu.Lock()
				defer mu.Unlock()
				sent = append(sent, time.Now())
				entries.Add(int64(s.Entries))
				return nil
			})
	}()
	time.Sleep(time.Second) // the archiver has its starting point

	// Writers: batches of 100 inserts back to back for 8 s (long enough for
	// several sends even when a loaded machine makes each oplog read slow).
	var wrote atomic.Int64
	var wg sync.WaitGroup
	loadStart := time.Now()
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(loadStart) < 8*time.Second; i++ {
				docs := make([]any, 100)
				for j := range docs {
					docs[j] = bson.D{{Key: "w", Value: w}, {Key: "i", Value: i}, {Key: "j", Value: j}}
				}
				if _, err := m.InsertMany(ctx, docs); err != nil {
					t.Error(err)
					return
				}
				wrote.Add(int64(len(docs)))
			}
		}()
	}
	wg.Wait()
	loadEnd := time.Now()
	// FerretDB appends an oplog entry after the write it records returns:
	// wait until the oplog holds them all, then stop the archiver.
	oplog := cl.Database("local").Collection("oplog.rs")
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		n, err := oplog.CountDocuments(ctx, bson.D{{Key: "ns", Value: srv.DBName + ".load"}})
		if err != nil {
			t.Fatal(err)
		}
		if n >= wrote.Load() {
			break
		}
	}
	close(stop) // sends what is held, and what the cursor has not shown yet
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Not asserted: that every entry was archived. FerretDB appends two
	// writers' entries to its oplog out of ts order now and then, and an
	// entry that shows up behind a newer one the cursor already passed is
	// missed (MongoDB shows oplog entries in ts order); the other archiving
	// tests write from one session.
	t.Logf("archived %d entries of the %d inserts", entries.Load(), wrote.Load())
	// The longest time without a send while the writers ran.
	var longest time.Duration
	prev, n := loadStart, 0
	for _, at := range sent {
		if at.Before(loadStart) || at.After(loadEnd) {
			continue
		}
		if d := at.Sub(prev); d > longest {
			longest = d
		}
		prev, n = at, n+1
	}
	if d := loadEnd.Sub(prev); d > longest {
		longest = d
	}
	t.Logf("%d inserts in %v, %d segments sent meanwhile; longest time without a send %v (flush interval %v)", wrote.Load(), loadEnd.Sub(loadStart).Round(time.Millisecond), n, longest.Round(time.Millisecond), interval)
	// Before the interval was checked on every entry, a cursor that always
	// had a next entry held the whole load in one segment. On FerretDB a
	// tailable cursor is closed with its first batch, and each reopened
	// cursor's query reads the whole oplog collection: no entry arrives
	// while one runs, so the gap between sends is that read, which a busy
	// machine makes long; the bound here is on the count of sends, not on
	// the gap.
	if n < 2 {
		t.Fatalf("under load the archiver sent %d segment(s) in %v (flush interval %v): it holds entries while the cursor has more",
			n, loadEnd.Sub(loadStart).Round(time.Millisecond), interval)
	}
}

package conformance_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/pluginhost"
)

// mongoFreeze drives Freeze/Thaw through the real plugin process. FerretDB
// has no fsync lock: there the test checks the refusal (it names the
// missing lock and the way out) and that nothing is left locked: a write
// goes through at once. Against a real server (AMBER_TEST_MONGODB_URI),
// fsyncLock holds writes until Thaw, and until the lease runs out without
// one.
func mongoFreeze(t *testing.T, bin string) {
	src := startMongo(t)
	host := pluginhost.New(pluginhost.Options{Dirs: []string{bin}})
	defer host.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := host.Engine(ctx, "mongodb")
	if err != nil {
		t.Fatal(err)
	}
	target := api.Target{DSN: api.Secret(src.DSN())}
	coll := mongoDB(t, src.DSN()).Collection("f")
	write := func(id int) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := coll.InsertOne(context.Background(), bson.D{{Key: "_id", Value: id}})
			done <- err
		}()
		return done
	}
	released := func(t *testing.T, w <-chan error, within time.Duration, what string) time.Duration {
		t.Helper()
		start := time.Now()
		select {
		case err := <-w:
			if err != nil {
				t.Fatalf("the write failed after %s: %v", what, err)
			}
		case <-time.After(within):
			t.Fatalf("writes are still blocked %v after %s", within, what)
		}
		return time.Since(start)
	}
	blocked := func(t *testing.T, w <-chan error) {
		t.Helper()
		select {
		case err := <-w:
			t.Fatalf("a write went through while frozen (%v)", err)
		case <-time.After(1500 * time.Millisecond):
		}
	}

	if src.FerretDB {
		_, err := p.Freeze(ctx, api.FreezeRequest{Target: target, Lease: time.Minute, Label: "snapshot"})
		if err == nil {
			t.Fatal("Freeze of FerretDB succeeded; it has no fsync lock")
		}
		if msg := err.Error(); !strings.Contains(msg, "no fsync lock") || !strings.Contains(msg, "amber backup --mode logical") {
			t.Errorf("Freeze of FerretDB: %v; want the missing fsync lock and the way out named", err)
		}
		t.Logf("Freeze of FerretDB: %v", err)
		released(t, write(1), 5*time.Second, "the refused Freeze")
		return
	}

	t.Run("thaw", func(t *testing.T) {
		fr, err := p.Freeze(ctx, api.FreezeRequest{Target: target, Lease: time.Minute, Label: "snapshot"})
		if err != nil {
			t.Fatal(err)
		}
		w := write(1)
		blocked(t, w)
		th, err := p.Thaw(ctx, fr.LeaseID)
		if err != nil {
			t.Fatal(err)
		}
		released(t, w, 10*time.Second, "Thaw")
		if th.Metadata["method"] != "fsyncLock" || th.Consistent.Offset != fr.Position.Offset {
			t.Errorf("thawed %+v, frozen at %s", th, fr.Position)
		}
	})
	t.Run("lease expiry", func(t *testing.T) {
		fr, err := p.Freeze(ctx, api.FreezeRequest{Target: target, Lease: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		w := write(2)
		blocked(t, w)
		d := released(t, w, 15*time.Second, "the lease ran out")
		t.Logf("released %v after the write was found blocked (lease 3 s)", d.Round(100*time.Millisecond))
		if _, err := p.Thaw(ctx, fr.LeaseID); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("Thaw after the lease: %v", err)
		}
	})
}

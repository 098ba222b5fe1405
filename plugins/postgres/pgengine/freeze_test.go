package pgengine

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool { was := !t.stopped; t.stopped = true; return was }

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

func TestFreezeThaw(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	dsn := DSN(pg.ReplicationDSN())
	active := func(pid uint32) bool {
		return pg.Psql(t, "postgres", fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid)) == "1"
	}

	f, err := Freeze(ctx, dsn, FreezeOptions{Lease: time.Minute, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if !active(f.PID()) || f.StartLSN == 0 || f.Timeline != 1 {
		t.Fatalf("freeze %+v", f)
	}
	pg.Psql(t, "postgres", "CREATE TABLE during AS SELECT 1 AS x")
	clock.Advance(59 * time.Second) // within the lease
	res, err := f.Thaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(res.BackupLabel, "LABEL: amber") || !contains(res.BackupLabel, "START WAL LOCATION: "+f.StartLSN.String()) ||
		res.StopLSN < res.StartLSN || res.TablespaceMap != "" {
		t.Fatalf("thaw %+v", res)
	}
	if _, err := f.Thaw(ctx); err == nil {
		t.Fatal("second Thaw succeeded")
	}

	// A caller that disappears: the lease ends the backup by itself.
	f2, err := Freeze(ctx, dsn, FreezeOptions{Lease: time.Minute, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	pid := f2.PID()
	clock.Advance(61 * time.Second)
	waitFor(t, 10*time.Second, "freeze session to close", func() bool { return !active(pid) })
	if _, err := f2.Thaw(ctx); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("Thaw after lease: %v", err)
	}
	waitFor(t, 10*time.Second, "server to log the aborted backup", func() bool {
		b, _ := os.ReadFile(pg.LogFile)
		return contains(string(b), "aborting backup due to backend exiting before pg_backup_stop was called")
	})
}

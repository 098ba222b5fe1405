package pgengine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/jackc/pgx/v5"
)

func startArchiver(t *testing.T, ctx context.Context, dsn string, opts ArchiverOptions) (*Archiver, <-chan error) {
	a := NewArchiver(DSN(dsn), opts)
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	t.Cleanup(func() { a.Stop(context.Background()) })
	return a, errc
}

// writeLoad inserts ~0.5 MB of WAL per statement, a statement every pause,
// until stop is closed.
func writeLoad(t *testing.T, ctx context.Context, dsn string, pause time.Duration, stop <-chan struct{}) <-chan int {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS load (id bigint, pad text)"); err != nil {
		t.Fatal(err)
	}
	n := make(chan int, 1)
	go func() {
		defer conn.Close(context.Background())
		i := 0
		for {
			select {
			case <-stop:
				n <- i
				return
			default:
			}
			time.Sleep(pause)
			if _, err := conn.Exec(ctx, "INSERT INTO load SELECT g, repeat('x', 400) FROM generate_series(1, 1000) g"); err != nil {
				t.Error(err)
				n <- i
				return
			}
			i++
		}
	}()
	return n
}

func TestArchiverUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	arch := newWALArchive(t)
	const slotQ = "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'amber_test'"
	a, errc := startArchiver(t, ctx, pg.ReplicationDSN(), ArchiverOptions{Slot: "amber_test", OnSegment: arch.onSegment,
		StatusInterval: 200 * time.Millisecond})
	waitFor(t, 20*time.Second, "archiver streaming", func() bool {
		return pg.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'amber_test' AND active") == "1"
	})
	initial := lsnOf(t, pg, slotQ)

	stop := make(chan struct{})
	loadStart := time.Now()
	// About 8 MB/s: a segment fills every two seconds, so partials show.
	done := writeLoad(t, ctx, pg.DSN(), 50*time.Millisecond, stop)
	var maxSlot atomic.Uint64
	for time.Since(loadStart) < 4500*time.Millisecond {
		// Nothing is durable yet: the slot must not move.
		if l := lsnOf(t, pg, slotQ); uint64(l) > maxSlot.Load() {
			maxSlot.Store(uint64(l))
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	statements := <-done
	loadEnd := time.Now()
	if LSN(maxSlot.Load()) != initial {
		t.Fatalf("slot moved from %s to %s without Durable", initial, LSN(maxSlot.Load()))
	}
	target := lsnOf(t, pg, "SELECT pg_current_wal_flush_lsn()")
	waitFor(t, 20*time.Second, "archiver to receive all WAL", func() bool {
		r, _, _ := a.Positions()
		return r >= target
	})

	// Confirm durability up to the end of the first complete segment: the
	// slot follows exactly there, and no further.
	var firstComplete *emission
	for _, e := range arch.emissions() {
		if !e.Partial && !e.History {
			firstComplete = &e
			break
		}
	}
	if firstComplete == nil {
		t.Fatalf("no complete segment after %d statements: %+v", statements, arch.emissions())
	}
	a.Durable(firstComplete.EndLSN)
	waitFor(t, 10*time.Second, "slot to advance", func() bool { return lsnOf(t, pg, slotQ) == firstComplete.EndLSN })
	time.Sleep(500 * time.Millisecond)
	if l := lsnOf(t, pg, slotQ); l != firstComplete.EndLSN {
		t.Fatalf("slot at %s, confirmed only %s", l, firstComplete.EndLSN)
	}

	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Stop")
	}

	// Coverage: complete segments are contiguous, then the partial pieces
	// of the segment after them continue one another up to the flush
	// position we waited for. Each piece holds only the bytes since the
	// previous one.
	ems := arch.emissions()
	var next, pieceEnd LSN
	var lastPartial *emission
	var prevAt time.Time
	for i, e := range ems {
		if e.History {
			continue
		}
		if e.Partial {
			if e.StartLSN != SegmentStart(e.StartLSN, DefaultWALSegmentSize) && e.StartLSN != pieceEnd {
				t.Fatalf("piece %s-%s of %s does not continue the previous piece (ended %s)", e.StartLSN, e.EndLSN, e.Name, pieceEnd)
			}
			if lastPartial == nil || lastPartial.Name != e.Name || e.StartLSN == SegmentStart(e.StartLSN, DefaultWALSegmentSize) {
				lastPartial = &ems[i]
			}
			pieceEnd = e.EndLSN
		} else if next != 0 && e.StartLSN != next {
			t.Fatalf("gap: segment %s starts at %s, expected %s", e.Name, e.StartLSN, next)
		}
		if e.Name != WALFileName(1, SegmentStart(e.StartLSN, DefaultWALSegmentSize), DefaultWALSegmentSize) ||
			!e.Partial && e.StartLSN != SegmentStart(e.StartLSN, DefaultWALSegmentSize) {
			t.Fatalf("bad segment %+v", e.Segment)
		}
		if !e.Partial {
			next = e.EndLSN
			if e.EndLSN-e.StartLSN != DefaultWALSegmentSize {
				t.Fatalf("complete segment of %d bytes", e.EndLSN-e.StartLSN)
			}
		}
		// Under load something is emitted at least about every second.
		if !prevAt.IsZero() && e.at.After(loadStart) && e.at.Before(loadEnd) && e.at.Sub(prevAt) > 1600*time.Millisecond {
			t.Errorf("%v between emissions under load", e.at.Sub(prevAt))
		}
		prevAt = e.at
	}
	if ems[0].StartLSN > initial {
		t.Fatalf("archive starts at %s, after the slot's %s", ems[0].StartLSN, initial)
	}
	// lastPartial is the first piece of the newest partial segment.
	if lastPartial == nil || lastPartial.StartLSN != next || pieceEnd < target {
		t.Fatalf("the last partial pieces %+v..%s do not continue at %s up to %s", lastPartial, pieceEnd, next, target)
	}
	partials := 0
	for _, e := range ems {
		if e.Partial && e.at.Before(loadEnd) {
			partials++
		}
	}
	if partials < 2 {
		t.Errorf("only %d partial emissions during %v of load", partials, loadEnd.Sub(loadStart))
	}
	// The archived bytes are PostgreSQL's own segment.
	got, err := os.ReadFile(filepath.Join(arch.dir, firstComplete.Name))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", firstComplete.Name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("archived %s differs from pg_wal's copy", firstComplete.Name)
	}
	// The pieces put together are the segment's beginning in pg_wal.
	got, err = os.ReadFile(filepath.Join(arch.dir, lastPartial.Name+".partial"))
	if err != nil {
		t.Fatal(err)
	}
	want, err = os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", lastPartial.Name))
	if err != nil {
		t.Fatal(err)
	}
	if n := int(pieceEnd - lastPartial.StartLSN); len(got) != n || !bytes.Equal(got, want[:n]) {
		t.Fatalf("the pieces of %s (%d bytes, want %d) differ from pg_wal's copy", lastPartial.Name, len(got), n)
	}
	t.Logf("%d statements, %d emissions, WAL %s..%s", statements, len(ems), ems[0].StartLSN, target)
}

func TestArchiverGap(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", "SELECT pg_create_physical_replication_slot('gappy', true)")
	early := lsnOf(t, pg, "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name='gappy'")
	for i := 0; i < 3; i++ {
		pg.Psql(t, "postgres", "CREATE TABLE IF NOT EXISTS x(i int); INSERT INTO x VALUES (1); SELECT pg_switch_wal()")
	}
	pg.Psql(t, "postgres", "SELECT pg_replication_slot_advance('gappy', pg_current_wal_lsn()); CHECKPOINT")
	a := NewArchiver(DSN(pg.ReplicationDSN()), ArchiverOptions{Slot: "gappy", From: early})
	err := a.Run(ctx)
	wantErr(t, err, ErrWALGap, "WAL gap", "take a new base backup")
}

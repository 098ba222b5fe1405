package myengine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestDumpArchiveReplay: a dump taken while rows are inserted, restored on
// another server and brought forward with the archived binlog, holds
// exactly the rows committed up to the target position, or all of them.
func TestDumpArchiveReplay(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var segs []Segment
	done := make(chan error, 1)
	go func() {
		done <- Archive(ctx, DSN(srv.DSN()), ArchiveOptions{FlushInterval: 100 * time.Millisecond, MaxSegment: 2048}, func(_ context.Context, s Segment) error {
			mu.Lock()
			segs = append(segs, s)
			mu.Unlock()
			return nil
		})
	}()
	srv.SQL(t, "CREATE TABLE app.m (id int PRIMARY KEY)")
	insert := func(from, to int) {
		for i := from; i <= to; i++ {
			srv.SQL(t, fmt.Sprintf("INSERT INTO app.m VALUES (%d)", i))
			if i%15 == 0 {
				srv.SQL(t, "FLUSH BINARY LOGS")
			}
		}
	}
	insert(1, 20)
	dump := &memSink{}
	res, err := LogicalDump(context.Background(), DSN(srv.DSN()), dump, DumpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	insert(21, 40)
	var target Pos
	if out := strings.Fields(srv.SQL(t, "SHOW MASTER STATUS")); len(out) >= 2 {
		target, _ = ParseText(out[0] + ":" + out[1])
	}
	insert(41, 60)
	endOut := strings.Fields(srv.SQL(t, "SHOW MASTER STATUS"))
	end, _ := ParseText(endOut[0] + ":" + endOut[1])
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		ok := len(segs) > 0 && segs[len(segs)-1].End.Offset() >= end.Offset()
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the archive did not reach the end of the binlog in 20 s")
		}
	}
	cancel()
	<-done
	fetch := func(_ context.Context, after Pos) (Pos, Pos, io.ReadCloser, error) {
		for _, s := range segs {
			if s.End.Offset() > after.Offset() {
				return s.Start, s.End, io.NopCloser(bytes.NewReader(s.Data)), nil
			}
		}
		return Pos{}, Pos{}, nil, ErrNoMoreLog
	}
	for _, c := range []struct {
		name string
		stop Pos
		want string
	}{{"position", target, "40\t820"}, {"latest", Pos{}, "60\t1830"}} {
		t.Run(c.name, func(t *testing.T) {
			dst := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
			l, err := NewLoader(context.Background(), DSN(dst.DSN()), RestoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for k, b := range dump.data {
				if err := l.Load(dump.names[k], bytes.NewReader(b.Bytes())); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if got := dst.SQL(t, "SELECT COUNT(*), SUM(id) FROM app.m"); got != "20\t210" {
				t.Fatalf("the dump holds %q, want 20 rows summing to 210", got)
			}
			r, err := Replay(context.Background(), DSN(dst.DSN()), ReplayOptions{From: res.Pos, StopPos: c.stop, Database: "app"}, fetch)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("replayed %d segments from %s to %s", r.Segments, res.Pos.Text(), r.Pos.Text())
			if got := dst.SQL(t, "SELECT COUNT(*), SUM(id) FROM app.m"); got != c.want {
				t.Errorf("after replay to %s: %q, want %q", c.name, got, c.want)
			}
		})
	}
	if _, err := Replay(context.Background(), DSN(srv.DSNDB("other")), ReplayOptions{From: res.Pos, Database: "app"}, fetch); err == nil || !strings.Contains(err.Error(), `"app"`) {
		t.Errorf("replay into a database of another name: %v", err)
	}
}

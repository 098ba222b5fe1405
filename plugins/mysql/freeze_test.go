package mysql

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/mysql/myengine"
)

// archivedEnd archives srv from start (the zero position: from the
// beginning) until the archive reaches the server's current binlog
// position, and returns the archive's end as the host passes it
// (BackupRequest.Archived, FreezeRequest.Archived).
func archivedEnd(t *testing.T, srv *testbed.MariaDB, start api.Position) api.Position {
	t.Helper()
	var o myengine.ArchiveOptions
	if !start.IsZero() {
		var err error
		if o.Start, o.StartBranch, err = myengine.ParseEndToken(start.Epoch, start.Token); err != nil {
			t.Fatal(err)
		}
	}
	o.FlushInterval = 100 * time.Millisecond
	f := strings.Fields(srv.SQL(t, "SHOW MASTER STATUS"))
	want, err := myengine.ParseText(f[0] + ":" + f[1])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ends := make(chan myengine.Segment, 1000)
	done := make(chan error, 1)
	go func() {
		done <- myengine.Archive(ctx, myengine.DSN(srv.DSN()), o,
			func(_ context.Context, s myengine.Segment) error { ends <- s; return nil })
	}()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s := <-ends:
			if s.End.File == want.File && s.End.Pos >= want.Pos {
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Fatalf("Archive returned %v after cancel", err)
				}
				p := Position(s.End)
				p.Token = s.End.EndToken(s.Branch)
				return p
			}
		case err := <-done:
			t.Fatalf("Archive ended: %v", err)
		case <-timeout:
			t.Fatalf("the archive did not reach %s in 30 s", want.Text())
		}
	}
}

// TestFreezeEpoch: a freeze's position carries the epoch of the archive
// it belongs to, as a backup's does: 1 without an archive and while the
// archived binlog goes on; after RESET MASTER the archive goes on in epoch
// 2 (myengine.Archive), and a freeze then reports epoch 2, at Freeze and
// again at Thaw.
func TestFreezeEpoch(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	srv.SQL(t, "CREATE TABLE app.t (id int PRIMARY KEY); INSERT INTO app.t VALUES (1)")
	e, ctx := New(), context.Background()
	target := api.Target{DSN: api.Secret(srv.DSN())}
	freeze := func(lease string, archived api.Position) (api.Frozen, api.Thawed) {
		t.Helper()
		fr, err := e.Freeze(ctx, api.FreezeRequest{Target: target, LeaseID: lease, Archived: archived})
		if err != nil {
			t.Fatal(err)
		}
		th, err := e.Thaw(ctx, lease)
		if err != nil {
			t.Fatal(err)
		}
		return fr, th
	}
	if fr, _ := freeze("none", api.Position{}); fr.Position.Epoch != 1 {
		t.Errorf("freeze without an archive: epoch %d, want 1", fr.Position.Epoch)
	}
	end1 := archivedEnd(t, srv, api.Position{})
	if end1.Epoch != 1 {
		t.Fatalf("the first archive's end is in epoch %d, want 1", end1.Epoch)
	}
	srv.SQL(t, "INSERT INTO app.t VALUES (2)")
	if fr, th := freeze("same", end1); fr.Position.Epoch != 1 || th.Consistent.Epoch != 1 {
		t.Errorf("freeze on the archived binlog: epochs %d at Freeze, %d at Thaw; want 1", fr.Position.Epoch, th.Consistent.Epoch)
	}

	srv.SQL(t, "RESET MASTER")
	srv.SQL(t, "INSERT INTO app.t VALUES (3)")
	fr, th := freeze("reset", end1)
	if fr.Position.Epoch != 2 || th.Consistent.Epoch != 2 {
		t.Fatalf("freeze after RESET MASTER: epochs %d at Freeze, %d at Thaw; want 2", fr.Position.Epoch, th.Consistent.Epoch)
	}
	if !strings.HasPrefix(fr.Position.Text, "2@mysql-bin.000001:") || string(fr.Position.Token) != string(th.Consistent.Token) {
		t.Errorf("freeze after RESET MASTER at %s (token %q), thaw at token %q; want the same position in mysql-bin.000001",
			fr.Position.Text, fr.Position.Token, th.Consistent.Token)
	}
	// The archive itself goes on in the epoch the freeze named.
	end2 := archivedEnd(t, srv, end1)
	if end2.Epoch != fr.Position.Epoch {
		t.Errorf("the archive went on in epoch %d, the freeze named %d", end2.Epoch, fr.Position.Epoch)
	}
}

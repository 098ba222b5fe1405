package myengine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/api/clock"
)

// blockedWrite starts an INSERT in a session of its own and returns a
// channel that yields its error once it commits.
func blockedWrite(m *testbed.MariaDB, id int) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := m.SQLErr(fmt.Sprintf("INSERT INTO app.f VALUES (%d)", id))
		done <- err
	}()
	return done
}

// assertBlocked checks the write has not committed after d.
func assertBlocked(t *testing.T, w <-chan error, d time.Duration) {
	t.Helper()
	select {
	case err := <-w:
		t.Fatalf("a write committed while frozen (err %v)", err)
	case <-time.After(d):
	}
}

func assertReleased(t *testing.T, w <-chan error, what string) {
	t.Helper()
	select {
	case err := <-w:
		if err != nil {
			t.Fatalf("the write blocked by the freeze failed after %s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the write is still blocked 10 s after %s", what)
	}
}

// TestFreezeThaw: BACKUP STAGE BLOCK_COMMIT held by the freeze's session
// blocks commits and DDL; Thaw releases them. The position is the binlog's
// while frozen. A lease nobody ends, and a lost session, release the lock
// by themselves, and Thaw then says the snapshot must be discarded.
func TestFreezeThaw(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	srv.SQL(t, "CREATE TABLE app.f (id int PRIMARY KEY); INSERT INTO app.f VALUES (0)")
	ctx := context.Background()
	fake := clock.NewFake(time.Unix(1e9, 0))

	f, err := Freeze(ctx, DSN(srv.DSN()), FreezeOptions{Lease: time.Minute, Clock: fake})
	if err != nil {
		t.Fatal(err)
	}
	if f.Method != FreezeBackupStage || f.ConnID == 0 || time.Since(f.Time) > time.Minute || f.Time.After(time.Now().Add(time.Second)) {
		t.Fatalf("frozen %+v", f)
	}
	if now := masterPos(t, srv); now.Offset() != f.Pos.Offset() || f.Pos.GTID == "" {
		t.Errorf("frozen at %s, the binlog is at %s", f.Pos.Text(), now.Text())
	}
	w := blockedWrite(srv, 1)
	ddl := make(chan error, 1)
	go func() { _, err := srv.SQLErr("CREATE TABLE app.g (id int)"); ddl <- err }()
	assertBlocked(t, w, 1500*time.Millisecond)
	if list := srv.SQL(t, "SELECT STATE FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO app.f%'"); !strings.Contains(list, "backup lock") {
		t.Errorf("the blocked INSERT waits for %q, not the backup lock", list)
	}
	fake.Advance(59 * time.Second) // within the lease
	if err := f.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	assertReleased(t, w, "Thaw")
	assertReleased(t, ddl, "Thaw")
	if err := f.Thaw(ctx); err == nil {
		t.Error("a second Thaw succeeded")
	}
	if got := srv.SQL(t, fmt.Sprintf("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %d", f.ConnID)); got != "0" {
		t.Error("the freeze's session outlives Thaw")
	}

	t.Run("lease expiry", func(t *testing.T) {
		f, err := Freeze(ctx, DSN(srv.DSN()), FreezeOptions{Lease: time.Minute, Clock: fake})
		if err != nil {
			t.Fatal(err)
		}
		w := blockedWrite(srv, 2)
		assertBlocked(t, w, time.Second)
		fake.Advance(61 * time.Second)
		assertReleased(t, w, "the lease expired")
		if err := f.Thaw(ctx); !errors.Is(err, ErrLeaseExpired) {
			t.Fatalf("Thaw after the lease: %v", err)
		}
	})
	t.Run("session lost", func(t *testing.T) {
		f, err := Freeze(ctx, DSN(srv.DSN()), FreezeOptions{Lease: time.Minute, Clock: fake})
		if err != nil {
			t.Fatal(err)
		}
		w := blockedWrite(srv, 3)
		assertBlocked(t, w, time.Second)
		srv.SQL(t, fmt.Sprintf("KILL %d", f.ConnID))
		assertReleased(t, w, "the session was killed")
		if err := f.Thaw(ctx); err == nil || !strings.Contains(err.Error(), "discarded") {
			t.Fatalf("Thaw after the session was lost: %v", err)
		}
	})
	t.Run("lock wait", func(t *testing.T) {
		// A long-running DDL-blocking statement makes the freeze give up
		// within lock_wait_timeout, naming what it waited for.
		srv.SQL(t, "CREATE TABLE app.slow (id int)")
		lock := make(chan error, 1)
		go func() { _, err := srv.SQLErr("LOCK TABLES app.slow WRITE; SELECT SLEEP(4)"); lock <- err }()
		time.Sleep(300 * time.Millisecond)
		_, err := Freeze(ctx, DSN(srv.DSN()), FreezeOptions{LockWait: time.Second})
		if err == nil || !strings.Contains(err.Error(), "Lock wait timeout") || !strings.Contains(err.Error(), "lock_wait_seconds") {
			t.Errorf("freeze behind a table lock: %v", err)
		}
		t.Log(err)
		<-lock
	})
}

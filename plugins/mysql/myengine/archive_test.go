package myengine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

func TestArchiveSegments(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var segs []Segment
	done := make(chan error, 1)
	go func() {
		done <- Archive(ctx, DSN(srv.DSN()), ArchiveOptions{FlushInterval: 200 * time.Millisecond}, func(_ context.Context, s Segment) error {
			mu.Lock()
			segs = append(segs, s)
			mu.Unlock()
			return nil
		})
	}()
	srv.SQL(t, "CREATE TABLE app.t (id int PRIMARY KEY, v text)")
	for i := range 20 {
		srv.SQL(t, fmt.Sprintf("INSERT INTO app.t VALUES (%d, 'row %d')", i, i))
		if i == 9 {
			srv.SQL(t, "FLUSH BINARY LOGS")
		}
	}
	want := srv.SQL(t, "SHOW MASTER STATUS")
	fields := strings.Fields(want)
	wantEnd, err := ParseText(fields[0] + ":" + fields[1])
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(segs)
		reached := n > 0 && segs[n-1].End.Offset() >= wantEnd.Offset()
		mu.Unlock()
		if reached {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("archived %d segments in 20 s, none reaching %s", n, wantEnd.Text())
		}
		select {
		case err := <-done:
			t.Fatalf("Archive ended: %v", err)
		default:
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Archive returned %v after cancel, want context.Canceled", err)
	}
	dir := t.TempDir()
	var files []string
	rotated := false
	for k, s := range segs {
		t.Logf("%s: %s (%#x) - %s (%#x), %d bytes, commits %v..%v", s.Name, s.Start.Text(), s.Start.Offset(), s.End.Text(), s.End.Offset(), len(s.Data), s.FirstCommit, s.LastCommit)
		if k == 0 && s.Start.Offset() != 1<<32|4 {
			t.Errorf("first segment starts at %s, want mysql-bin.000001:4", s.Start.Text())
		}
		if k > 0 && s.Start.Offset() != segs[k-1].End.Offset() {
			t.Errorf("segment %s starts at %#x, the previous ended at %#x: not contiguous", s.Name, s.Start.Offset(), segs[k-1].End.Offset())
		}
		if s.Start.File == "mysql-bin.000001" && s.End.File == "mysql-bin.000002" {
			rotated = true
			if s.End.Offset() != 2<<32|4 {
				t.Errorf("the segment ending file 1 ends at %s, want mysql-bin.000002:4", s.End.Text())
			}
		}
		f := filepath.Join(dir, fmt.Sprintf("seg%03d", k))
		if err := os.WriteFile(f, s.Data, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		// Each segment is a binlog file of its own.
		if out, err := exec.Command("mariadb-binlog", "--no-defaults", f).CombinedOutput(); err != nil {
			t.Fatalf("mariadb-binlog %s: %v\n%s", s.Name, err, out)
		}
	}
	if !rotated {
		t.Error("no segment ends binlog file 1 at the rotation")
	}
	// All segments applied in order to another server give the same rows.
	dst := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	bl := exec.Command("mariadb-binlog", append([]string{"--no-defaults"}, files...)...)
	cl := exec.Command(dst.Client, "--no-defaults", "--socket="+dst.Socket, "-uroot")
	pipe, _ := bl.StdoutPipe()
	cl.Stdin = pipe
	if err := bl.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := cl.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-binlog segments | mariadb: %v\n%s", err, out)
	}
	bl.Wait()
	if got := dst.SQL(t, "SELECT COUNT(*), SUM(id) FROM app.t"); got != "20\t190" {
		t.Errorf("replayed segments hold %q, want 20 rows summing to 190", got)
	}
}

func TestArchiveLostLog(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	for range 3 {
		srv.SQL(t, "CREATE TABLE IF NOT EXISTS app.lost (x int); INSERT INTO app.lost VALUES (1); FLUSH BINARY LOGS")
	}
	// The server keeps a binlog until its transactions are checkpointed.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		srv.SQL(t, "PURGE BINARY LOGS TO 'mysql-bin.000003'")
		if first := srv.SQL(t, "SHOW BINARY LOGS"); !strings.HasPrefix(first, "mysql-bin.000001") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mysql-bin.000001 not purged after 20 s")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Archive(ctx, DSN(srv.DSN()), ArchiveOptions{Start: Pos{Epoch: 1, File: "mysql-bin.000001", Pos: 4}}, func(context.Context, Segment) error { return nil })
	if !errors.Is(err, ErrLogLost) || !strings.Contains(err.Error(), "lost") || !strings.Contains(err.Error(), "new base backup") {
		t.Fatalf("Archive from a purged binlog: %v", err)
	}
}

func TestSyncerAddr(t *testing.T) {
	for _, c := range []struct {
		net, addr, host string
		port            int
	}{
		{"tcp", "127.0.0.1:3307", "127.0.0.1", 3307},
		{"tcp", "db.example", "db.example", 3306},
		{"unix", "/run/mysqld/mysqld.sock", "/run/mysqld/mysqld.sock", 0},
	} {
		if h, p := syncerAddr(c.net, c.addr); h != c.host || p != c.port {
			t.Errorf("%s %s: got %s %d, want %s %d", c.net, c.addr, h, p, c.host, c.port)
		}
	}
}

package myengine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// archiveAll archives srv from start until the archive reaches the
// server's current binlog position, and returns the segments.
func archiveAll(t *testing.T, srv *testbed.MariaDB, start, branch Pos) []Segment {
	t.Helper()
	f := strings.Fields(srv.SQL(t, "SHOW MASTER STATUS"))
	want, err := ParseText(f[0] + ":" + f[1])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var segs []Segment
	done := make(chan error, 1)
	go func() {
		done <- Archive(ctx, DSN(srv.DSN()), ArchiveOptions{Start: start, StartBranch: branch, FlushInterval: 200 * time.Millisecond},
			func(_ context.Context, s Segment) error {
				mu.Lock()
				segs = append(segs, s)
				mu.Unlock()
				return nil
			})
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := len(segs)
		reached := n > 0 && segs[n-1].End.File == want.File && segs[n-1].End.Pos >= want.Pos
		mu.Unlock()
		if reached {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Archive ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("archived %d segments in 30 s, none reaching %s", n, want.Text())
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Archive returned %v after cancel", err)
	}
	for k := 1; k < len(segs); k++ {
		if segs[k].Start != segs[k-1].End {
			t.Errorf("segment %d starts at %+v, the previous ended at %+v", k, segs[k].Start, segs[k-1].End)
		}
	}
	return segs
}

// gtidSeqs lists the sequence numbers of the MariaDB GTID events in segments.
func gtidSeqs(segs []Segment) []uint64 {
	var seqs []uint64
	for _, s := range segs {
		for off := 4; off+evHeader <= len(s.Data); {
			size := int(binary.LittleEndian.Uint32(s.Data[off+9:]))
			if s.Data[off+4] == evGTID {
				seqs = append(seqs, binary.LittleEndian.Uint64(s.Data[off+evHeader:]))
			}
			off += size
		}
	}
	return seqs
}

// TestArchiveEpochs: archiving a primary, then its promoted replica from
// the archived end, goes on in epoch 2 at the transaction after the
// archived GTID set, branching at the archived end; a RESET MASTER on the
// promoted server then starts epoch 3 at its first binlog.
func TestArchiveEpochs(t *testing.T) {
	p := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	r := testbed.StartMariaDBReplica(t, p)
	p.SQL(t, "CREATE TABLE app.t (id int PRIMARY KEY)")
	for i := 1; i <= 5; i++ {
		p.SQL(t, fmt.Sprintf("INSERT INTO app.t VALUES (%d)", i))
	}
	segs1 := archiveAll(t, p, Pos{}, Pos{})
	end1 := segs1[len(segs1)-1].End
	if end1.Epoch != 1 || end1.Server != fmt.Sprint(p.ServerID) || end1.GTID != p.SQL(t, "SELECT @@gtid_binlog_pos") {
		t.Fatalf("epoch 1 ends at %+v; want epoch 1, server %d, GTID %s", end1, p.ServerID, p.SQL(t, "SELECT @@gtid_binlog_pos"))
	}
	// Committed on the primary after the archive's end, replicated, then the failover.
	for i := 6; i <= 8; i++ {
		p.SQL(t, fmt.Sprintf("INSERT INTO app.t VALUES (%d)", i))
	}
	r.WaitCaughtUp(t, p)
	p.Stop()
	r.Promote(t)
	for i := 9; i <= 10; i++ {
		r.SQL(t, fmt.Sprintf("INSERT INTO app.t VALUES (%d)", i))
	}
	info, err := Probe(context.Background(), DSN(r.DSN()), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("mariadb-0-%d", p.ServerID); info.Lineage != want {
		t.Errorf("the promoted replica's lineage is %s, want its former primary's %s", info.Lineage, want)
	}
	segs2 := archiveAll(t, r, end1, Pos{})
	first := segs2[0]
	if first.Start.Epoch != 2 || first.Branch != end1 || first.Start.Server != fmt.Sprint(r.ServerID) {
		t.Fatalf("first segment on the promoted replica: start %+v branch %+v; want epoch 2 on server %d branching at %+v", first.Start, first.Branch, r.ServerID, end1)
	}
	last1 := gtidSeqs(segs1)
	seqs := gtidSeqs(segs2)
	if len(seqs) != 5 || seqs[0] != last1[len(last1)-1]+1 {
		t.Fatalf("epoch 2 holds transactions %v; want the 5 after %d (3 replicated, 2 written after the promotion)", seqs, last1[len(last1)-1])
	}
	end2 := segs2[len(segs2)-1].End
	if end2.Epoch != 2 || end2.GTID != r.SQL(t, "SELECT @@gtid_binlog_pos") {
		t.Errorf("epoch 2 ends at %+v, want GTID %s", end2, r.SQL(t, "SELECT @@gtid_binlog_pos"))
	}

	// RESET MASTER: the binlog restarts on the same server.
	r.SQL(t, "RESET MASTER")
	r.SQL(t, "INSERT INTO app.t VALUES (11)")
	segs3 := archiveAll(t, r, end2, end1)
	if s := segs3[0]; s.Start.Epoch != 3 || s.Branch != end2 || s.Start.File != "mysql-bin.000001" || s.Start.Pos != 4 {
		t.Fatalf("after RESET MASTER: start %+v branch %+v; want epoch 3 from mysql-bin.000001:4 branching at %+v", s.Start, s.Branch, end2)
	}
	// A resumed epoch keeps its branch.
	r.SQL(t, "INSERT INTO app.t VALUES (12)")
	end3 := segs3[len(segs3)-1].End
	segs4 := archiveAll(t, r, end3, end2)
	if s := segs4[0]; s.Start != end3 || s.Branch != end2 {
		t.Errorf("resumed epoch 3: start %+v branch %+v; want %+v branching at %+v", s.Start, s.Branch, end3, end2)
	}
}

// TestArchiveRefusesMissingGTIDs: a promoted replica that had stopped
// replicating before the archived end lacks archived transactions: the
// archiver refuses it, naming them, and sends nothing.
func TestArchiveRefusesMissingGTIDs(t *testing.T) {
	p := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	r := testbed.StartMariaDBReplica(t, p)
	p.SQL(t, "CREATE TABLE app.t (id int PRIMARY KEY)")
	r.WaitCaughtUp(t, p)
	applied := r.SQL(t, "SELECT @@gtid_slave_pos")
	r.SQL(t, "STOP SLAVE")
	for i := 1; i <= 3; i++ {
		p.SQL(t, fmt.Sprintf("INSERT INTO app.t VALUES (%d)", i))
	}
	segs := archiveAll(t, p, Pos{}, Pos{})
	end := segs[len(segs)-1].End
	p.Stop()
	r.Promote(t)
	sent := 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Archive(ctx, DSN(r.DSN()), ArchiveOptions{Start: end}, func(context.Context, Segment) error { sent++; return nil })
	if err == nil || !strings.Contains(err.Error(), "has not applied every archived transaction") ||
		!strings.Contains(err.Error(), "after "+applied+" up to "+end.GTID) || !strings.Contains(err.Error(), "lineage") {
		t.Fatalf("Archive on a promoted replica without the archived end (%s; it applied %s): %v", end.GTID, applied, err)
	}
	if sent != 0 {
		t.Errorf("the refused archiver sent %d segments", sent)
	}
	t.Log(err)
}

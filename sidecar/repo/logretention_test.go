package repo

import (
	"bytes"
	"context"
	"sort"
	"strconv"
	"testing"
	"time"
)

// engineBackup commits a small engine backup named "db" (holding name)
// of one PostgreSQL lineage that needs log from (epoch, start).
func engineBackup(t *testing.T, r *Repository, name string, epoch uint32, start uint64) *Manifest {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e, err := w.WriteStream(ctx, "data", bytes.NewReader([]byte(name)))
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Name: "db", Engine: "postgres", Mode: "physical", Start: time.Now(), Entries: []Entry{e},
		Record: &EngineRecord{SystemID: "42", Start: LogPosition{Epoch: epoch, Offset: start}, Consistent: LogPosition{Epoch: epoch, Offset: start + 0x10}}}
	if _, err := w.Commit(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func putLog(t *testing.T, r *Repository, s Segment) {
	t.Helper()
	s.Stream = StreamName("postgres", "42")
	if err := r.PutSegment(context.Background(), s, bytes.Repeat([]byte{1}, int(s.End-s.Start)%512+1)); err != nil {
		t.Fatal(err)
	}
}

func branchMeta(epoch uint32, off uint64) map[string]string {
	return map[string]string{MetaBranchEpoch: strconv.FormatUint(uint64(epoch), 10), MetaBranchOffset: strconv.FormatUint(off, 10)}
}

// TestPruneLog: prune removes the log segments that lie wholly before
// every kept backup's start, and superseded partial objects; it keeps a
// stream's log while a backup runs, log no backup names, history files,
// and the parent epoch's segment holding the branch point.
func TestPruneLog(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	const M = 0x1000
	// Epoch 1: segments 0..5 (a piece left by a restarted archiver inside
	// segment 1), branch to epoch 2 at 4*M+0x80; epoch 2 has its history
	// file and segments 4..7.
	for i := uint64(0); i < 6; i++ {
		putLog(t, tr.Repository, Segment{Epoch: 1, Start: i * M, End: (i + 1) * M})
	}
	putLog(t, tr.Repository, Segment{Epoch: 1, Start: M, End: M + 0x100, Partial: true})
	putLog(t, tr.Repository, Segment{Epoch: 1, Start: 5 * M, End: 5*M + 0x80, Partial: true}) // covered by 5M..6M
	putLog(t, tr.Repository, Segment{Epoch: 2, Start: 0, End: 0, Meta: branchMeta(1, 4*M+0x80)})
	for i := uint64(4); i < 8; i++ {
		putLog(t, tr.Repository, Segment{Epoch: 2, Start: i * M, End: (i + 1) * M, Meta: branchMeta(1, 4*M+0x80)})
	}
	putLog(t, tr.Repository, Segment{Epoch: 2, Start: 8 * M, End: 8*M + 0x40, Partial: true}) // the open segment
	// Another lineage with no backup: kept whole.
	other := Segment{Stream: "mysql-7", Epoch: 1, Start: 0, End: M}
	if err := tr.PutSegment(ctx, other, []byte("x")); err != nil {
		t.Fatal(err)
	}

	engineBackup(t, tr.Repository, "old", 1, 2*M+0x20)
	engineBackup(t, tr.Repository, "new", 2, 6*M+0x20)
	logNames := func() []string {
		var out []string
		for _, n := range tr.names(t, logDir) {
			s, ok := parseSegmentName(n)
			if !ok {
				t.Fatalf("bad name %s", n)
			}
			if s.Stream != StreamName("postgres", "42") {
				out = append(out, s.Stream)
				continue
			}
			n := strconv.Itoa(int(s.Epoch)) + ":" + strconv.FormatUint(s.Start/M, 10)
			if s.Partial {
				n += "p"
			}
			out = append(out, n)
		}
		sort.Strings(out)
		return out
	}
	before := logNames()

	// With both backups kept: epoch 1 up to 2M goes (segments 0 and 1 and
	// the piece inside 1 end before the old backup's start), and so does
	// the piece inside segment 5, which the complete segment covers.
	res, err := tr.Prune(ctx, PrunePolicy{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"1:2", "1:3", "1:4", "1:5", "2:0", "2:4", "2:5", "2:6", "2:7", "2:8p", "mysql-7"}
	if got := logNames(); !equal(got, want) || res.LogSegmentsRemoved != len(before)-len(want) || res.LogBytesFreed <= 0 {
		t.Fatalf("after prune keeping both backups: %q (removed %d, %d bytes), want %q", got, res.LogSegmentsRemoved, res.LogBytesFreed, want)
	}

	// A running backup holds all log.
	w, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err = tr.Prune(ctx, PrunePolicy{KeepLast: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := logNames(); !equal(got, want) || res.LogKept == "" || res.LogSegmentsRemoved != 0 {
		t.Fatalf("prune beside a running backup: %q, %+v", got, res)
	}
	w.Close()

	// Only the new backup (epoch 2) kept: epoch 1 goes but for the segment
	// holding the branch point; epoch 2 before 6M goes; the history stays.
	if _, err := tr.Prune(ctx, PrunePolicy{KeepLast: 1, DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if got := logNames(); !equal(got, want) {
		t.Fatalf("dry run removed log: %q", got)
	}
	if res, err = tr.Prune(ctx, PrunePolicy{KeepLast: 1}); err != nil {
		t.Fatal(err)
	}
	want = []string{"1:4", "2:0", "2:6", "2:7", "2:8p", "mysql-7"}
	if got := logNames(); !equal(got, want) {
		t.Fatalf("after prune keeping the epoch-2 backup: %q, want %q", got, want)
	}
}

// TestPruneLogKeepsArchiveEnd: a kept backup that starts past the end of
// the archived log (archiving was down while it ran) leaves the last
// segment, where an archiver resumes.
func TestPruneLogKeepsArchiveEnd(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	for i := uint64(0); i < 3; i++ {
		putLog(t, tr.Repository, Segment{Epoch: 1, Start: i << 12, End: (i + 1) << 12})
	}
	engineBackup(t, tr.Repository, "late", 1, 9<<12)
	res, err := tr.Prune(ctx, PrunePolicy{})
	if err != nil {
		t.Fatal(err)
	}
	got := tr.names(t, logDir)
	if res.LogSegmentsRemoved != 2 || len(got) != 1 {
		t.Fatalf("prune removed %d log segments, left %q; want the two first removed and the last kept", res.LogSegmentsRemoved, got)
	}
	if s, _ := parseSegmentName(got[0]); s.Start != 2<<12 {
		t.Fatalf("left %s, want the segment that ends the archive", got[0])
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

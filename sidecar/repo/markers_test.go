package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/api/clock"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage/faulty"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func putLiveLock(t *testing.T, tr *testRepo, suffix string) string {
	t.Helper()
	lock := pruneLockPrefix + time.Now().UTC().Format(tsLayout) + "-" + suffix
	put(t, tr.be, lock, []byte(`{"version":1,"host":"prune-host","pid":42}`))
	return lock
}

// abandon stops a writer's marker refresh without removing it, as a killed
// process leaves it.
func abandon(w *Writer) {
	w.marker.stopOnce.Do(func() { close(w.marker.stop); <-w.marker.done })
}

// TestWriterWaitIsBounded: a live prune lock (a prune still running, or one
// killed a moment ago) makes a new writer wait, saying which lock, and give
// up after Options.LockWait.
func TestWriterWaitIsBounded(t *testing.T) {
	var logs syncBuffer
	tr := newTestRepo(t, Options{})
	lock := putLiveLock(t, tr, "cccccccccccc")
	r := tr.reopen(t, Options{LockWait: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	began := time.Now()
	_, err := r.NewWriter(context.Background())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), lock) || !strings.Contains(err.Error(), "amber unlock") {
		t.Fatalf("writer beside a held prune lock: %v", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("waited %s, bound was 300ms", d)
	}
	if !strings.Contains(logs.String(), lock) {
		t.Fatalf("the wait did not log the lock it waits for: %q", logs.String())
	}
	if left := tr.names(t, writersDir); len(left) != 0 {
		t.Fatalf("a writer that gave up left its marker: %v", left)
	}
}

func TestWriterWaitsForPruneToFinish(t *testing.T) {
	tr := newTestRepo(t, Options{})
	lock := putLiveLock(t, tr, "dddddddddddd")
	go func() {
		time.Sleep(300 * time.Millisecond)
		tr.be.Remove(context.Background(), lock)
	}()
	r := tr.reopen(t, Options{LockWait: 10 * time.Second})
	w, err := r.NewWriter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
}

// TestPruneHoldsPacksForLiveWriter: with a backup running, prune forgets
// what it should but deletes no pack, and says why.
func TestPruneHoldsPacksForLiveWriter(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	backup(t, tr.Repository, pseudoRandom(100, 2<<20))
	backup(t, tr.Repository, pseudoRandom(101, 2<<20))
	w, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writeUploaded(t, w, "x", pseudoRandom(102, 3<<20))
	packs := len(tr.names(t, dataDir))
	res, err := tr.reopen(t, Options{}).Prune(ctx, PrunePolicy{KeepLast: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Forgotten) != 1 || res.PacksRemoved != 0 || !strings.Contains(res.PacksKept, "backup running (writer") {
		t.Fatalf("prune beside a running backup: %+v", res)
	}
	if got := len(tr.names(t, dataDir)); got != packs {
		t.Fatalf("%d packs deleted while a backup ran", packs-got)
	}
	w.Close()
	res, err = tr.reopen(t, Options{}).Prune(ctx, PrunePolicy{KeepLast: 1})
	if err != nil || res.PacksRemoved == 0 || res.PacksKept != "" {
		t.Fatalf("prune after the backup ended: %+v, %v", res, err)
	}
	checkListedRestore(t, tr.reopen(t, Options{}), nil)
}

// TestKilledWriterMarkerGoesStale: a killed writer's marker stops being
// refreshed; once stale by the server's clock prune removes it, and the
// orphans with it.
func TestKilledWriterMarkerGoesStale(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	w, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	writeUploaded(t, w, "x", pseudoRandom(110, 3<<20))
	abandon(w)
	marker := tr.names(t, writersDir)[0]
	tr.age(t, marker, 11*time.Minute)
	res, err := tr.reopen(t, Options{}).Prune(ctx, PrunePolicy{Grace: 0})
	if err != nil {
		t.Fatal(err)
	}
	if res.StaleWriters != 1 || res.Orphans == 0 || len(tr.names(t, dataDir)) != 0 || len(tr.names(t, writersDir)) != 0 {
		t.Fatalf("prune after a killed writer: %+v", res)
	}
}

// TestStalledWriterFailsAtCommit: a writer that stalls past StaleAfter (its
// process suspended) loses its marker to prune, which deletes its packs;
// it must fail at Commit, never commit.
func TestStalledWriterFailsAtCommit(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	var mu sync.Mutex
	var jump time.Duration
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(jump) }
	wr := tr.reopen(t, Options{Clock: funcClock(clock)})
	w, err := wr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	e := writeUploaded(t, w, "x", pseudoRandom(120, 3<<20))
	// Suspended for 11 minutes: no refresh ran, by either clock.
	abandon(w)
	mu.Lock()
	jump = 11 * time.Minute
	mu.Unlock()
	tr.age(t, tr.names(t, writersDir)[0], 11*time.Minute)
	if _, err := tr.reopen(t, Options{}).Prune(ctx, PrunePolicy{Grace: 0}); err != nil {
		t.Fatal(err)
	}
	_, err = w.Commit(ctx, &Manifest{Name: "x", Start: time.Now(), Entries: []Entry{e}})
	if err == nil || !strings.Contains(err.Error(), "not committed") {
		t.Fatalf("a stalled writer committed: %v", err)
	}
	if n := tr.names(t, backupsDir); len(n) != 0 {
		t.Fatalf("manifests after a failed commit: %v", n)
	}
}

// TestMarkerRemovedFailsCommit: a marker that vanished fails Commit even
// while the writer's own lease looks fresh.
func TestMarkerRemovedFailsCommit(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	w, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	e := writeUploaded(t, w, "x", pseudoRandom(130, 2<<20))
	abandon(w)
	if err := tr.be.Remove(ctx, w.marker.name); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, &Manifest{Name: "x", Entries: []Entry{e}}); err == nil {
		t.Fatal("commit without a marker succeeded")
	}
}

// TestMarkerRefreshed: a writer that runs longer than StaleAfter keeps its
// marker fresh, and prune beside it deletes nothing.
func TestMarkerRefreshed(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	opts := Options{StaleAfter: 600 * time.Millisecond, Refresh: 50 * time.Millisecond}
	w, err := tr.reopen(t, opts).NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := pseudoRandom(140, 3<<20)
	e := writeUploaded(t, w, "x", data)
	for range 3 {
		time.Sleep(400 * time.Millisecond)
		if _, err := tr.reopen(t, opts).Prune(ctx, PrunePolicy{Grace: 0}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(ctx, &Manifest{Name: "x", Entries: []Entry{e}}); err != nil {
		t.Fatal(err)
	}
	checkListedRestore(t, tr.reopen(t, Options{}), map[string][]byte{"x": data})
	if n := tr.names(t, writersDir); len(n) != 0 {
		t.Fatalf("marker left after commit: %v", n)
	}
}

// TestTwoPrunesAtOnce: while one prune runs, a second one fails clearly.
func TestTwoPrunesAtOnce(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	backup(t, tr.Repository, pseudoRandom(150, 1<<20))
	slow := faulty.New(tr.be, 1, faulty.Fault{Op: faulty.List, NamePrefix: backupsDir, Kind: faulty.Latency, Latency: time.Second})
	a, err := Open(ctx, slow, []byte("secret"), Options{CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	errA := make(chan error, 1)
	go func() { _, err := a.Prune(ctx, PrunePolicy{}); errA <- err }()
	time.Sleep(300 * time.Millisecond)
	_, errB := tr.reopen(t, Options{}).Prune(ctx, PrunePolicy{})
	if !errors.Is(errB, ErrLocked) || !strings.Contains(errB.Error(), pruneLockPrefix) || !strings.Contains(errB.Error(), "amber unlock") {
		t.Fatalf("second prune: %v", errB)
	}
	if err := <-errA; err != nil {
		t.Fatalf("first prune: %v", err)
	}
	if n := tr.names(t, pruneLockPrefix); len(n) != 0 {
		t.Fatalf("locks left: %v", n)
	}
}

// TestPruneLockRefreshed: a long prune's lock stays fresh, so a writer
// waits for it rather than taking it for dead.
func TestPruneLockRefreshed(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	backup(t, tr.Repository, pseudoRandom(160, 1<<20))
	opts := Options{StaleAfter: 500 * time.Millisecond, Refresh: 50 * time.Millisecond, CacheDir: "-"}
	slow := faulty.New(tr.be, 1, faulty.Fault{Op: faulty.List, NamePrefix: backupsDir, Kind: faulty.Latency, Latency: 1500 * time.Millisecond})
	a, err := Open(ctx, slow, []byte("secret"), opts)
	if err != nil {
		t.Fatal(err)
	}
	errA := make(chan error, 1)
	go func() { _, err := a.Prune(ctx, PrunePolicy{}); errA <- err }()
	time.Sleep(900 * time.Millisecond) // older than StaleAfter unless refreshed
	var logs syncBuffer
	opts.LockWait, opts.Logger = 5*time.Second, slog.New(slog.NewTextHandler(&logs, nil))
	w, err := tr.reopen(t, opts).NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := <-errA; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "waiting for a prune") || strings.Contains(logs.String(), "stale") {
		t.Fatalf("writer did not wait for the running prune: %q", logs.String())
	}
}

// TestDeadProcessMarker: a marker left by a process that exited on this
// same kernel and PID namespace is stale at once.
func TestDeadProcessMarker(t *testing.T) {
	if ourScope == "" {
		testbed.Skip(t, "no /proc here: the dead-process rule needs it")
	}
	tr := newTestRepo(t, Options{})
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(markerInfo{Version: 1, Host: "h", PID: cmd.Process.Pid, Scope: ourScope})
	put(t, tr.be, writersDir+"dead", b)
	res, err := tr.Prune(context.Background(), PrunePolicy{})
	if err != nil || res.StaleWriters != 1 || res.PacksKept != "" {
		t.Fatalf("prune beside a dead process's marker: %+v %v", res, err)
	}
}

// funcClock is a clock.Clock that reads the time from a function and waits
// in real time.
type funcClock func() time.Time

func (f funcClock) Now() time.Time                         { return f() }
func (f funcClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (f funcClock) AfterFunc(d time.Duration, fn func()) clock.Timer {
	return time.AfterFunc(d, fn)
}

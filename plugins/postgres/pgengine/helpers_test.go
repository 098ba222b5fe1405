package pgengine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond every 50ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lsnOf(t *testing.T, pg *testbed.Postgres, sql string) LSN {
	t.Helper()
	l, err := ParseLSN(pg.Psql(t, "postgres", sql))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// walArchive collects what an Archiver emits: files in a directory the
// postgres user can read (complete segments and history under their own
// names, the latest partial as <name>.partial), plus a log of emissions.
type walArchive struct {
	dir string
	mu  sync.Mutex
	log []emission
}

type emission struct {
	Segment
	at time.Time
}

func newWALArchive(t *testing.T) *walArchive {
	dir := filepath.Join(testbed.PostgresDir(t), "archive")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &walArchive{dir: dir}
}

func (w *walArchive) onSegment(ctx context.Context, s Segment) error {
	name := s.Name
	if s.Partial {
		name += ".partial"
	}
	if s.Partial && s.StartLSN != SegmentStart(s.StartLSN, s.SegmentSize) {
		// A later piece: the bytes since the previous one, at their offset.
		f, err := os.OpenFile(filepath.Join(w.dir, name), os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("piece %s-%s of %s without the pieces before it: %w", s.StartLSN, s.EndLSN, s.Name, err)
		}
		off := int64(s.StartLSN - SegmentStart(s.StartLSN, s.SegmentSize))
		if _, err := f.WriteAt(s.Data, off); err != nil {
			f.Close()
			return err
		}
		if err := f.Truncate(off + int64(len(s.Data))); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	} else if err := os.WriteFile(filepath.Join(w.dir, name), s.Data, 0o644); err != nil {
		return err
	}
	if !s.Partial {
		os.Remove(filepath.Join(w.dir, s.Name+".partial"))
	}
	s.Data = nil
	w.mu.Lock()
	w.log = append(w.log, emission{s, time.Now()})
	w.mu.Unlock()
	return nil
}

func (w *walArchive) emissions() []emission {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]emission(nil), w.log...)
}

// restoreCommand copies archived files; the archive's files are world-readable.
func (w *walArchive) restoreCommand() string {
	return "cp " + w.dir + "/%f %p"
}

func (w *walArchive) has(name string) bool {
	_, err := os.Stat(filepath.Join(w.dir, name))
	return err == nil
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

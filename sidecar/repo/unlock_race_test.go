package repo

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

// hookBackend calls hook once, before the first Remove of a name under
// prefix.
type hookBackend struct {
	storage.Backend
	prefix string
	once   sync.Once
	hook   func()
}

func (h *hookBackend) Remove(ctx context.Context, name string) error {
	if strings.HasPrefix(name, h.prefix) {
		h.once.Do(h.hook)
	}
	return h.Backend.Remove(ctx, name)
}

// TestPruneLockRemovedWhileRunning: someone runs `amber unlock` while a
// prune is running (taking it for dead). A backup then starts, finds no
// lock, deduplicates against the packs of a backup the prune is forgetting
// and commits before the prune deletes them. The prune must notice the new
// backup and delete no pack: every listed backup still restores.
func TestPruneLockRemovedWhileRunning(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	shared := pseudoRandom(60, 3<<20)
	backup(t, tr.Repository, shared)                  // forgotten by the prune below
	backup(t, tr.Repository, pseudoRandom(61, 1<<20)) // the one it keeps
	hb := &hookBackend{Backend: tr.be, prefix: backupsDir}
	hb.hook = func() {
		other := tr.reopen(t, Options{})
		if res, err := other.Unlock(ctx, true); err != nil || len(res.Removed) != 1 {
			t.Errorf("unlock --force during the prune: %+v, %v", res, err)
		}
		w, err := other.NewWriter(ctx)
		if err != nil {
			t.Errorf("a backup after unlock: %v", err)
			return
		}
		e := writeUploaded(t, w, "shared", shared)
		if _, err := w.Commit(ctx, &Manifest{Name: "after-unlock", Start: time.Now(), Entries: []Entry{e}}); err != nil {
			t.Logf("commit failed (allowed): %v", err)
		}
	}
	p, err := Open(ctx, hb, []byte("secret"), Options{KDF: testKDF, CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Prune(ctx, PrunePolicy{KeepLast: 1, Grace: 0})
	if err != nil {
		t.Logf("prune: %v", err)
	} else {
		t.Logf("prune: %d packs removed, packs kept: %q", res.PacksRemoved, res.PacksKept)
	}
	checkListedRestore(t, tr.reopen(t, Options{}), map[string][]byte{"shared": shared})
}

// TestPruneLockRemovedWriterLive: as above, but the backup that found no
// lock is still running when the prune would delete packs; it commits after
// the prune and must restore.
func TestPruneLockRemovedWriterLive(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	shared := pseudoRandom(62, 3<<20)
	backup(t, tr.Repository, shared)
	backup(t, tr.Repository, pseudoRandom(63, 1<<20))
	var w *Writer
	var e Entry
	hb := &hookBackend{Backend: tr.be, prefix: backupsDir}
	hb.hook = func() {
		other := tr.reopen(t, Options{})
		if _, err := other.Unlock(ctx, true); err != nil {
			t.Errorf("unlock: %v", err)
		}
		var err error
		if w, err = other.NewWriter(ctx); err != nil {
			t.Errorf("a backup after unlock: %v", err)
			return
		}
		e = writeUploaded(t, w, "shared", shared)
	}
	p, err := Open(ctx, hb, []byte("secret"), Options{KDF: testKDF, CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Prune(ctx, PrunePolicy{KeepLast: 1, Grace: 0})
	if err != nil || res.PacksRemoved != 0 || !strings.Contains(res.PacksKept, "backup started while this prune ran") {
		t.Fatalf("prune beside a writer that found no lock: %+v, %v; want no pack deleted, naming the writer", res, err)
	}
	if w == nil {
		t.Fatal("the writer did not start")
	}
	if _, err := w.Commit(ctx, &Manifest{Name: "after-unlock", Start: time.Now(), Entries: []Entry{e}}); err != nil {
		t.Fatalf("the backup that found no lock failed at commit: %v", err)
	}
	checkListedRestore(t, tr.reopen(t, Options{}), map[string][]byte{"shared": shared})
	if rep, err := tr.reopen(t, Options{}).Verify(ctx, VerifyOptions{ReadData: true}); err != nil || len(rep.Problems) > 0 {
		t.Fatalf("verify after the held prune: %+v, %v", rep, err)
	}
}

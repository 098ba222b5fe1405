package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// testRepo is a repository in a directory the test can reach behind the
// backend's back (to age objects, as a slow or dead client leaves them).
type testRepo struct {
	*Repository
	dir string
	be  storage.Backend
}

func newTestRepo(t *testing.T, opts Options) *testRepo {
	t.Helper()
	dir := t.TempDir()
	be, err := file.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	opts.KDF = testKDF
	if opts.CacheDir == "" {
		opts.CacheDir = "-"
	}
	r, err := Init(context.Background(), be, []byte("secret"), opts)
	if err != nil {
		t.Fatal(err)
	}
	r.cfg.PackSize = 1 << 20 // several packs from a few MiB
	return &testRepo{Repository: r, dir: dir, be: be}
}

// reopen opens the same repository as another client would.
func (tr *testRepo) reopen(t *testing.T, opts Options) *Repository {
	t.Helper()
	if opts.CacheDir == "" {
		opts.CacheDir = "-"
	}
	r, err := Open(context.Background(), tr.be, []byte("secret"), opts)
	if err != nil {
		t.Fatal(err)
	}
	r.cfg.PackSize = 1 << 20
	return r
}

// age sets an object's modification time (the storage server's clock) back by d.
func (tr *testRepo) age(t *testing.T, name string, d time.Duration) {
	t.Helper()
	when := time.Now().Add(-d)
	if err := os.Chtimes(filepath.Join(tr.dir, filepath.FromSlash(name)), when, when); err != nil {
		t.Fatal(err)
	}
}

func (tr *testRepo) names(t *testing.T, prefix string) []string {
	t.Helper()
	n, err := listNames(context.Background(), tr.be, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writeUploaded writes a stream and waits until its full packs are stored.
func writeUploaded(t *testing.T, w *Writer, name string, data []byte) Entry {
	t.Helper()
	e, err := w.WriteStream(context.Background(), name, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	w.upWG.Wait()
	return e
}

// checkListedRestore asserts the invariant: every listed backup restores
// byte for byte (want maps entry names to their content).
func checkListedRestore(t *testing.T, r *Repository, want map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	all, err := r.Backups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		for _, e := range m.Entries {
			var out bytes.Buffer
			if err := r.WriteEntry(ctx, e, &out); err != nil {
				t.Fatalf("listed backup %s entry %s does not restore: %v", m.ID.Short(), e.Name, err)
			}
			if w, ok := want[e.Name]; ok && !bytes.Equal(out.Bytes(), w) {
				t.Fatalf("listed backup %s entry %s restores different bytes", m.ID.Short(), e.Name)
			}
		}
	}
}

func TestGraceProtectsUnfinishedBackup(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	data := pseudoRandom(21, 5<<20)
	w, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := writeUploaded(t, w, "a", data)
	before := len(tr.names(t, dataDir))
	if before == 0 {
		t.Fatal("no pack uploaded before commit")
	}
	p := tr.reopen(t, Options{})
	if _, err := p.Prune(ctx, PrunePolicy{Grace: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if after := len(tr.names(t, dataDir)); after != before {
		t.Fatalf("prune within the grace period removed %d packs of a running backup", before-after)
	}
	if _, err := w.Commit(ctx, &Manifest{Name: "a", Start: time.Now(), Entries: []Entry{e}}); err != nil {
		t.Fatal(err)
	}
	checkListedRestore(t, tr.reopen(t, Options{}), map[string][]byte{"a": data})
}

// TestBackupDuringPrunesGraceZero runs prunes with no grace period while a
// backup writes: the backup must commit and restore, or fail at Commit.
func TestBackupDuringPrunesGraceZero(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	old := pseudoRandom(30, 3<<20)
	backup(t, tr.Repository, old) // something to deduplicate against
	want := map[string][]byte{"s1": pseudoRandom(31, 4<<20), "s2": pseudoRandom(32, 4<<20), "s3": old}
	w, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := tr.reopen(t, Options{})
	var entries []Entry
	for _, n := range []string{"s1", "s2", "s3"} {
		entries = append(entries, writeUploaded(t, w, n, want[n]))
		// Forget everything else each time: the old backup's packs, which
		// s3 deduplicates against, look unused to prune.
		if _, err := p.Prune(ctx, PrunePolicy{KeepLast: 1, Grace: 0}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = w.Commit(ctx, &Manifest{Name: "later", Start: time.Now(), Entries: entries})
	if err != nil {
		t.Logf("commit failed (allowed): %v", err)
	}
	checkListedRestore(t, tr.reopen(t, Options{}), want)
	if err != nil {
		t.Fatalf("a backup whose marker was live failed: %v", err)
	}
}

// TestWriterClockSkew: a writer whose clock is minutes off commits a
// restorable backup while prune runs beside it.
func TestWriterClockSkew(t *testing.T) {
	for _, skew := range []time.Duration{5 * time.Minute, -5 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			tr := newTestRepo(t, Options{})
			ctx := context.Background()
			shared := pseudoRandom(40, 4<<20)
			m1 := backup(t, tr.Repository, shared)
			_ = m1
			backup(t, tr.Repository, pseudoRandom(41, 2<<20)) // newer of the same name
			wr := tr.reopen(t, Options{Clock: funcClock(func() time.Time { return time.Now().Add(skew) })})
			w, err := wr.NewWriter(ctx)
			if err != nil {
				t.Fatal(err)
			}
			fresh := pseudoRandom(42, 3<<20)
			e1 := writeUploaded(t, w, "shared", shared) // deduplicates against m1
			e2 := writeUploaded(t, w, "fresh", fresh)
			p := tr.reopen(t, Options{})
			if _, err := p.Prune(ctx, PrunePolicy{KeepLast: 1, Grace: time.Minute}); err != nil {
				t.Fatal(err)
			}
			_, err = w.Commit(ctx, &Manifest{Name: "skewed", Start: wr.now(), Entries: []Entry{e1, e2}})
			checkListedRestore(t, tr.reopen(t, Options{}), map[string][]byte{"shared": shared, "fresh": fresh})
			if err != nil {
				t.Fatalf("commit: %v", err)
			}
		})
	}
}

// TestStalePruneLockIgnored: a prune killed mid-run leaves its lock; a
// backup must not hang on it once it is stale by the server's clock, and
// the next prune takes it over.
func TestStalePruneLockIgnored(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lock := pruneLockPrefix + time.Now().UTC().Format(tsLayout) + "-dead00000000"
	b, _ := json.Marshal(lockInfo{Host: "gone", PID: 1, Start: time.Now()})
	put(t, tr.be, lock, b)
	tr.age(t, lock, time.Hour)

	w, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := pseudoRandom(50, 2<<20)
	e := writeUploaded(t, w, "a", data)
	if _, err := w.Commit(ctx, &Manifest{Name: "a", Start: time.Now(), Entries: []Entry{e}}); err != nil {
		t.Fatalf("commit with a stale prune lock: %v", err)
	}
	if _, err := tr.reopen(t, Options{}).Prune(ctx, PrunePolicy{}); err != nil {
		t.Fatalf("prune did not take over a stale lock: %v", err)
	}
	for _, n := range tr.names(t, locksDir) {
		if n == lock {
			t.Fatalf("stale lock %s still there", lock)
		}
	}
	checkListedRestore(t, tr.Repository, map[string][]byte{"a": data})
}

// TestPruneLockHeldBySkewedHost: a live prune on a host whose clock is
// ahead holds the lock; a second prune must not run.
func TestPruneLockHeldBySkewedHost(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ahead := time.Now().Add(5 * time.Minute).UTC()
	lock := pruneLockPrefix + ahead.Format(tsLayout) + "-aaaaaaaaaaaa"
	b, _ := json.Marshal(lockInfo{Host: "other", PID: 2, Start: ahead})
	put(t, tr.be, lock, b)
	_, err := tr.Prune(context.Background(), PrunePolicy{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second prune: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), lock) {
		t.Fatalf("error does not name the lock: %v", err)
	}
}

// TestUnlock: unlock removes a stale lock and the lock of a process of
// this host that is gone, keeps a live lock (naming its holder) unless
// forced, and leaves no object of its own behind.
func TestUnlock(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	live := pruneLockPrefix + time.Now().UTC().Format(tsLayout) + "-bbbbbbbbbbbb"
	put(t, tr.be, live, []byte(`{"host":"elsewhere","pid":3}`))
	dead := pruneLockPrefix + time.Now().UTC().Format(tsLayout) + "-cccccccccccc"
	put(t, tr.be, dead, []byte(fmt.Sprintf(`{"host":"h","pid":%d,"scope":%q}`, exited.Process.Pid, ourScope)))
	stale := pruneLockPrefix + time.Now().UTC().Format(tsLayout) + "-dddddddddddd"
	put(t, tr.be, stale, []byte(`{"host":"elsewhere","pid":4}`))
	old := time.Now().Add(-DefaultStaleAfter - time.Minute)
	if err := os.Chtimes(filepath.Join(tr.dir, stale), old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Prune(ctx, PrunePolicy{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("prune beside a live lock: %v", err)
	}
	res, err := tr.Unlock(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(res.Removed)
	if len(res.Removed) != 2 || res.Removed[0] != dead || res.Removed[1] != stale {
		t.Fatalf("unlock removed %q, want the dead holder's and the stale lock", res.Removed)
	}
	if len(res.Live) != 1 || res.Live[0].Name != live || !strings.Contains(res.Live[0].Holder, "elsewhere") {
		t.Fatalf("unlock reported live locks %+v, want %s held by elsewhere", res.Live, live)
	}
	if _, err := tr.Prune(ctx, PrunePolicy{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("prune beside the live lock unlock kept: %v", err)
	}
	if res, err = tr.Unlock(ctx, true); err != nil || len(res.Removed) != 1 || res.Removed[0] != live {
		t.Fatalf("unlock --force: %+v, %v", res, err)
	}
	if got := tr.names(t, locksDir); len(got) != 0 {
		t.Fatalf("left in locks/ after unlock: %q", got)
	}
	if _, err := tr.Prune(ctx, PrunePolicy{}); err != nil {
		t.Fatalf("prune after unlock: %v", err)
	}
}

// TestLostIndexPruneRefuses: with an index file gone, its packs look like
// orphans; prune must refuse rather than delete a kept backup's data.
func TestLostIndexPruneRefuses(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	data := pseudoRandom(60, 3<<20)
	backup(t, tr.Repository, data)
	packs := tr.names(t, dataDir)
	for _, n := range tr.names(t, indexDir) {
		if err := tr.be.Remove(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	_, err := tr.reopen(t, Options{}).Prune(ctx, PrunePolicy{Grace: 0})
	if err == nil || !strings.Contains(err.Error(), "repair index") {
		t.Fatalf("prune with a lost index: %v", err)
	}
	if got := tr.names(t, dataDir); len(got) != len(packs) {
		t.Fatalf("prune deleted %d packs of a kept backup", len(packs)-len(got))
	}
}

// TestPruneCorruptManifest: one unreadable manifest is reported; prune
// still forgets the others and deletes no pack.
func TestPruneCorruptManifest(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	for i := range 3 {
		backup(t, tr.Repository, pseudoRandom(uint64(70+i), 2<<20))
	}
	ms := tr.names(t, backupsDir)
	bad := ms[0]
	orig, _ := storage.ReadAll(ctx, tr.be, bad)
	dam := bytes.Clone(orig)
	dam[len(dam)/2] ^= 1
	put(t, tr.be, bad, dam)
	packs := tr.names(t, dataDir)
	_, err := tr.reopen(t, Options{}).Prune(ctx, PrunePolicy{KeepLast: 1, Grace: 0})
	if err != nil {
		t.Fatalf("prune with one corrupt manifest: %v", err)
	}
	if got := tr.names(t, dataDir); len(got) != len(packs) {
		t.Fatalf("prune deleted %d packs although a manifest could not be read", len(packs)-len(got))
	}
	if left := tr.names(t, backupsDir); len(left) != 2 { // the corrupt one and the newest
		t.Fatalf("%d manifests left, want 2: %v", len(left), left)
	}
}

// TestPruneIndexKeepsSizes: the index prune rewrites records pack sizes.
func TestPruneIndexKeepsSizes(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	backup(t, tr.Repository, pseudoRandom(80, 3<<20))
	if _, err := tr.Prune(ctx, PrunePolicy{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range tr.names(t, indexDir) {
		f, err := tr.loadIndexFile(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Packs {
			if p.Size <= 0 {
				t.Fatalf("index %s names pack %s without its size", n, p.ID.Short())
			}
		}
	}
}

// TestPackHeaderWrappingOffsets: a header whose lengths wrap a uint32 must
// be refused, not panic.
func TestPackHeaderWrappingOffsets(t *testing.T) {
	tr := newTestRepo(t, Options{})
	plain := []byte("twenty-two bytes here!")
	bid := tr.ids.id(plain)
	data := tr.seal.seal(nil, plain, blobAD(bid, DataBlob)) // 50 bytes, valid
	data = append(data, make([]byte, 50)...)
	var hdr []byte
	for i, l := range []uint32{50, 0xFFFFFFFF, 51} { // sums to 100 mod 2^32
		hdr = append(hdr, 0, 0)
		hdr = binary.LittleEndian.AppendUint32(hdr, l)
		hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(plain)))
		if i == 0 {
			hdr = append(hdr, bid[:]...)
		} else {
			hdr = append(hdr, make([]byte, 32)...)
		}
	}
	pack := tr.seal.seal(bytes.Clone(data), hdr, []byte(adPackHeader))
	pack = binary.LittleEndian.AppendUint32(pack, uint32(len(pack)-len(data)))
	id := hashID(pack)
	put(t, tr.be, packName(id), pack)
	_, err := tr.checkPack(context.Background(), id)
	if err == nil {
		t.Fatal("a pack header with wrapping offsets was accepted")
	}
}

// TestHugeKDFRefusedFast: a planted key slot with absurd Argon2 cost must
// not stall opening the repository.
func TestHugeKDFRefusedFast(t *testing.T) {
	tr := newTestRepo(t, Options{})
	slot := keySlot{Version: 1, Created: time.Now(), KDF: "argon2id",
		Params: KDFParams{Time: 1 << 31, Memory: 8, Threads: 1}, Salt: make([]byte, 32), Wrapped: make([]byte, 60)}
	slot.Check = slot.checksum()
	b, _ := json.Marshal(slot)
	put(t, tr.be, keysDir+"00planted", b)
	done := make(chan error, 1)
	go func() {
		_, err := Open(context.Background(), tr.be, []byte("secret"), Options{CacheDir: "-"})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("open beside a planted slot: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("open still deriving a key from a planted slot after 3 s")
	}
}

// TestVersionFieldsChecked: an unknown version is a clear error.
func TestVersionFieldsChecked(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	t.Run("index", func(t *testing.T) {
		plain, _ := json.Marshal(indexFile{Version: 3})
		id, _, err := tr.saveObject(ctx, indexDir, plain, adIndex)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.be.Remove(ctx, indexDir+id.String())
		if _, err := tr.loadIndexFile(ctx, indexDir+id.String()); err == nil || !strings.Contains(err.Error(), "version 3") {
			t.Fatalf("index version 3: %v", err)
		}
	})
	t.Run("manifest", func(t *testing.T) {
		plain, _ := json.Marshal(Manifest{Version: 3, Name: "x"})
		id, _, err := tr.saveObject(ctx, backupsDir, plain, adBackup)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.be.Remove(ctx, backupsDir+id.String())
		if _, err := tr.Backups(ctx); err == nil || !strings.Contains(err.Error(), "version 3") {
			t.Fatalf("manifest version 3: %v", err)
		}
	})
	t.Run("key slot", func(t *testing.T) {
		names := tr.names(t, keysDir)
		b, _ := storage.ReadAll(ctx, tr.be, names[0])
		var s keySlot
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		s.Version = 2
		s.Check = s.checksum()
		b2, _ := json.Marshal(s)
		put(t, tr.be, names[0], b2)
		defer put(t, tr.be, names[0], b)
		if _, err := Open(ctx, tr.be, []byte("secret"), Options{CacheDir: "-"}); err == nil || !strings.Contains(err.Error(), "version 2") {
			t.Fatalf("key slot version 2: %v", err)
		}
	})
}

// TestVerifyNamesEveryDamage damages several objects at once (a flipped
// byte, a truncated pack, a deleted pack, two packs swapped under each
// other's names, a truncated index file); verify names every one.
func TestVerifyNamesEveryDamage(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	backup(t, tr.Repository, pseudoRandom(90, 6<<20))
	idx1 := tr.names(t, indexDir)
	backup(t, tr.Repository, pseudoRandom(91, 3<<20))
	var idx2 string
	for _, n := range tr.names(t, indexDir) {
		if n != idx1[0] {
			idx2 = n
		}
	}
	f, err := tr.loadIndexFile(ctx, idx1[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Packs) < 5 {
		t.Fatalf("need 5 packs in the first backup, have %d", len(f.Packs))
	}
	var packs []string
	for _, p := range f.Packs {
		packs = append(packs, packName(p.ID))
	}
	read := func(n string) []byte {
		b, err := storage.ReadAll(ctx, tr.be, n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	flip := read(packs[0])
	flip[10] ^= 1
	put(t, tr.be, packs[0], flip)
	trunc := read(packs[1])
	put(t, tr.be, packs[1], trunc[:len(trunc)-7])
	if err := tr.be.Remove(ctx, packs[2]); err != nil {
		t.Fatal(err)
	}
	a, b := read(packs[3]), read(packs[4])
	put(t, tr.be, packs[3], b)
	put(t, tr.be, packs[4], a)
	ib := read(idx2)
	put(t, tr.be, idx2, ib[:len(ib)/2])

	for _, readData := range []bool{false, true} {
		rep, err := tr.reopen(t, Options{}).Verify(ctx, VerifyOptions{ReadData: readData})
		if err != nil {
			t.Fatal(err)
		}
		named := map[string]bool{}
		for _, p := range rep.Problems {
			named[p.Object] = true
		}
		want := []string{packs[1], packs[2], idx2}
		if readData || len(a) != len(b) {
			want = append(want, packs[3], packs[4])
		}
		if readData { // a flipped byte keeps the size
			want = append(want, packs[0])
		}
		for _, n := range want {
			if !named[n] {
				t.Errorf("read-data=%v: damaged %s not named; problems: %+v", readData, n, rep.Problems)
			}
		}
	}
}

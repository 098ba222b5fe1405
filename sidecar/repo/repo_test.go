package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/file"
	"github.com/zeebo/blake3"
)

var testKDF = KDFParams{Time: 1, Memory: 1024, Threads: 1}

func newRepo(t *testing.T) (*Repository, storage.Backend) {
	t.Helper()
	be, err := file.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Init(context.Background(), be, []byte("secret"), Options{KDF: testKDF, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return r, be
}

// pseudoRandom returns n bytes of compressible but non-trivial data.
func pseudoRandom(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && i+k < n; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func backup(t *testing.T, r *Repository, data []byte) *Manifest {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e, err := w.WriteStream(ctx, "stdin", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Name: "test", Start: time.Now(), Entries: []Entry{e}}
	if _, err := w.Commit(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func restore(t *testing.T, r *Repository, m *Manifest) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := r.WriteEntry(context.Background(), m.Entries[0], &out); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestRoundTripAndDedup(t *testing.T) {
	r, _ := newRepo(t)
	data := pseudoRandom(1, 160<<20)
	m1 := backup(t, r, data)
	if got := restore(t, r, m1); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("restored %d bytes differ from the %d backed up", len(got), len(data))
	}
	m2 := backup(t, r, data)
	if m2.BytesAdded > int64(len(data))/100 {
		t.Fatalf("second backup of the same data added %d bytes (> 1%%)", m2.BytesAdded)
	}
	// Change 10% of the 1 MiB blocks.
	changed := bytes.Clone(data)
	rng := rand.New(rand.NewPCG(7, 7))
	blocks := len(changed) >> 20
	for _, b := range rng.Perm(blocks)[:blocks/10] {
		copy(changed[b<<20:], pseudoRandom(uint64(100+b), 1<<20))
	}
	m3 := backup(t, r, changed)
	if frac := float64(m3.BytesAdded) / float64(len(data)); frac > 0.20 {
		t.Fatalf("10%% changed blocks added %.1f%% of the stream", 100*frac)
	} else {
		t.Logf("10%% changed blocks added %.1f%%", 100*frac)
	}
	if got := restore(t, r, m3); !bytes.Equal(got, changed) {
		t.Fatal("changed stream does not round-trip")
	}
	// A fresh open (no cache) reads the same backups.
	r2, err := Open(context.Background(), r.be, []byte("secret"), Options{CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	all, err := r2.Backups(context.Background())
	if err != nil || len(all) != 3 {
		t.Fatalf("backups after reopen: %d, %v", len(all), err)
	}
	rep, err := r2.Verify(context.Background(), VerifyOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

func TestEmptyStream(t *testing.T) {
	r, _ := newRepo(t)
	m := backup(t, r, nil)
	if got := restore(t, r, m); len(got) != 0 {
		t.Fatalf("empty stream restored as %d bytes", len(got))
	}
}

func TestWrongPassword(t *testing.T) {
	r, be := newRepo(t)
	_, err := Open(context.Background(), be, []byte("wrong"), Options{CacheDir: "-"})
	if !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("open with a wrong password: %v", err)
	}
	_ = r
}

func TestKeys(t *testing.T) {
	r, be := newRepo(t)
	ctx := context.Background()
	if _, err := r.AddKey(ctx, []byte("second"), testKDF); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, be, []byte("second"), Options{CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := r2.Keys(ctx)
	if len(keys) != 2 {
		t.Fatalf("%d keys", len(keys))
	}
	var first string
	for _, k := range keys {
		if !k.Current {
			first = k.ID
		}
	}
	if err := r2.RemoveKey(ctx, first[:8]); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, []byte("secret"), Options{CacheDir: "-"}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("removed key still opens: %v", err)
	}
	if err := r2.RemoveKey(ctx, keys[0].ID); err == nil {
		t.Fatal("removing the current key succeeded")
	}
}

func TestCorruptionIsNamed(t *testing.T) {
	r, be := newRepo(t)
	ctx := context.Background()
	m := backup(t, r, pseudoRandom(3, 3<<20))
	if err := r.PutSegment(ctx, Segment{Stream: "pg", Epoch: 1, Start: 0, End: 100}, []byte("wal bytes")); err != nil {
		t.Fatal(err)
	}
	var objects []storage.FileInfo
	be.List(ctx, "", func(fi storage.FileInfo) error {
		if fi.Size > 0 {
			objects = append(objects, fi)
		}
		return nil
	})
	for _, fi := range objects {
		t.Run(fi.Name, func(t *testing.T) {
			orig, _ := storage.ReadAll(ctx, be, fi.Name)
			bad := bytes.Clone(orig)
			bad[len(bad)/2] ^= 0x40
			put(t, be, fi.Name, bad)
			defer put(t, be, fi.Name, orig)
			r2, err := Open(ctx, be, []byte("secret"), Options{CacheDir: "-"})
			if fi.Name == "config" || strings.HasPrefix(fi.Name, "keys/") {
				// Damage there stops the open, naming the object.
				if err == nil || !strings.Contains(err.Error(), fi.Name) {
					t.Fatalf("open with a damaged %s: %v", fi.Name, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rep, err := r2.Verify(ctx, VerifyOptions{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, p := range rep.Problems {
				found = found || p.Object == fi.Name
			}
			if !found {
				t.Fatalf("flipped byte in %s not reported: %+v", fi.Name, rep.Problems)
			}
			if strings.HasPrefix(fi.Name, "data/") {
				err := r2.WriteEntry(ctx, m.Entries[0], io.Discard)
				if err == nil || !strings.Contains(err.Error(), fi.Name) {
					t.Fatalf("restore of a corrupt pack: %v", err)
				}
			}
		})
	}
}

func put(t *testing.T, be storage.Backend, name string, b []byte) {
	if err := be.Save(context.Background(), name, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

func TestPrune(t *testing.T) {
	r, be := newRepo(t)
	ctx := context.Background()
	var ms []*Manifest
	for i := range 3 {
		ms = append(ms, backup(t, r, pseudoRandom(uint64(10+i), 5<<20)))
	}
	// An orphan pack, as a killed backup leaves.
	w, _ := r.NewWriter(ctx)
	if _, err := w.WriteStream(ctx, "x", bytes.NewReader(pseudoRandom(99, 3<<20))); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.flushLocked(ctx)
	w.mu.Unlock()
	w.Close() // abandoned: its marker goes, its packs stay
	res, err := r.Prune(ctx, PrunePolicy{KeepLast: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Forgotten) != 2 || res.Orphans != 1 {
		t.Fatalf("prune: %+v", res)
	}
	left := 0
	be.List(ctx, "data/", func(storage.FileInfo) error { left++; return nil })
	if left != 1 {
		t.Fatalf("%d packs left, want 1", left)
	}
	rep, err := r.Verify(ctx, VerifyOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("verify after prune: %v %+v", err, rep)
	}
	if got := restore(t, r, ms[2]); !bytes.Equal(got, pseudoRandom(12, 5<<20)) {
		t.Fatal("kept backup differs after prune")
	}
}

// A reused chunk hasher names chunks as a fresh one does.
func TestChunkHasherReuse(t *testing.T) {
	c := chunkIDer{key: [32]byte{7}}
	h := c.hasher()
	for _, n := range []int{0, 1, 1024, 1025, 300 << 10, 5} {
		data := bytes.Repeat([]byte{byte(n)}, n)
		if got, want := h.id(data), c.id(data); got != want {
			t.Fatalf("%d bytes: reused hasher gives %s, fresh %s", n, got.Short(), want.Short())
		}
		if got, want := h.id(data), ID(blake3Keyed(c.key, data)); got != want {
			t.Fatalf("%d bytes: %s, want %s", n, got.Short(), want.Short())
		}
	}
}

func blake3Keyed(key [32]byte, data []byte) (id [32]byte) {
	h, _ := blake3.NewKeyed(key[:])
	h.Write(data)
	h.Sum(id[:0])
	return id
}

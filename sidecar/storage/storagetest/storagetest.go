// Package storagetest is the suite every storage backend must pass. A
// backend's test calls Run with a function that returns a fresh, empty backend.
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Run runs the whole suite against backends made by newBackend. Each subtest
// gets its own backend; newBackend should register its own cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) storage.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Backend)
	}{
		{"SaveLoad", testSaveLoad},
		{"Ranges", testRanges},
		{"NotFound", testNotFound},
		{"Overwrite", testOverwrite},
		{"List", testList},
		{"Remove", testRemove},
		{"Empty", testEmpty},
		{"Concurrent", testConcurrent},
		{"Large", testLarge},
		{"Create", testCreate},
		{"CreateConcurrent", testCreateConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			tc.fn(t, b)
		})
	}
}

func random(t testing.TB, n int) []byte {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		t.Fatal(err)
	}
	return buf
}

func save(t testing.TB, b storage.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Save(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("save %s: %v", name, err)
	}
}

func load(t testing.TB, b storage.Backend, name string, off, length int64) []byte {
	t.Helper()
	rd, err := b.Load(context.Background(), name, off, length)
	if err != nil {
		t.Fatalf("load %s [%d,+%d]: %v", name, off, length, err)
	}
	defer rd.Close()
	got, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("read %s [%d,+%d]: %v", name, off, length, err)
	}
	return got
}

func testSaveLoad(t *testing.T, b storage.Backend) {
	data := random(t, 100_000)
	save(t, b, "data/ab/abcdef", data)
	if got := load(t, b, "data/ab/abcdef", 0, 0); !bytes.Equal(got, data) {
		t.Fatalf("loaded %d bytes, want the %d saved", len(got), len(data))
	}
	fi, err := b.Stat(context.Background(), "data/ab/abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size != int64(len(data)) {
		t.Fatalf("stat size %d, want %d", fi.Size, len(data))
	}
}

func testRanges(t *testing.T, b storage.Backend) {
	data := random(t, 65_537)
	save(t, b, "ranges", data)
	for _, r := range []struct{ off, n int64 }{
		{0, 1}, {0, 100}, {1, 1}, {100, 1000}, {65_536, 1}, {65_000, 0}, {4096, 4096}, {0, 65_537},
	} {
		want := data[r.off:]
		if r.n > 0 {
			want = want[:r.n]
		}
		if got := load(t, b, "ranges", r.off, r.n); !bytes.Equal(got, want) {
			t.Errorf("range [%d,+%d]: got %d bytes, want %d (or wrong content)", r.off, r.n, len(got), len(want))
		}
	}
}

func testNotFound(t *testing.T, b storage.Backend) {
	ctx := context.Background()
	if _, err := b.Load(ctx, "missing/object", 0, 0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("load of a missing object: %v, want ErrNotFound", err)
	} else if !storage.IsPermanent(err) {
		t.Errorf("not-found error %v is not permanent", err)
	}
	if _, err := b.Stat(ctx, "missing/object"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat of a missing object: %v, want ErrNotFound", err)
	}
	if err := b.Remove(ctx, "missing/object"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("remove of a missing object: %v, want ErrNotFound", err)
	}
}

func testOverwrite(t *testing.T, b storage.Backend) {
	save(t, b, "config", []byte("first"))
	save(t, b, "config", []byte("second version"))
	if got := load(t, b, "config", 0, 0); string(got) != "second version" {
		t.Fatalf("after overwrite got %q", got)
	}
	n := 0
	if err := b.List(context.Background(), "config", func(storage.FileInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("overwritten object listed %d times", n)
	}
}

func names(t *testing.T, b storage.Backend, prefix string) []string {
	t.Helper()
	var out []string
	err := b.List(context.Background(), prefix, func(fi storage.FileInfo) error {
		out = append(out, fmt.Sprintf("%s:%d", fi.Name, fi.Size))
		return nil
	})
	if err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	sort.Strings(out)
	return out
}

func testList(t *testing.T, b storage.Backend) {
	for i, n := range []string{"data/00/0001", "data/00/0002", "data/ff/ff01", "index/aa", "snapshots/s1", "log/pg/1/000A"} {
		save(t, b, n, make([]byte, i+1))
	}
	check := func(prefix string, want ...string) {
		t.Helper()
		got := names(t, b, prefix)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("list %q = %v, want %v", prefix, got, want)
		}
	}
	check("data/", "data/00/0001:1", "data/00/0002:2", "data/ff/ff01:3")
	check("data/00/", "data/00/0001:1", "data/00/0002:2")
	check("data/00/0002", "data/00/0002:2")
	check("index/", "index/aa:4")
	check("log/pg/", "log/pg/1/000A:6")
	check("nothing/")
	if got := names(t, b, ""); len(got) != 6 {
		t.Errorf("list of everything = %v, want 6 objects", got)
	}
	stop := errors.New("stop")
	if err := b.List(context.Background(), "data/", func(storage.FileInfo) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("list returned %v, want the callback's error", err)
	}
}

func testRemove(t *testing.T, b storage.Backend) {
	save(t, b, "locks/x", []byte("lock"))
	if err := b.Remove(context.Background(), "locks/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(context.Background(), "locks/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stat after remove: %v, want ErrNotFound", err)
	}
	if got := names(t, b, "locks/"); len(got) != 0 {
		t.Fatalf("removed object still listed: %v", got)
	}
}

func testEmpty(t *testing.T, b storage.Backend) {
	save(t, b, "empty", nil)
	if got := load(t, b, "empty", 0, 0); len(got) != 0 {
		t.Fatalf("empty object loaded as %d bytes", len(got))
	}
}

func testConcurrent(t *testing.T, b storage.Backend) {
	var wg sync.WaitGroup
	data := make([][]byte, 16)
	for i := range data {
		data[i] = random(t, 10_000+i)
	}
	errs := make(chan error, len(data))
	for i := range data {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- b.Save(context.Background(), fmt.Sprintf("data/c/%02d", i), bytes.NewReader(data[i]), int64(len(data[i])))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range data {
		if got := load(t, b, fmt.Sprintf("data/c/%02d", i), 0, 0); !bytes.Equal(got, data[i]) {
			t.Fatalf("object %d differs after concurrent saves", i)
		}
	}
}

// LargeSize is the object size of the Large test; backends whose large-object
// path starts at a lower threshold in tests (B2's large-file API) cross it.
var LargeSize = 24 << 20

func testLarge(t *testing.T, b storage.Backend) {
	data := random(t, LargeSize)
	save(t, b, "data/large", data)
	if got := load(t, b, "data/large", 0, 0); !bytes.Equal(got, data) {
		t.Fatalf("large object differs after round trip (%d bytes back)", len(got))
	}
	off := int64(LargeSize/2 - 7)
	if got := load(t, b, "data/large", off, 1<<20); !bytes.Equal(got, data[off:off+1<<20]) {
		t.Fatal("range inside large object differs")
	}
}

func creator(t *testing.T, b storage.Backend) storage.Creator {
	t.Helper()
	c, ok := storage.AsCreator(b)
	if !ok {
		t.Fatalf("backend %T cannot create conditionally (storage.Creator)", b)
	}
	return c
}

// testCreate: Create stores a new name, refuses a taken one with ErrExists
// and leaves the existing object as it was, and works again after Remove.
func testCreate(t *testing.T, b storage.Backend) {
	ctx := context.Background()
	c := creator(t, b)
	first := random(t, 10_000)
	if err := c.Create(ctx, "log/s/1/0001-0002", bytes.NewReader(first), int64(len(first))); err != nil {
		t.Fatalf("create of a new name: %v", err)
	}
	if got := load(t, b, "log/s/1/0001-0002", 0, 0); !bytes.Equal(got, first) {
		t.Fatalf("created object differs (%d bytes back)", len(got))
	}
	second := random(t, 12_000)
	err := c.Create(ctx, "log/s/1/0001-0002", bytes.NewReader(second), int64(len(second)))
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("create of a taken name: %v, want ErrExists", err)
	}
	if !storage.IsPermanent(err) {
		t.Errorf("ErrExists %v is not permanent", err)
	}
	if got := load(t, b, "log/s/1/0001-0002", 0, 0); !bytes.Equal(got, first) {
		t.Fatalf("a refused create changed the object (%d bytes back)", len(got))
	}
	if got := names(t, b, "log/"); len(got) != 1 {
		t.Fatalf("after a refused create, list = %v", got)
	}
	// An object stored with Save is taken too.
	save(t, b, "log/s/1/0002-0003", []byte("saved"))
	if err := c.Create(ctx, "log/s/1/0002-0003", bytes.NewReader(second), int64(len(second))); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("create over a saved object: %v, want ErrExists", err)
	}
	// A removed name is free again.
	if err := b.Remove(ctx, "log/s/1/0002-0003"); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, "log/s/1/0002-0003", bytes.NewReader(second), int64(len(second))); err != nil {
		t.Fatalf("create after remove: %v", err)
	}
	if got := load(t, b, "log/s/1/0002-0003", 0, 0); !bytes.Equal(got, second) {
		t.Fatal("object created after remove differs")
	}
	if err := c.Create(ctx, "empty-created", bytes.NewReader(nil), 0); err != nil {
		t.Fatalf("create of an empty object: %v", err)
	}
}

// testCreateConcurrent: of several concurrent Creates of one name exactly
// one succeeds, and the object holds its content.
func testCreateConcurrent(t *testing.T, b storage.Backend) {
	c := creator(t, b)
	const n = 6
	data := make([][]byte, n)
	for i := range data {
		data[i] = random(t, 5_000+i)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range data {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Create(context.Background(), "log/race", bytes.NewReader(data[i]), int64(len(data[i])))
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("creates %d and %d both succeeded", winner, i)
			}
			winner = i
		case !errors.Is(err, storage.ErrExists):
			t.Fatalf("create %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no concurrent create succeeded")
	}
	if got := load(t, b, "log/race", 0, 0); !bytes.Equal(got, data[winner]) {
		t.Fatalf("object holds %d bytes, not the winner's %d", len(got), len(data[winner]))
	}
}

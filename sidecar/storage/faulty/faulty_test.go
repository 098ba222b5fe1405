package faulty_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/faulty"
	"github.com/amber-backup/amber/sidecar/storage/file"
	"github.com/amber-backup/amber/sidecar/storage/storagetest"
)

func fileBackend(t *testing.T) storage.Backend {
	t.Helper()
	b, err := file.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNoFaultsPassesSuite(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return faulty.New(fileBackend(t), 1) })
}

func TestCallsSelectWhichCallsFail(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Stat, Kind: faulty.Error, Calls: []int{2, 4}})
	_ = fb.Save(ctx, "x", strings.NewReader("x"), 1)
	var failed []int
	for i := 1; i <= 5; i++ {
		if _, err := fb.Stat(ctx, "x"); err != nil {
			if storage.IsPermanent(err) {
				t.Errorf("injected transient error is permanent: %v", err)
			}
			failed = append(failed, i)
		}
	}
	if len(failed) != 2 || failed[0] != 2 || failed[1] != 4 {
		t.Fatalf("failed calls %v, want [2 4]", failed)
	}
	if fb.Calls(faulty.Stat) != 5 || fb.Injected(faulty.Stat) != 2 || fb.Injected(faulty.Save) != 0 {
		t.Errorf("counts: %d stat calls, %d stat faults, %d save faults", fb.Calls(faulty.Stat), fb.Injected(faulty.Stat), fb.Injected(faulty.Save))
	}
}

func TestProbabilityIsSeeded(t *testing.T) {
	run := func(seed uint64) string {
		fb := faulty.New(fileBackend(t), seed, faulty.Fault{Kind: faulty.Error, Probability: 0.5})
		var b strings.Builder
		for range 64 {
			if _, err := fb.Stat(context.Background(), "x"); errors.Is(err, storage.ErrNotFound) {
				b.WriteByte('.')
			} else {
				b.WriteByte('X')
			}
		}
		return b.String()
	}
	a, b, c := run(42), run(42), run(43)
	if a != b {
		t.Errorf("same seed, different faults:\n%s\n%s", a, b)
	}
	if a == c {
		t.Errorf("different seeds, same faults: %s", a)
	}
	if !strings.Contains(a, "X") || !strings.Contains(a, ".") {
		t.Errorf("probability 0.5 gave %s", a)
	}
}

func TestTimesBoundsAFault(t *testing.T) {
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Kind: faulty.Permanent, Times: 2})
	n := 0
	for range 5 {
		if _, err := fb.Stat(context.Background(), "x"); storage.IsPermanent(err) && !errors.Is(err, storage.ErrNotFound) {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("fault fired %d times, want 2", n)
	}
}

func TestThrottleCarriesRetryAfter(t *testing.T) {
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Remove, Kind: faulty.Throttle, RetryAfter: 3 * time.Second})
	err := fb.Remove(context.Background(), "x")
	if d, ok := storage.RetryAfter(err); !ok || d != 3*time.Second || storage.IsPermanent(err) {
		t.Fatalf("remove: %v (retry after %s, %v), want transient with 3s", err, d, ok)
	}
}

func TestLatencyDelays(t *testing.T) {
	var slept time.Duration
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Stat, Kind: faulty.Latency, Latency: 5 * time.Second})
	fb.Sleep = func(ctx context.Context, d time.Duration) error { slept += d; return nil }
	if _, err := fb.Stat(context.Background(), "x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stat after latency: %v, want the inner backend's answer", err)
	}
	if slept != 5*time.Second {
		t.Errorf("slept %s, want 5s", slept)
	}
}

func TestReadersAreCut(t *testing.T) {
	ctx := context.Background()
	inner := fileBackend(t)
	data := bytes.Repeat([]byte("0123456789"), 100)
	if err := inner.Save(ctx, "obj", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	fb := faulty.New(inner, 1,
		faulty.Fault{Op: faulty.Load, Kind: faulty.ShortRead, Calls: []int{1}, After: 123},
		faulty.Fault{Op: faulty.Load, Kind: faulty.Reset, Calls: []int{2}, After: 456},
	)
	rd, err := fb.Load(ctx, "obj", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rd)
	rd.Close()
	if err != nil || !bytes.Equal(got, data[:123]) {
		t.Fatalf("short read: %d bytes, %v; want the first 123 and a clean EOF", len(got), err)
	}
	rd, err = fb.Load(ctx, "obj", 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(rd)
	rd.Close()
	if !errors.Is(err, syscall.ECONNRESET) || !bytes.Equal(got, data[10:10+456]) {
		t.Fatalf("reset: %d bytes, %v; want 456 bytes then a connection reset", len(got), err)
	}
}

// countingReaderAt counts the bytes read from it.
type countingReaderAt struct {
	r io.ReaderAt
	n int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

func TestPartialSaveReadsThenFailsAndLeavesNothing(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Save, Kind: faulty.PartialSave, After: 700})
	src := &countingReaderAt{r: bytes.NewReader(make([]byte, 2000))}
	err := fb.Save(ctx, "obj", src, 2000)
	if err == nil || storage.IsPermanent(err) {
		t.Fatalf("save: %v, want a transient error", err)
	}
	if src.n != 700 {
		t.Errorf("read %d bytes of the source, want 700", src.n)
	}
	if _, err := fb.Stat(ctx, "obj"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat after partial save: %v, want ErrNotFound", err)
	}
}

func TestListReset(t *testing.T) {
	ctx := context.Background()
	inner := fileBackend(t)
	for _, n := range []string{"a", "b", "c"} {
		if err := inner.Save(ctx, n, strings.NewReader(n), 1); err != nil {
			t.Fatal(err)
		}
	}
	fb := faulty.New(inner, 1, faulty.Fault{Op: faulty.List, Kind: faulty.Reset, After: 2})
	seen := 0
	err := fb.List(ctx, "", func(storage.FileInfo) error { seen++; return nil })
	if !errors.Is(err, syscall.ECONNRESET) || seen != 2 {
		t.Fatalf("list: %d entries, %v; want 2 then a reset", seen, err)
	}
}

func TestNamePrefix(t *testing.T) {
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Kind: faulty.Permanent, NamePrefix: "locks/"})
	if _, err := fb.Stat(context.Background(), "data/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("data/x: %v, want no fault", err)
	}
	if _, err := fb.Stat(context.Background(), "locks/x"); errors.Is(err, storage.ErrNotFound) || !storage.IsPermanent(err) {
		t.Errorf("locks/x: %v, want the injected permanent error", err)
	}
}

package retry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	clk "github.com/amber-backup/amber/plugins/api/clock"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/faulty"
	"github.com/amber-backup/amber/sidecar/storage/file"
	"github.com/amber-backup/amber/sidecar/storage/retry"
	"github.com/amber-backup/amber/sidecar/storage/storagetest"
)

// fakeClock advances only when slept on, and records every wait.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After records the wait and lets it pass at once.
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) clk.Timer { return time.AfterFunc(d, f) }

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

func (c *fakeClock) options() retry.Options {
	return retry.Options{Clock: c}
}

func fileBackend(t *testing.T) storage.Backend {
	t.Helper()
	b, err := file.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func save(t *testing.T, b storage.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Save(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("save %s: %v", name, err)
	}
}

func load(b storage.Backend, name string, off, n int64) ([]byte, error) {
	rd, err := b.Load(context.Background(), name, off, n)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

// TestSuiteOverFaultyFile runs the shared suite through retry over a file
// backend that fails a good share of all calls in every way it can.
func TestSuiteOverFaultyFile(t *testing.T) {
	var mu sync.Mutex
	var faulties []*faulty.Backend
	var retries int
	seed := uint64(1)
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		clock := newClock()
		mu.Lock()
		seed++
		fb := faulty.New(fileBackend(t), seed,
			faulty.Fault{Kind: faulty.Error, Probability: 0.15},
			faulty.Fault{Kind: faulty.Throttle, Probability: 0.05, RetryAfter: 3 * time.Second},
			faulty.Fault{Kind: faulty.Latency, Probability: 0.05, Latency: time.Second},
			faulty.Fault{Op: faulty.Load, Kind: faulty.ShortRead, Probability: 0.2, AfterRandom: 70_000},
			faulty.Fault{Op: faulty.Load, Kind: faulty.Reset, Probability: 0.2, AfterRandom: 3 << 20},
			faulty.Fault{Op: faulty.Save, Kind: faulty.PartialSave, Probability: 0.2, AfterRandom: 50_000},
			faulty.Fault{Op: faulty.List, Kind: faulty.Reset, Probability: 0.3, AfterRandom: 4},
			faulty.Fault{Op: faulty.Create, Kind: faulty.LostReply, Probability: 0.3},
		)
		fb.Sleep = func(ctx context.Context, d time.Duration) error { return clk.Sleep(ctx, clock, d) }
		faulties = append(faulties, fb)
		mu.Unlock()
		opts := clock.options()
		opts.MaxAttempts = 40
		opts.MaxElapsed = time.Hour
		opts.OnRetry = func(op, name string, attempt int, err error) {
			mu.Lock()
			retries++
			mu.Unlock()
		}
		return retry.New(fb, opts)
	})
	counts := map[faulty.Kind]int{}
	for _, fb := range faulties {
		for _, k := range []faulty.Kind{faulty.Error, faulty.Throttle, faulty.Latency, faulty.ShortRead, faulty.Reset, faulty.PartialSave} {
			counts[k] += fb.InjectedKind(k)
		}
	}
	t.Logf("faults injected: %v; retries: %d", counts, retries)
	for k, n := range counts {
		if n == 0 {
			t.Errorf("no %s fault was injected; the test proves nothing about it", k)
		}
	}
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	clock := newClock()
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Stat, Kind: faulty.Permanent})
	hooked := 0
	opts := clock.options()
	opts.OnRetry = func(string, string, int, error) { hooked++ }
	b := retry.New(fb, opts)

	_, err := b.Stat(context.Background(), "config")
	if !storage.IsPermanent(err) {
		t.Fatalf("stat: %v, want the permanent error", err)
	}
	if n := fb.Calls(faulty.Stat); n != 1 {
		t.Errorf("permanent error tried %d times, want 1", n)
	}
	// Not found is permanent too.
	if _, err := b.Load(context.Background(), "missing", 0, 0); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("load of a missing object: %v", err)
	}
	if n := fb.Calls(faulty.Load); n != 1 {
		t.Errorf("not-found load tried %d times, want 1", n)
	}
	if hooked != 0 || len(clock.Waits()) != 0 {
		t.Errorf("permanent errors caused %d retries and waits %v", hooked, clock.Waits())
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	clock := newClock()
	fb := faulty.New(fileBackend(t), 1,
		faulty.Fault{Op: faulty.Save, Kind: faulty.Throttle, Calls: []int{1, 2}, RetryAfter: 7 * time.Second})
	var attempts []int
	opts := clock.options()
	opts.InitialDelay = 10 * time.Millisecond
	opts.OnRetry = func(op, name string, attempt int, err error) {
		if op != "save" || name != "config" {
			t.Errorf("hook got op %q name %q", op, name)
		}
		attempts = append(attempts, attempt)
	}
	b := retry.New(fb, opts)
	save(t, b, "config", []byte("hello"))
	if got := fmt.Sprint(clock.Waits()); got != "[7s 7s]" {
		t.Errorf("waits %s, want [7s 7s]", got)
	}
	if fmt.Sprint(attempts) != "[1 2]" {
		t.Errorf("hook saw attempts %v, want [1 2]", attempts)
	}
	if n := fb.Calls(faulty.Save); n != 3 {
		t.Errorf("save called %d times, want 3", n)
	}
}

func TestBackoffGrowsThenGivesUp(t *testing.T) {
	clock := newClock()
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Stat, Kind: faulty.Error})
	opts := clock.options()
	opts.MaxAttempts = 5
	opts.InitialDelay = time.Second
	opts.MaxDelay = 5 * time.Second
	opts.Jitter = -1
	b := retry.New(fb, opts)
	_, err := b.Stat(context.Background(), "config")
	if err == nil || !strings.Contains(err.Error(), "giving up after 5 attempts") {
		t.Fatalf("stat: %v, want giving up after 5 attempts", err)
	}
	if got := fmt.Sprint(clock.Waits()); got != "[1s 2s 4s 5s]" {
		t.Errorf("waits %s, want [1s 2s 4s 5s]", got)
	}
	if n := fb.Calls(faulty.Stat); n != 5 {
		t.Errorf("stat called %d times, want 5", n)
	}
}

func TestJitterStaysInBounds(t *testing.T) {
	clock := newClock()
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Stat, Kind: faulty.Error, Times: 3})
	opts := clock.options()
	opts.InitialDelay = 8 * time.Second
	opts.Jitter = 0.5
	opts.Rand = func() float64 { return 0.999 }
	b := retry.New(fb, opts)
	save(t, fb, "x", nil)
	if _, err := b.Stat(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	for i, w := range clock.Waits() {
		full := 8 * time.Second << i
		if w < full/2 || w > full {
			t.Errorf("wait %d = %s, want within [%s, %s]", i, w, full/2, full)
		}
	}
}

func TestTotalTimeIsBounded(t *testing.T) {
	clock := newClock()
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Stat, Kind: faulty.Throttle, RetryAfter: 4 * time.Second})
	opts := clock.options()
	opts.MaxElapsed = 10 * time.Second
	opts.MaxAttempts = 100
	b := retry.New(fb, opts)
	_, err := b.Stat(context.Background(), "x")
	if err == nil || !strings.Contains(err.Error(), "giving up") {
		t.Fatalf("stat: %v, want giving up", err)
	}
	if _, ok := storage.RetryAfter(err); !ok {
		t.Errorf("final error lost its cause: %v", err)
	}
	if got := fmt.Sprint(clock.Waits()); got != "[4s 4s]" {
		t.Errorf("waits %s, want [4s 4s] (a third would pass 10s)", got)
	}
}

func TestContextEndsRetrying(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Stat, Kind: faulty.Error})
	opts := retry.Options{Clock: cancellingClock{cancel}}
	b := retry.New(fb, opts)
	_, err := b.Stat(ctx, "x")
	if !errors.Is(err, context.Canceled) || !storage.IsPermanent(err) {
		t.Fatalf("stat: %v, want context.Canceled", err)
	}
	if n := fb.Calls(faulty.Stat); n != 1 {
		t.Errorf("stat called %d times after cancel, want 1", n)
	}
}

func TestRealSleepIsContextAware(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Stat, Kind: faulty.Throttle, RetryAfter: time.Hour})
	start := time.Now()
	_, err := retry.New(fb, retry.Options{MaxElapsed: 2 * time.Hour}).Stat(ctx, "x")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stat: %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stat took %s after its context ended", d)
	}
}

// TestLoadHeals loads every range through readers that are cut short or
// reset at random points, and wants every byte back.
func TestLoadHeals(t *testing.T) {
	for _, kind := range []faulty.Kind{faulty.ShortRead, faulty.Reset} {
		t.Run(kind.String(), func(t *testing.T) {
			clock := newClock()
			inner := fileBackend(t)
			data := randomBytes(7, 300_001)
			save(t, inner, "data/pack", data)
			fb := faulty.New(inner, 3, faulty.Fault{Op: faulty.Load, Kind: kind, Probability: 0.7, AfterRandom: 40_000})
			reopens := 0
			opts := clock.options()
			opts.OnRetry = func(op, name string, attempt int, err error) {
				reopens++
				if kind == faulty.Reset && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("retry hook got %v, want the connection reset", err)
				}
			}
			b := retry.New(fb, opts)
			for _, r := range []struct{ off, n int64 }{
				{0, 0}, {0, 300_001}, {1, 0}, {12345, 200_000}, {299_999, 0}, {299_000, 1000}, {150_000, 1}, {0, 500_000},
			} {
				want := data[r.off:]
				if r.n > 0 && r.n < int64(len(want)) {
					want = want[:r.n]
				}
				got, err := load(b, "data/pack", r.off, r.n)
				if err != nil {
					t.Fatalf("load [%d,+%d]: %v", r.off, r.n, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("load [%d,+%d]: got %d bytes, want %d (or wrong content)", r.off, r.n, len(got), len(want))
				}
			}
			if fb.InjectedKind(kind) == 0 || reopens == 0 {
				t.Fatalf("no %s was injected or healed (%d injected, %d reopens)", kind, fb.InjectedKind(kind), reopens)
			}
			t.Logf("%d faults, %d reopens", fb.InjectedKind(kind), reopens)
		})
	}
}

func TestLoadThatNeverProgressesFails(t *testing.T) {
	clock := newClock()
	inner := fileBackend(t)
	save(t, inner, "obj", randomBytes(1, 1000))
	fb := faulty.New(inner, 1, faulty.Fault{Op: faulty.Load, Kind: faulty.Reset, After: 0})
	opts := clock.options()
	opts.MaxAttempts = 4
	got, err := load(retry.New(fb, opts), "obj", 0, 0)
	if !errors.Is(err, syscall.ECONNRESET) || !strings.Contains(err.Error(), "giving up after 4 attempts") {
		t.Fatalf("load: %d bytes, %v; want giving up on the connection reset", len(got), err)
	}
	if n := fb.Calls(faulty.Load); n != 4 {
		t.Errorf("load opened %d times, want 4", n)
	}
}

func TestLoadTruncatedForeverFailsLoudly(t *testing.T) {
	clock := newClock()
	inner := fileBackend(t)
	save(t, inner, "obj", randomBytes(1, 1000))
	fb := faulty.New(inner, 1, faulty.Fault{Op: faulty.Load, Kind: faulty.ShortRead, After: 0})
	opts := clock.options()
	opts.MaxAttempts = 3
	got, err := load(retry.New(fb, opts), "obj", 0, 500)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("load: %d bytes, %v; want an unexpected EOF, not short data", len(got), err)
	}
}

func TestRangePastEndOfObjectEnds(t *testing.T) {
	clock := newClock()
	inner := fileBackend(t)
	data := randomBytes(1, 100)
	save(t, inner, "obj", data)
	b := retry.New(inner, clock.options())
	got, err := load(b, "obj", 50, 100)
	if err != nil || !bytes.Equal(got, data[50:]) {
		t.Fatalf("load past the end: %d bytes, %v; want the 50 bytes there are", len(got), err)
	}
	if len(clock.Waits()) != 0 {
		t.Errorf("a range past the end caused retries: %v", clock.Waits())
	}
}

func TestPartialSaveIsRetried(t *testing.T) {
	clock := newClock()
	inner := fileBackend(t)
	fb := faulty.New(inner, 1, faulty.Fault{Op: faulty.Save, Kind: faulty.PartialSave, Calls: []int{1, 2}, After: 5000})
	b := retry.New(fb, clock.options())
	data := randomBytes(2, 20_000)
	save(t, b, "data/x", data)
	got, err := load(inner, "data/x", 0, 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("saved object differs: %d bytes, %v", len(got), err)
	}
	if fb.Calls(faulty.Save) != 3 {
		t.Errorf("save called %d times, want 3", fb.Calls(faulty.Save))
	}
}

func TestListResumesWithoutRepeats(t *testing.T) {
	clock := newClock()
	inner := fileBackend(t)
	for i := range 10 {
		save(t, inner, fmt.Sprintf("index/%02d", i), []byte{byte(i)})
	}
	fb := faulty.New(inner, 1, faulty.Fault{Op: faulty.List, Kind: faulty.Reset, Calls: []int{1, 2}, After: 4})
	b := retry.New(fb, clock.options())
	var got []string
	if err := b.List(context.Background(), "index/", func(fi storage.FileInfo) error {
		got = append(got, fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	if len(got) != 10 || got[0] != "index/00" || got[9] != "index/09" {
		t.Fatalf("listed %v, want each of the 10 objects once", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Fatalf("listed %s twice", got[i])
		}
	}
}

func TestListCallbackErrorIsNotRetried(t *testing.T) {
	clock := newClock()
	inner := fileBackend(t)
	save(t, inner, "a", nil)
	fb := faulty.New(inner, 1)
	stop := errors.New("stop")
	err := retry.New(fb, clock.options()).List(context.Background(), "", func(storage.FileInfo) error { return stop })
	if err != stop {
		t.Fatalf("list: %v, want the callback's own error", err)
	}
	if fb.Calls(faulty.List) != 1 {
		t.Errorf("list called %d times, want 1", fb.Calls(faulty.List))
	}
}

// cancellingClock ends the context instead of waiting.
type cancellingClock struct{ cancel context.CancelFunc }

func (c cancellingClock) Now() time.Time { return time.Now() }
func (c cancellingClock) After(time.Duration) <-chan time.Time {
	c.cancel()
	return nil
}
func (c cancellingClock) AfterFunc(d time.Duration, f func()) clk.Timer {
	return time.AfterFunc(d, f)
}

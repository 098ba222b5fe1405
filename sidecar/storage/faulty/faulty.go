package faulty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Op names a Backend operation.
type Op string

// The operations faults can target.
const (
	Any    Op = ""
	Save   Op = "save"
	Load   Op = "load"
	Stat   Op = "stat"
	List   Op = "list"
	Remove Op = "remove"
	Create Op = "create"
)

// Kind is what a fault does.
type Kind int

const (
	// Error makes the call fail with Fault.Err, or with a transient error.
	Error Kind = iota
	// Permanent makes the call fail with a storage.Permanent error.
	Permanent
	// Throttle makes the call fail like an HTTP 503 SlowDown / 429 whose
	// Retry-After is Fault.RetryAfter (storage.RetryAfter reports it).
	Throttle
	// Latency delays the call by Fault.Latency, then lets it through.
	Latency
	// ShortRead (Load only) lets the call succeed but ends the returned
	// reader cleanly (io.EOF) after Fault.After bytes.
	ShortRead
	// Reset (Load only) lets the call succeed but fails the returned reader
	// with a connection-reset error after Fault.After bytes. On List it
	// fails the listing after Fault.After entries.
	Reset
	// PartialSave (Save only) reads Fault.After bytes of the source, then
	// fails with a transient error without saving anything.
	PartialSave
	// LostReply (Save, Create, Remove) lets the call reach the wrapped
	// backend and, when it succeeds there, fails it with a transient
	// connection-reset error anyway: the reply was lost.
	LostReply
)

func (k Kind) String() string {
	switch k {
	case Error:
		return "error"
	case Permanent:
		return "permanent error"
	case Throttle:
		return "throttle"
	case Latency:
		return "latency"
	case ShortRead:
		return "short read"
	case Reset:
		return "connection reset"
	case PartialSave:
		return "partial save"
	case LostReply:
		return "lost reply"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Fault describes one kind of fault and when it fires. A call is hit when
// its operation matches and it is one of Calls, or every Every-th call, or
// chosen with Probability; with none of those set, every matching call is
// hit. Times, if positive, limits how often the fault fires in all.
type Fault struct {
	Op   Op
	Kind Kind
	// NamePrefix restricts the fault to objects (or list prefixes) whose
	// name starts with it.
	NamePrefix string

	// Calls are 1-based numbers of calls to Op (counted per operation over
	// the backend's life) to hit.
	Calls []int
	// Every hits every n-th call to Op.
	Every int
	// Probability hits each call with this chance (from the seeded source).
	Probability float64
	// Times bounds the number of times this fault fires (0: no bound).
	Times int

	// Err is returned by an Error fault (default: a transient error).
	Err error
	// RetryAfter is the delay a Throttle fault asks for.
	RetryAfter time.Duration
	// Latency is the delay a Latency fault adds.
	Latency time.Duration
	// After is how many bytes a ShortRead, Reset or PartialSave fault lets
	// through first (entries, for a Reset on List). With AfterRandom > 0 a
	// number in [0, AfterRandom) from the seeded source is added.
	After       int64
	AfterRandom int64
}

// Backend injects faults into the calls it passes to the backend it wraps.
// It is safe for concurrent use.
type Backend struct {
	inner storage.Backend

	// Sleep waits for Latency faults (default: a timer, cut short by ctx).
	Sleep func(ctx context.Context, d time.Duration) error

	mu       sync.Mutex
	rng      *rand.Rand
	faults   []*Fault
	fired    []int
	calls    map[Op]int
	injected map[Op]int
	byKind   map[Kind]int
}

var _ storage.Backend = (*Backend)(nil)

// New wraps b; faults are drawn from a source seeded with seed.
func New(b storage.Backend, seed uint64, faults ...Fault) *Backend {
	f := &Backend{
		inner:    b,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		calls:    make(map[Op]int),
		injected: make(map[Op]int),
		byKind:   make(map[Kind]int),
	}
	for _, fl := range faults {
		fl := fl
		f.faults = append(f.faults, &fl)
		f.fired = append(f.fired, 0)
	}
	return f
}

// Calls returns how many calls to op the backend has seen (Any: all calls).
func (f *Backend) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return count(f.calls, op)
}

// Injected returns how many faults were injected into calls to op (Any:
// into all calls).
func (f *Backend) Injected(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return count(f.injected, op)
}

// count is m[op], or the sum over all ops for Any.
func count(m map[Op]int, op Op) int {
	if op != Any {
		return m[op]
	}
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// InjectedKind returns how many faults of kind k were injected.
func (f *Backend) InjectedKind(k Kind) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byKind[k]
}

// hit is a fault chosen for one call, with its byte budget drawn.
type hit struct {
	Fault
	after int64
}

// pick counts the call and returns the faults that fire for it.
func (f *Backend) pick(op Op, name string) []hit {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	n := f.calls[op]
	var hits []hit
	for i, fl := range f.faults {
		if fl.Op != Any && fl.Op != op {
			continue
		}
		if !strings.HasPrefix(name, fl.NamePrefix) {
			continue
		}
		if fl.Times > 0 && f.fired[i] >= fl.Times {
			continue
		}
		if !f.matches(fl, n) {
			continue
		}
		if !applies(fl.Kind, op) {
			continue
		}
		f.fired[i]++
		f.injected[op]++
		f.byKind[fl.Kind]++
		h := hit{Fault: *fl, after: fl.After}
		if fl.AfterRandom > 0 {
			h.after += f.rng.Int64N(fl.AfterRandom)
		}
		hits = append(hits, h)
	}
	return hits
}

func (f *Backend) matches(fl *Fault, n int) bool {
	selective := len(fl.Calls) > 0 || fl.Every > 0 || fl.Probability > 0
	if !selective {
		return true
	}
	for _, c := range fl.Calls {
		if c == n {
			return true
		}
	}
	if fl.Every > 0 && n%fl.Every == 0 {
		return true
	}
	return fl.Probability > 0 && f.rng.Float64() < fl.Probability
}

// applies reports whether a fault of kind k makes sense for op.
func applies(k Kind, op Op) bool {
	switch k {
	case ShortRead:
		return op == Load
	case Reset:
		return op == Load || op == List
	case PartialSave:
		return op == Save
	case LostReply:
		return op == Save || op == Create || op == Remove
	}
	return true
}

// before applies the faults that act before the call reaches the inner
// backend: latency, then the first error-like fault.
func (f *Backend) before(ctx context.Context, op Op, name string, hits []hit) error {
	for _, h := range hits {
		if h.Kind == Latency {
			if err := f.sleep(ctx, h.Latency); err != nil {
				return err
			}
		}
	}
	for _, h := range hits {
		switch h.Kind {
		case Error:
			if h.Err != nil {
				return h.Err
			}
			return fmt.Errorf("%s %s: injected transient failure", op, name)
		case Permanent:
			return storage.Permanent(fmt.Errorf("%s %s: injected permanent failure", op, name))
		case Throttle:
			return storage.WithRetryAfter(fmt.Errorf("%s %s: injected 503 SlowDown", op, name), h.RetryAfter)
		}
	}
	return nil
}

func (f *Backend) sleep(ctx context.Context, d time.Duration) error {
	if f.Sleep != nil {
		return f.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func find(hits []hit, k Kind) (hit, bool) {
	for _, h := range hits {
		if h.Kind == k {
			return h, true
		}
	}
	return hit{}, false
}

// ResetError returns the connection-reset error that Reset faults inject:
// errors.Is(err, syscall.ECONNRESET) holds for it.
func ResetError() error {
	return &net.OpError{Op: "read", Net: "tcp", Err: &netSyscallError{syscall.ECONNRESET}}
}

type netSyscallError struct{ errno syscall.Errno }

func (e *netSyscallError) Error() string { return "injected: " + e.errno.Error() }
func (e *netSyscallError) Unwrap() error { return e.errno }

// Save implements storage.Backend.
func (f *Backend) Save(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	hits := f.pick(Save, name)
	if err := f.before(ctx, Save, name, hits); err != nil {
		return err
	}
	if h, ok := find(hits, PartialSave); ok {
		n := min(h.after, size)
		if _, err := io.Copy(io.Discard, io.NewSectionReader(r, 0, n)); err != nil {
			return fmt.Errorf("save %s: %w", name, err)
		}
		return fmt.Errorf("save %s: injected failure after reading %d of %d bytes: %w", name, n, size, ResetError())
	}
	return lost(hits, Save, name, f.inner.Save(ctx, name, r, size))
}

// lost turns the success of a call hit by LostReply into a transient error.
func lost(hits []hit, op Op, name string, err error) error {
	if _, ok := find(hits, LostReply); ok && err == nil {
		return fmt.Errorf("%s %s: injected lost reply after success: %w", op, name, ResetError())
	}
	return err
}

var _ storage.Creator = (*Backend)(nil)

// Create implements storage.Creator when the wrapped backend does
// (storage.AsCreator tells).
func (f *Backend) Create(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	hits := f.pick(Create, name)
	if err := f.before(ctx, Create, name, hits); err != nil {
		return err
	}
	c, ok := storage.AsCreator(f.inner)
	if !ok {
		return storage.Permanent(fmt.Errorf("create %s: %s cannot create objects conditionally", name, f.inner.Location()))
	}
	return lost(hits, Create, name, c.Create(ctx, name, r, size))
}

// Inner returns the wrapped backend.
func (f *Backend) Inner() storage.Backend { return f.inner }

// Load implements storage.Backend.
func (f *Backend) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	hits := f.pick(Load, name)
	if err := f.before(ctx, Load, name, hits); err != nil {
		return nil, err
	}
	rc, err := f.inner.Load(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	if h, ok := find(hits, ShortRead); ok {
		return &cutReader{rc: rc, left: h.after, err: io.EOF}, nil
	}
	if h, ok := find(hits, Reset); ok {
		return &cutReader{rc: rc, left: h.after, err: fmt.Errorf("read %s: %w", name, ResetError())}, nil
	}
	return rc, nil
}

// cutReader passes left bytes through, then returns err.
type cutReader struct {
	rc   io.ReadCloser
	left int64
	err  error
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, c.err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.rc.Close() }

// Stat implements storage.Backend.
func (f *Backend) Stat(ctx context.Context, name string) (storage.FileInfo, error) {
	if err := f.before(ctx, Stat, name, f.pick(Stat, name)); err != nil {
		return storage.FileInfo{}, err
	}
	return f.inner.Stat(ctx, name)
}

// errStopList ends the inner listing when a Reset fault fires.
var errStopList = errors.New("faulty: list cut")

// List implements storage.Backend.
func (f *Backend) List(ctx context.Context, prefix string, fn func(storage.FileInfo) error) error {
	hits := f.pick(List, prefix)
	if err := f.before(ctx, List, prefix, hits); err != nil {
		return err
	}
	h, cut := find(hits, Reset)
	if !cut {
		return f.inner.List(ctx, prefix, fn)
	}
	var n int64
	err := f.inner.List(ctx, prefix, func(fi storage.FileInfo) error {
		if n >= h.after {
			return errStopList
		}
		n++
		return fn(fi)
	})
	if err == nil || errors.Is(err, errStopList) {
		return fmt.Errorf("list %s: injected failure after %d entries: %w", prefix, n, ResetError())
	}
	return err
}

// Remove implements storage.Backend.
func (f *Backend) Remove(ctx context.Context, name string) error {
	hits := f.pick(Remove, name)
	if err := f.before(ctx, Remove, name, hits); err != nil {
		return err
	}
	return lost(hits, Remove, name, f.inner.Remove(ctx, name))
}

// Location implements storage.Backend.
func (f *Backend) Location() string { return "faulty:" + f.inner.Location() }

// Close implements storage.Backend.
func (f *Backend) Close() error { return f.inner.Close() }

// Package clock is the one shape of time that Amber's packages share, so
// that leases, schedules, lag and retention are tested without sleeping.
// Production code takes a Clock and uses Real; tests use a Fake they move
// by hand. It imports nothing of Amber's and is imported by both sides of
// the plugin contract.
package clock

import (
	"context"
	"sync"
	"time"
)

// Clock tells the time and waits.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop cancels the call; it reports whether the call was still pending.
	Stop() bool
	// Reset makes the call happen d from now; it reports whether it was
	// still pending.
	Reset(d time.Duration) bool
}

// Real is the system clock.
var Real Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (realClock) AfterFunc(d time.Duration, f func()) Timer {
	return time.AfterFunc(d, f)
}

// Or returns c, or Real when c is nil.
func Or(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}

// Sleep waits d on c, or until ctx ends (then it returns ctx.Err()).
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-Or(c).After(d):
		return nil
	}
}

// Fake is a clock that moves only when told to. Timers due at or before
// the new time fire, in order, during Advance and Set.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

// NewFake returns a Fake reading t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the clock forward by d.
func (f *Fake) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// Set moves the clock to t (which may be earlier: a clock stepped back).
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	f.now = t
	var due []*fakeTimer
	keep := f.timers[:0]
	for _, tm := range f.timers {
		if !tm.at.After(t) {
			due = append(due, tm)
		} else {
			keep = append(keep, tm)
		}
	}
	f.timers = keep
	f.mu.Unlock()
	for _, tm := range due {
		tm.fire()
	}
}

func (f *Fake) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	f.add(d, func() { ch <- f.Now() }, false)
	return ch
}

func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer { return f.add(d, fn, true) }

func (f *Fake) add(d time.Duration, fn func(), async bool) *fakeTimer {
	tm := &fakeTimer{f: f, fn: fn, async: async}
	f.mu.Lock()
	tm.at = f.now.Add(d)
	f.timers = append(f.timers, tm)
	f.mu.Unlock()
	if d <= 0 {
		f.Set(f.Now())
	}
	return tm
}

type fakeTimer struct {
	f     *Fake
	at    time.Time
	fn    func()
	async bool
}

func (t *fakeTimer) fire() {
	if t.async {
		go t.fn()
	} else {
		t.fn()
	}
}

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	for i, tm := range t.f.timers {
		if tm == t {
			t.f.timers = append(t.f.timers[:i], t.f.timers[i+1:]...)
			return true
		}
	}
	return false
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	pending := t.Stop()
	t.f.mu.Lock()
	t.at = t.f.now.Add(d)
	t.f.timers = append(t.f.timers, t)
	t.f.mu.Unlock()
	return pending
}

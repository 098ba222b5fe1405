package controllers

import (
	"testing"
	"time"
)

// TestRandomPoint: a random drill's target lies in the window, in whole
// seconds (a Restore's pointInTime keeps no fraction), never before the
// window's start even when that start has a fraction.
func TestRandomPoint(t *testing.T) {
	from := time.Date(2026, 11, 29, 4, 0, 0, 700_000_000, time.UTC)
	to := from.Add(10 * time.Minute)
	for _, tc := range []struct {
		name string
		n    func(int64) int64
		want time.Time
	}{
		{"start of the window: the next whole second", func(int64) int64 { return 0 }, from.Truncate(time.Second).Add(time.Second)},
		{"inside: truncated", func(int64) int64 { return int64(90*time.Second + 500*time.Millisecond) }, time.Date(2026, 11, 29, 4, 1, 31, 0, time.UTC)},
		{"end of the window", func(k int64) int64 { return k - 1 }, to.Truncate(time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := randomPoint(from, to, tc.n); !got.Equal(tc.want) {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	for i := 0; i < 1000; i++ {
		at := randomPoint(from, to, func(k int64) int64 { return int64(i) * k / 1000 })
		if at.Before(from) || !at.Before(to) || at.Nanosecond() != 0 {
			t.Fatalf("random point %s outside [%s, %s) or with a fraction", at, from, to)
		}
	}
}

package repo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestStartPrefixesCover: the prefixes startPrefixes gives cover every start
// in the range, and each lists at most 16 times the positions of the range
// (plus one digit's worth when the range is tiny), also for ranges that
// straddle a round number.
func TestStartPrefixesCover(t *testing.T) {
	check := func(from, last uint64) {
		t.Helper()
		ps := startPrefixes(from, last)
		if len(ps) == 0 || len(ps) > 2 {
			t.Fatalf("[%#x, %#x]: %d prefixes", from, last, len(ps))
		}
		var listed float64
		for _, p := range ps {
			listed += math.Pow(16, float64(16-len(p)))
		}
		if span := float64(last-from) + 1; listed > 16*span+16 {
			t.Fatalf("[%#x, %#x]: prefixes %v list %g positions for a range of %g", from, last, ps, listed, span)
		}
		for _, x := range []uint64{from, last, from + (last-from)/2, from + (last-from)/3} {
			h := fmt.Sprintf("%016x", x)
			ok := false
			for _, p := range ps {
				ok = ok || strings.HasPrefix(h, p)
			}
			if !ok {
				t.Fatalf("[%#x, %#x]: %#x is under none of %v", from, last, x, ps)
			}
		}
	}
	check(0x3000000, 0x3ffffff)
	check(0x0ff000000, 0x1007fffff)    // straddles 0x100000000
	check(0xfffffff000, 0x10000000fff) // straddles 0x10000000000
	check(0x1000, 0x1000)
	check(0x4000000, 0xbffffff)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		from := rng.Uint64() >> rng.UintN(64)
		n := rng.Uint64() >> rng.UintN(64)
		if from+n < from {
			continue
		}
		check(from, from+n)
	}
}

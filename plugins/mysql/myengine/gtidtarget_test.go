package myengine

import (
	"errors"
	"strings"
	"testing"
)

// TestGTIDTarget walks GTID targets over sequences of transactions: where
// replay stops, inclusive and exclusive, one domain and two, a skipped
// sequence number, transactions of other domains, a start already at or
// past the target, and targets that are not a point of the binlog.
func TestGTIDTarget(t *testing.T) {
	type txn struct {
		domain uint32
		seq    uint64
	}
	for _, c := range []struct {
		name      string
		target    string
		inclusive bool
		from      string
		txns      []txn
		applied   int    // how many of txns are applied before replay stops
		err       string // from next, at transaction applied
	}{
		{"inclusive", "0-1-5", true, "0-1-2", []txn{{0, 3}, {0, 4}, {0, 5}, {0, 6}, {0, 7}}, 3, ""},
		{"exclusive", "0-1-5", false, "0-1-2", []txn{{0, 3}, {0, 4}, {0, 5}, {0, 6}}, 2, ""},
		{"skipped sequence number", "0-1-5", true, "0-1-2", []txn{{0, 3}, {0, 4}, {0, 7}, {0, 8}}, 2, ""},
		{"other domains pass through", "0-1-5", true, "0-1-2", []txn{{2, 100}, {0, 5}, {2, 101}}, 2, ""},
		{"two domains", "0-1-5,1-2-3", true, "0-1-1,1-2-1", []txn{{0, 2}, {1, 2}, {0, 5}, {1, 3}, {0, 6}}, 4, ""},
		{"two domains, exclusive", "0-1-5,1-2-3", false, "0-1-1,1-2-1", []txn{{0, 2}, {1, 2}, {0, 5}, {1, 3}, {0, 6}}, 3, ""},
		{"not a point", "0-1-5,1-2-3", true, "0-1-1,1-2-1", []txn{{0, 5}, {0, 6}, {1, 3}}, 1, "not a point of the archived binlog"},
		{"passed before the others", "0-1-5,1-2-3", true, "0-1-1,1-2-1", []txn{{0, 7}}, 0, "not a point of the archived binlog"},
		{"start at the target", "0-1-5", true, "0-1-5", []txn{{0, 6}}, 0, ""},
		{"a domain new since the start", "0-1-5,1-2-3", true, "0-1-1", []txn{{1, 1}, {0, 5}, {1, 3}, {1, 4}}, 3, ""},
		{"no start position, first transaction past", "0-1-5", true, "", []txn{{0, 9}}, 0, "records no GTID position in domain 0"},
		{"no start position, then past", "0-1-5", true, "", []txn{{0, 4}, {0, 9}}, 1, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, err := newGTIDTarget(c.target, c.inclusive, c.from)
			if err != nil {
				t.Fatal(err)
			}
			applied := 0
			for _, x := range c.txns {
				keep, err := g.next(x.domain, 1, x.seq)
				if err != nil {
					if c.err == "" || applied != c.applied || !strings.Contains(err.Error(), c.err) {
						t.Fatalf("after %d applied: %v (want %d applied, error %q)", applied, err, c.applied, c.err)
					}
					return
				}
				if !keep {
					break
				}
				applied++
			}
			if c.err != "" {
				t.Fatalf("no error, want %q", c.err)
			}
			if applied != c.applied || !g.done() {
				t.Fatalf("applied %d (done %v), want %d and done", applied, g.done(), c.applied)
			}
		})
	}

	for _, c := range []struct{ target, from string }{{"0-1-5", "0-1-9"}, {"0-1-5,1-2-3", "0-1-2,1-2-4"}} {
		if _, err := newGTIDTarget(c.target, true, c.from); !errors.Is(err, ErrTargetBeforeStart) || !strings.Contains(err.Error(), "restore an older backup") {
			t.Errorf("target %s from %s: %v, want ErrTargetBeforeStart", c.target, c.from, err)
		}
	}
	if _, err := newGTIDTarget("0-1-5", false, "0-1-5"); !errors.Is(err, ErrTargetBeforeStart) {
		t.Errorf("exclusive target at the start: %v, want ErrTargetBeforeStart", err)
	}
	var none *gtidTarget
	if none.done() {
		t.Error("a walk without a target is done")
	}

	for _, bad := range []string{"", "abc", "0-1", "0-1-x", "0-1-5,0-2-6", "3E11FA47-71CA-11E1-9E33-C80AA9429562:23"} {
		if _, err := newGTIDTarget(bad, true, "0-1-1"); err == nil {
			t.Errorf("GTID target %q accepted", bad)
		} else if strings.Contains(bad, ":") && !strings.Contains(err.Error(), "MySQL GTID sets are not supported") {
			t.Errorf("GTID target %q: %v", bad, err)
		}
	}
}

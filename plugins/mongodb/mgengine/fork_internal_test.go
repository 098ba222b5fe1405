package mgengine

import (
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestFork: the decision of fork.go on the facts a resume reads, with
// and without terms.
func TestFork(t *testing.T) {
	p := func(sec uint32) Pos { return Pos{T: sec, I: 1} }
	e := func(sec uint32, term int64) *HistEntry { return &HistEntry{Pos: p(sec), Term: term, HasTerm: term > 0} }
	last := func(sec uint32, term int64) HistEntry { return *e(sec, term) }
	for _, c := range []struct {
		name   string
		f      ForkFacts
		forked bool
		branch Pos
	}{
		{"the entry is there, same term", ForkFacts{Last: last(10, 3), At: e(10, 3)}, false, Pos{}},
		{"the entry is there, no terms (FerretDB)", ForkFacts{Last: last(10, 0), At: e(10, 0)}, false, Pos{}},
		{"the entry is there, the archive knows no term", ForkFacts{Last: last(10, 0), At: e(10, 4)}, false, Pos{}},
		{"empty oplog: nothing to compare", ForkFacts{Last: last(10, 3)}, false, Pos{}},
		{"rolled over: the oldest entry is newer", ForkFacts{Last: last(10, 3), Oldest: p(12)}, false, Pos{}},
		{"gone while older entries remain: rolled back", ForkFacts{Last: last(10, 3), Common: e(8, 3), Oldest: p(2)}, true, p(8).Next()},
		{"gone, no terms", ForkFacts{Last: last(10, 0), Common: e(9, 0), Oldest: p(2)}, true, p(9).Next()},
		{"the same ts with another term", ForkFacts{Last: last(10, 3), At: e(10, 4), Common: e(7, 3), Oldest: p(2)}, true, p(7).Next()},
		{"no shared entry left: from the oldest", ForkFacts{Last: last(10, 3), At: e(10, 5), Oldest: p(9)}, true, p(9)},
	} {
		forked, branch := c.f.Fork()
		if forked != c.forked || branch != c.branch {
			t.Errorf("%s: forked %v at %s, want %v at %s", c.name, forked, branch.Text(), c.forked, c.branch.Text())
		}
	}
	if got := lastOf(p(10).Next()); got != p(10) {
		t.Errorf("lastOf(%s) = %s", p(10).Next().Text(), got.Text())
	}
	for _, c := range []struct {
		term    int64
		hasTerm bool
		branch  Pos
		size    int
	}{{0, false, Pos{}, 8}, {7, true, Pos{}, 16}, {0, false, p(8), 24}, {7, true, p(8), 24}} {
		tok := p(10).Next().EndToken(c.term, c.hasTerm, c.branch)
		q, term, hasTerm, branch, err := ParseEndToken(tok)
		if err != nil || len(tok) != c.size || q != p(10).Next() || term != c.term || hasTerm != c.hasTerm || branch != c.branch {
			t.Errorf("EndToken(%d, %v, %s): %d bytes, read back %s %d %v %s %v", c.term, c.hasTerm, c.branch.Text(), len(tok), q.Text(), term, hasTerm, branch.Text(), err)
		}
	}
}

// TestEpochAt: the epoch a dump or a freeze names for its position from
// the archived end and what its server's oplog says about the last
// archived entry.
func TestEpochAt(t *testing.T) {
	p := func(sec uint32) Pos { return Pos{T: sec, I: 1} }
	e := func(sec uint32, term int64) *HistEntry { return &HistEntry{Pos: p(sec), Term: term, HasTerm: term > 0} }
	last := func(sec uint32, term int64) HistEntry { return *e(sec, term) }
	arch := func(epoch uint32, term int64, branch Pos) Archived {
		return Archived{End: p(10).Next(), Epoch: epoch, Term: term, HasTerm: term > 0, Branch: branch}
	}
	for _, c := range []struct {
		name string
		a    Archived
		f    ForkFacts
		at   Pos
		want uint32
	}{
		{"nothing archived", Archived{}, ForkFacts{}, p(20), 1},
		{"the same history", arch(1, 3, Pos{}), ForkFacts{Last: last(10, 3), At: e(10, 3)}, p(20), 1},
		{"the same history in epoch 3", arch(3, 5, p(4)), ForkFacts{Last: last(10, 5), At: e(10, 5)}, p(20), 3},
		{"a rollback the archiver has not found yet", arch(1, 3, Pos{}),
			ForkFacts{Last: last(10, 3), Common: e(8, 3), Oldest: p(2), Newest: e(15, 4)}, p(15).Next(), 2},
		{"a rollback, no terms (FerretDB)", arch(2, 0, p(4)),
			ForkFacts{Last: last(10, 0), Common: e(8, 0), Oldest: p(2), Newest: e(15, 0)}, p(15).Next(), 3},
		{"a rollback, the position before the fork point", arch(1, 3, Pos{}),
			ForkFacts{Last: last(10, 3), Common: e(8, 3), Oldest: p(2), Newest: e(8, 3)}, p(8).Next(), 1},
		{"a lagging member without the last archived entry", arch(2, 3, p(4)),
			ForkFacts{Last: last(10, 3), Common: e(7, 3), Oldest: p(2), Newest: e(7, 3)}, p(7).Next(), 2},
		{"a lagging member, no terms", arch(1, 0, Pos{}),
			ForkFacts{Last: last(10, 0), Common: e(7, 0), Oldest: p(2), Newest: e(7, 0)}, p(7).Next(), 1},
		{"a member behind the branch of the archived epoch", arch(2, 3, p(6)),
			ForkFacts{Last: last(10, 3), Common: e(5, 3), Oldest: p(2), Newest: e(5, 3)}, p(5).Next(), 1},
		{"newest older but of a newer term: forked", arch(1, 3, Pos{}),
			ForkFacts{Last: last(10, 3), Common: e(7, 3), Oldest: p(2), Newest: e(9, 4)}, p(9).Next(), 2},
		{"rolled past the archived end", arch(1, 3, Pos{}), ForkFacts{Last: last(10, 3), Oldest: p(12), Newest: e(20, 3)}, p(20).Next(), 1},
	} {
		if got := EpochAt(c.a, c.f, c.at); got != c.want {
			t.Errorf("%s: epoch %d, want %d", c.name, got, c.want)
		}
	}
}

// TestOplogCommand: the commands a replay runs for command entries in
// the shapes MongoDB 4.4+ logs them.
func TestOplogCommand(t *testing.T) {
	uuid := bson.Binary{Subtype: 4, Data: []byte("0123456789abcdef")}
	spec := bson.D{{Key: "v", Value: int32(2)}, {Key: "key", Value: bson.D{{Key: "a", Value: int32(1)}}}, {Key: "name", Value: "a_1"}, {Key: "unique", Value: true}}
	want := `{"createIndexes":"c","indexes":[{"key":{"a":1},"name":"a_1","unique":true}]}`
	for _, c := range []struct {
		name string
		o    bson.D
		want string // "" when nothing is to run
		err  bool
	}{
		{"createIndexes, one spec inline (empty collection)", append(bson.D{{Key: "createIndexes", Value: "c"}}, spec...), want, false},
		{"commitIndexBuild", bson.D{{Key: "commitIndexBuild", Value: "c"}, {Key: "indexBuildUUID", Value: uuid}, {Key: "indexes", Value: bson.A{spec}}}, want, false},
		{"startIndexBuild", bson.D{{Key: "startIndexBuild", Value: "c"}, {Key: "indexBuildUUID", Value: uuid}, {Key: "indexes", Value: bson.A{spec}}}, "", false},
		{"abortIndexBuild", bson.D{{Key: "abortIndexBuild", Value: "c"}, {Key: "indexBuildUUID", Value: uuid}, {Key: "indexes", Value: bson.A{spec}}}, "", false},
		{"dropIndexes", bson.D{{Key: "dropIndexes", Value: "c"}, {Key: "index", Value: "a_1"}}, `{"dropIndexes":"c","index":"a_1"}`, false},
		{"create", bson.D{{Key: "create", Value: "c"}, {Key: "idIndex", Value: bson.D{{Key: "v", Value: int32(2)}, {Key: "key", Value: bson.D{{Key: "_id", Value: int32(1)}}}, {Key: "name", Value: "_id_"}}}},
			`{"create":"c","idIndex":{"v":2,"key":{"_id":1},"name":"_id_"}}`, false},
		{"drop", bson.D{{Key: "drop", Value: "c"}}, `{"drop":"c"}`, false},
		{"renameCollection over a collection (dropTarget: its UUID)",
			bson.D{{Key: "renameCollection", Value: "d.a"}, {Key: "to", Value: "d.b"}, {Key: "stayTemp", Value: false}, {Key: "dropTarget", Value: uuid}},
			`{"renameCollection":"d.a","to":"d.b","stayTemp":false,"dropTarget":true}`, false},
		// collMod as MongoDB logs it: the command in o, the old values in
		// o2 (collectionOptions_old, expireAfterSeconds_old), not read.
		{"collMod: a validator", bson.D{{Key: "collMod", Value: "c"}, {Key: "validator", Value: bson.D{{Key: "a", Value: bson.D{{Key: "$type", Value: "int"}}}}},
			{Key: "validationLevel", Value: "moderate"}, {Key: "validationAction", Value: "warn"}},
			`{"collMod":"c","validator":{"a":{"$type":"int"}},"validationLevel":"moderate","validationAction":"warn"}`, false},
		{"collMod: a TTL index's expireAfterSeconds", bson.D{{Key: "collMod", Value: "c"}, {Key: "index", Value: bson.D{{Key: "name", Value: "ts_1"}, {Key: "expireAfterSeconds", Value: int64(60)}}}},
			`{"collMod":"c","index":{"name":"ts_1","expireAfterSeconds":60}}`, false},
		{"an unknown command", bson.D{{Key: "emptycapped", Value: "c"}}, "", true},
	} {
		got, err := oplogCommand(c.o)
		if (err != nil) != c.err {
			t.Errorf("%s: error %v", c.name, err)
			continue
		}
		s := ""
		if got != nil {
			j, err := bson.MarshalExtJSON(got, false, false)
			if err != nil {
				t.Fatal(err)
			}
			s = string(j)
		}
		if s != c.want {
			t.Errorf("%s:\n got  %s\n want %s", c.name, s, c.want)
		}
	}
}

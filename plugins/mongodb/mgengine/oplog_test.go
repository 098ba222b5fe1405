package mgengine

import (
	"fmt"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The update shapes below follow MongoDB's documented oplog formats: $v 2
// "diff" updates (MongoDB 5.0+: sections d, u, i, s<field>; array diffs
// with a: true, l, u<index>, s<index>), $v 1 modifier updates (what
// FerretDB's emulation writes) and whole-document replacements.
func TestApplyDiff(t *testing.T) {
	doc := bson.D{
		{Key: "_id", Value: 1}, {Key: "a", Value: 1}, {Key: "b", Value: "x"},
		{Key: "sub", Value: bson.D{{Key: "k", Value: 1}, {Key: "gone", Value: true}}},
		{Key: "arr", Value: bson.A{10, 20, bson.D{{Key: "z", Value: 1}}, 40}},
		{Key: "c", Value: 3},
	}
	for _, tc := range []struct {
		name string
		diff bson.D
		want bson.D
		err  string
	}{
		{"delete", bson.D{{Key: "d", Value: bson.D{{Key: "a", Value: false}, {Key: "missing", Value: false}}}},
			bson.D{{Key: "_id", Value: 1}, {Key: "b", Value: "x"}, doc[3], doc[4], doc[5]}, ""},
		{"update in place and append", bson.D{{Key: "u", Value: bson.D{{Key: "b", Value: "y"}, {Key: "new", Value: 5}}}},
			bson.D{doc[0], doc[1], {Key: "b", Value: "y"}, doc[3], doc[4], doc[5], {Key: "new", Value: 5}}, ""},
		{"insert moves to the end", bson.D{{Key: "i", Value: bson.D{{Key: "a", Value: 9}}}},
			bson.D{doc[0], doc[2], doc[3], doc[4], doc[5], {Key: "a", Value: 9}}, ""},
		{"sub-document", bson.D{{Key: "ssub", Value: bson.D{{Key: "d", Value: bson.D{{Key: "gone", Value: false}}}, {Key: "u", Value: bson.D{{Key: "k", Value: 2}}}}}},
			bson.D{doc[0], doc[1], doc[2], {Key: "sub", Value: bson.D{{Key: "k", Value: 2}}}, doc[4], doc[5]}, ""},
		{"array: set, grow, nested", bson.D{{Key: "sarr", Value: bson.D{{Key: "a", Value: true}, {Key: "u1", Value: 21}, {Key: "s2", Value: bson.D{{Key: "i", Value: bson.D{{Key: "y", Value: 2}}}}}, {Key: "u5", Value: 60}}}},
			bson.D{doc[0], doc[1], doc[2], doc[3], {Key: "arr", Value: bson.A{10, 21, bson.D{{Key: "z", Value: 1}, {Key: "y", Value: 2}}, 40, nil, 60}}, doc[5]}, ""},
		{"array: truncate", bson.D{{Key: "sarr", Value: bson.D{{Key: "a", Value: true}, {Key: "l", Value: int32(2)}}}},
			bson.D{doc[0], doc[1], doc[2], doc[3], {Key: "arr", Value: bson.A{10, 20}}, doc[5]}, ""},
		{"sub-diff of a missing field", bson.D{{Key: "snope", Value: bson.D{{Key: "u", Value: bson.D{{Key: "x", Value: 1}}}}}}, nil, "lacks"},
		{"unknown section", bson.D{{Key: "q", Value: bson.D{}}}, nil, "unknown diff section"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ApplyDiff(doc, tc.diff)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
			// Applying the same diff again gives the same document
			// (idempotent), except inserts, which move fields once.
			again, err := ApplyDiff(got, tc.diff)
			if err == nil && fmt.Sprint(again) != fmt.Sprint(got) && tc.name != "array: set, grow, nested" {
				t.Errorf("applied twice: %v, want %v", again, got)
			}
		})
	}
	if fmt.Sprint(doc[4].Value) != fmt.Sprint(bson.A{10, 20, bson.D{{Key: "z", Value: 1}}, 40}) {
		t.Errorf("ApplyDiff changed its input: %v", doc)
	}
}

func raw(t *testing.T, v any) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUpdateOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    bson.D
		kind string
	}{
		{"v2 diff (MongoDB 5+)", bson.D{{Key: "$v", Value: int32(2)}, {Key: "diff", Value: bson.D{{Key: "u", Value: bson.D{{Key: "a", Value: 1}}}}}}, "diff"},
		{"v1 $set (FerretDB, MongoDB 4.x)", bson.D{{Key: "$v", Value: int32(1)}, {Key: "$set", Value: bson.D{{Key: "a", Value: 1}}}}, "modifiers"},
		{"$unset without $v", bson.D{{Key: "$unset", Value: bson.D{{Key: "a", Value: true}}}}, "modifiers"},
		{"replacement", bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: 1}}, "replace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, upd, err := UpdateOf(raw(t, tc.o))
			if err != nil {
				t.Fatal(err)
			}
			if kind != tc.kind {
				t.Fatalf("kind %s, want %s", kind, tc.kind)
			}
			if kind == "modifiers" {
				for _, e := range upd.(bson.D) {
					if e.Key == "$v" {
						t.Errorf("$v passed on to update: %v", upd)
					}
				}
			}
		})
	}
	if _, _, err := UpdateOf(raw(t, bson.D{{Key: "$v", Value: int32(2)}})); err == nil {
		t.Error("a $v 2 update without diff was accepted")
	}
}

// An applyOps command entry (how MongoDB logs a transaction's writes)
// decodes into its inner entries.
func TestEntryShapes(t *testing.T) {
	e := bson.D{
		{Key: "op", Value: "c"}, {Key: "ns", Value: "admin.$cmd"}, {Key: "ts", Value: bson.Timestamp{T: 1700000000, I: 7}}, {Key: "t", Value: int64(3)},
		{Key: "o", Value: bson.D{{Key: "applyOps", Value: bson.A{
			bson.D{{Key: "op", Value: "i"}, {Key: "ns", Value: "app.c"}, {Key: "o", Value: bson.D{{Key: "_id", Value: 1}}}},
			bson.D{{Key: "op", Value: "u"}, {Key: "ns", Value: "app.c"}, {Key: "o", Value: bson.D{{Key: "$v", Value: int32(2)}, {Key: "diff", Value: bson.D{}}}}, {Key: "o2", Value: bson.D{{Key: "_id", Value: 1}}}},
		}}}},
	}
	var got Entry
	if err := bson.Unmarshal(raw(t, e), &got); err != nil {
		t.Fatal(err)
	}
	if got.Op != "c" || got.TS.I != 7 || got.Term != 3 {
		t.Fatalf("entry %+v", got)
	}
	ops, err := got.O.Lookup("applyOps").Array().Values()
	if err != nil || len(ops) != 2 {
		t.Fatalf("applyOps: %v %v", ops, err)
	}
	var inner Entry
	if err := bson.Unmarshal(ops[1].Document(), &inner); err != nil {
		t.Fatal(err)
	}
	if inner.Op != "u" || inner.NS != "app.c" || inner.O2.Lookup("_id").Int32() != 1 {
		t.Errorf("inner entry %+v", inner)
	}
}

func TestPositions(t *testing.T) {
	for _, s := range []string{"Timestamp(1700000000, 3)", "1700000000:3", "1700000000.3", " Timestamp(1700000000,3) "} {
		p, err := ParseText(s)
		if err != nil || p != (Pos{T: 1700000000, I: 3}) {
			t.Errorf("ParseText(%q) = %v, %v", s, p, err)
		}
	}
	p := Pos{T: 1700000000, I: 3}
	if p.Offset() != 1700000000<<32|3 || FromOffset(p.Offset()) != p || p.Text() != "Timestamp(1700000000, 3)" {
		t.Errorf("%v: offset %d text %s", p, p.Offset(), p.Text())
	}
	if q, err := ParseToken(p.Token()); err != nil || q != p {
		t.Errorf("token round trip: %v %v", q, err)
	}
	for _, s := range []string{"", "Timestamp(1, 2", "x:1", "1:y", "0/3000060"} {
		if _, err := ParseText(s); err == nil {
			t.Errorf("ParseText(%q) accepted", s)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ uri, pw string }{
		{"mongodb://amber:s3cr%40t@h:27017/db", "s3cr@t"},
		{"mongodb://amber:plain@h1:1,h2:2/db?replicaSet=rs", "plain"},
		{"mongodb+srv://u:p4ss@cluster.example/", "p4ss"},
		{"mongodb://h:27017/db", ""},
		{"postgres://amber:Pg-Pw@127.0.0.1/app", "Pg-Pw"},
	} {
		if got := password(tc.uri); got != tc.pw {
			t.Errorf("password(%s) = %q, want %q", tc.uri, got, tc.pw)
		}
		if tc.pw != "" {
			msg := "error near " + tc.uri + " and " + tc.pw
			if r := redact(msg, tc.uri); strings.Contains(r, tc.pw) || strings.Contains(r, "s3cr%40t") {
				t.Errorf("redact left the password: %s", r)
			}
			if s := fmt.Sprintf("%v %s %#v", URI(tc.uri), URI(tc.uri), URI(tc.uri)); strings.Contains(s, tc.pw) {
				t.Errorf("URI printed its password: %s", s)
			}
		}
	}
}

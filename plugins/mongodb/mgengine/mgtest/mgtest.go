// Package mgtest holds what tests of the MongoDB plugin share: a fixture
// of every BSON type and a description of a database that two equal
// databases share (Checksums). It is for tests only.
package mgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TypesDocs are documents holding every common BSON type and its edge
// values: Decimal128, binary subtypes, dates, ObjectId, regex, timestamps,
// nested arrays and documents, and one large document of about bigBytes.
// With ferretDB set, the values FerretDB 1.24 refuses or crashes on are
// left out: Decimal128, MinKey, MaxKey, JavaScript code and arrays
// directly inside arrays.
func TypesDocs(bigBytes int, ferretDB bool) []any {
	dec := func(s string) bson.Decimal128 {
		d, err := bson.ParseDecimal128(s)
		if err != nil {
			panic(err)
		}
		return d
	}
	oid, _ := bson.ObjectIDFromHex("5f1b2c3d4e5f60718293a4b5")
	uuid := bytes.Repeat([]byte{0xab}, 16)
	big := make([]byte, bigBytes)
	_, _ = rand.Read(big)
	docs := []any{
		bson.D{{Key: "_id", Value: 1}, {Key: "kind", Value: "numbers"},
			{Key: "i32", Value: int32(math.MinInt32)}, {Key: "i32max", Value: int32(math.MaxInt32)},
			{Key: "i64", Value: int64(math.MinInt64)}, {Key: "i64max", Value: int64(math.MaxInt64)},
			{Key: "f", Value: 3.141592653589793}, {Key: "fneg0", Value: math.Copysign(0, -1)},
			{Key: "fmax", Value: math.MaxFloat64}, {Key: "fsmall", Value: math.SmallestNonzeroFloat64},
			{Key: "dec", Value: dec("1234567890.123456789012345678901234")}, {Key: "decneg", Value: dec("-0.000000000000000000000000000000001")},
			{Key: "decbig", Value: dec("9.999999999999999999999999999999999E+6144")},
		},
		bson.D{{Key: "_id", Value: "binaries"},
			{Key: "generic", Value: bson.Binary{Subtype: 0x00, Data: []byte{0, 1, 2, 255}}},
			{Key: "function", Value: bson.Binary{Subtype: 0x01, Data: []byte("f")}},
			{Key: "uuid", Value: bson.Binary{Subtype: 0x04, Data: uuid}},
			{Key: "md5", Value: bson.Binary{Subtype: 0x05, Data: bytes.Repeat([]byte{7}, 16)}},
			{Key: "user", Value: bson.Binary{Subtype: 0x80, Data: []byte("user defined")}},
			{Key: "empty", Value: bson.Binary{Subtype: 0x00, Data: []byte{}}},
		},
		bson.D{{Key: "_id", Value: oid}, {Key: "kind", Value: "times"},
			{Key: "date", Value: bson.NewDateTimeFromTime(time.Date(2026, 11, 28, 12, 0, 0, 123e6, time.UTC))},
			{Key: "epoch", Value: bson.DateTime(0)}, {Key: "before1970", Value: bson.DateTime(-62135596800000)},
			{Key: "ts", Value: bson.Timestamp{T: 1700000000, I: 3}},
			{Key: "oid", Value: oid},
		},
		bson.D{{Key: "_id", Value: 2}, {Key: "kind", Value: "misc"},
			{Key: "regex", Value: bson.Regex{Pattern: "^a.*[b-z]+$", Options: "imsx"}},
			{Key: "null", Value: nil}, {Key: "t", Value: true}, {Key: "f", Value: false},
			{Key: "unicode", Value: "ü€𝄞 \u0000 nul inside"}, {Key: "empty", Value: ""},
			{Key: "minkey", Value: bson.MinKey{}}, {Key: "maxkey", Value: bson.MaxKey{}},
			{Key: "js", Value: bson.JavaScript("function() { return 1 }")},
		},
		bson.D{{Key: "_id", Value: 3}, {Key: "kind", Value: "nested"},
			{Key: "arr", Value: bson.A{1, "two", bson.A{3, bson.A{4, bson.D{{Key: "five", Value: 5}}}}, bson.D{}, bson.A{}}},
			{Key: "doc", Value: bson.D{{Key: "z", Value: 1}, {Key: "a", Value: bson.D{{Key: "deep", Value: bson.D{{Key: "deeper", Value: bson.A{nil, 1.5}}}}}}}},
			{Key: "order", Value: bson.D{{Key: "b", Value: 1}, {Key: "a", Value: 2}, {Key: "c", Value: 3}}},
		},
		bson.D{{Key: "_id", Value: bson.D{{Key: "compound", Value: "id"}, {Key: "n", Value: 1}}}, {Key: "kind", Value: "document _id"}},
		bson.D{{Key: "_id", Value: 4}, {Key: "kind", Value: "large"}, {Key: "blob", Value: bson.Binary{Data: big}}},
	}
	if !ferretDB {
		return docs
	}
	unsupported := map[string]bool{"dec": true, "decneg": true, "decbig": true, "minkey": true, "maxkey": true, "js": true}
	for i, d := range docs {
		d := slices.DeleteFunc(slices.Clone(d.(bson.D)), func(e bson.E) bool { return unsupported[e.Key] })
		for j, e := range d {
			if e.Key == "arr" {
				d[j].Value = bson.A{1, "two", bson.D{{Key: "inner", Value: bson.A{3, bson.D{{Key: "five", Value: 5}}}}}, bson.D{}}
			}
		}
		docs[i] = d
	}
	return docs
}

// LoadTypes creates collection "types" in db with TypesDocs and indexes:
// a unique one, a compound descending one and a sparse one.
func LoadTypes(ctx context.Context, db *mongo.Database, bigBytes int, ferretDB bool) error {
	c := db.Collection("types")
	for _, d := range TypesDocs(bigBytes, ferretDB) {
		if _, err := c.InsertOne(ctx, d); err != nil {
			return fmt.Errorf("insert into types: %w", err)
		}
	}
	_, err := c.Indexes().CreateMany(ctx, []mongo.IndexModel{
		{Keys: bson.D{{Key: "kind", Value: 1}}, Options: options.Index().SetName("kind_unique").SetUnique(true)},
		{Keys: bson.D{{Key: "kind", Value: -1}, {Key: "f", Value: 1}}, Options: options.Index().SetName("kind_f")},
	})
	if err != nil {
		return fmt.Errorf("create indexes on types: %w", err)
	}
	return nil
}

// Checksums describe database db, one entry per collection: its options,
// its indexes (but their version), its document count and a SHA-256 of its
// documents' BSON bytes in _id order. Two databases hold the same data
// when their Checksums are equal.
func Checksums(ctx context.Context, db *mongo.Database) (map[string]string, error) {
	out := map[string]string{}
	cur, err := db.ListCollections(ctx, bson.D{})
	if err != nil {
		return nil, err
	}
	var specs []struct {
		Name    string   `bson:"name"`
		Type    string   `bson:"type"`
		Options bson.Raw `bson:"options"`
	}
	if err := cur.All(ctx, &specs); err != nil {
		return nil, err
	}
	for _, s := range specs {
		if strings.HasPrefix(s.Name, "system.") {
			continue
		}
		opts := "{}"
		if s.Options != nil {
			var d bson.D
			if err := bson.Unmarshal(s.Options, &d); err != nil {
				return nil, err
			}
			d = slices.DeleteFunc(d, func(e bson.E) bool { return e.Key == "uuid" })
			opts = fmt.Sprint(d)
		}
		if s.Type == "view" {
			out["view "+s.Name] = opts
			continue
		}
		c := db.Collection(s.Name)
		icur, err := c.Indexes().List(ctx)
		if err != nil {
			return nil, err
		}
		var idx []string
		for icur.Next(ctx) {
			var d bson.D
			if err := bson.Unmarshal(icur.Current, &d); err != nil {
				return nil, err
			}
			d = slices.DeleteFunc(d, func(e bson.E) bool { return e.Key == "v" || e.Key == "ns" })
			idx = append(idx, fmt.Sprint(d))
		}
		icur.Close(ctx)
		slices.Sort(idx)
		dcur, err := c.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		n := 0
		for dcur.Next(ctx) {
			h.Write(dcur.Current)
			n++
		}
		if err := dcur.Err(); err != nil {
			return nil, err
		}
		dcur.Close(ctx)
		out["collection "+s.Name] = fmt.Sprintf("options %s; indexes %s; %d documents, sha256 %s", opts, strings.Join(idx, " "), n, hex.EncodeToString(h.Sum(nil)))
	}
	return out, nil
}

package mgengine_test

import (
	"encoding/json"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// TestCreateCommands: the create and createIndexes commands a restore
// sends for collections and indexes described as MongoDB's listCollections
// and listIndexes document them (validators, collations, capped and
// clustered collections, views, time series; unique, TTL, partial, sparse,
// text and 4.2's ns field): every option is kept but those the server
// assigns or refuses (uuid, autoIndexId, clusteredIndex.v, an index's v
// and ns), and _id's index is left to the server. FerretDB takes none of
// validators, collations, views, TTL or partial indexes, so these shapes
// are checked here, not by a round trip.
func TestCreateCommands(t *testing.T) {
	ext := func(doc string) json.RawMessage {
		t.Helper()
		var d bson.D
		if err := bson.UnmarshalExtJSON([]byte(doc), false, &d); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		j, err := bson.MarshalExtJSON(d, true, false)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	canon := func(v any) string {
		t.Helper()
		j, err := bson.MarshalExtJSON(v, false, false)
		if err != nil {
			t.Fatal(err)
		}
		return string(j)
	}
	const uuid = `"uuid": {"$binary": {"base64": "FlDr8flYTQeRACUCWDVmaA==", "subType": "04"}}`
	for _, c := range []struct {
		name, typ, options, want string
	}{
		{"validator and collation", "collection",
			`{"validator": {"$jsonSchema": {"bsonType": "object", "required": ["name"]}}, "validationLevel": "moderate", "validationAction": "warn", "collation": {"locale": "fr", "strength": 2}, ` + uuid + `}`,
			`{"create":"c","validator":{"$jsonSchema":{"bsonType":"object","required":["name"]}},"validationLevel":"moderate","validationAction":"warn","collation":{"locale":"fr","strength":2}}`},
		{"capped", "collection", `{"capped": true, "size": 1048576, "max": 100, "autoIndexId": true, ` + uuid + `}`,
			`{"create":"c","capped":true,"size":1048576,"max":100}`},
		{"clustered", "collection", `{"clusteredIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_", "unique": true}, "expireAfterSeconds": 3600, ` + uuid + `}`,
			`{"create":"c","clusteredIndex":{"key":{"_id":1},"name":"_id_","unique":true},"expireAfterSeconds":3600}`},
		{"view", "view", `{"viewOn": "orders", "pipeline": [{"$match": {"status": "A"}}, {"$project": {"_id": 0, "total": 1}}]}`,
			`{"create":"c","viewOn":"orders","pipeline":[{"$match":{"status":"A"}},{"$project":{"_id":0,"total":1}}]}`},
		{"time series", "timeseries", `{"timeseries": {"timeField": "ts", "metaField": "meta", "granularity": "seconds", "bucketMaxSpanSeconds": 3600}, "expireAfterSeconds": 86400}`,
			`{"create":"c","timeseries":{"timeField":"ts","metaField":"meta","granularity":"seconds","bucketMaxSpanSeconds":3600},"expireAfterSeconds":86400}`},
		{"no options", "collection", `{}`, `{"create":"c"}`},
	} {
		cmd, err := mgengine.CreateCommand(mgengine.Collection{Database: "d", Name: "c", Type: c.typ, Options: ext(c.options)})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := canon(cmd); got != c.want {
			t.Errorf("%s:\n got  %s\n want %s", c.name, got, c.want)
		}
	}

	coll := mgengine.Collection{Database: "d", Name: "c", Type: "collection", Indexes: []json.RawMessage{
		ext(`{"v": 2, "key": {"_id": 1}, "name": "_id_"}`),
		ext(`{"v": 2, "key": {"email": 1}, "name": "email_1", "unique": true, "ns": "d.c"}`),
		ext(`{"v": 2, "key": {"at": 1}, "name": "at_1", "expireAfterSeconds": 3600}`),
		ext(`{"v": 2, "key": {"qty": -1, "sku": 1}, "name": "qty_-1_sku_1", "partialFilterExpression": {"qty": {"$gt": 10}}, "collation": {"locale": "en"}}`),
		ext(`{"v": 2, "key": {"nick": 1}, "name": "nick_1", "sparse": true}`),
		ext(`{"v": 2, "key": {"_fts": "text", "_ftsx": 1}, "name": "body_text", "weights": {"body": 1}, "default_language": "english", "language_override": "language", "textIndexVersion": 3}`),
	}}
	cmd, n, err := mgengine.CreateIndexesCommand(coll)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"createIndexes":"c","indexes":[` +
		`{"key":{"email":1},"name":"email_1","unique":true},` +
		`{"key":{"at":1},"name":"at_1","expireAfterSeconds":3600},` +
		`{"key":{"qty":-1,"sku":1},"name":"qty_-1_sku_1","partialFilterExpression":{"qty":{"$gt":10}},"collation":{"locale":"en"}},` +
		`{"key":{"nick":1},"name":"nick_1","sparse":true},` +
		`{"key":{"_fts":"text","_ftsx":1},"name":"body_text","weights":{"body":1},"default_language":"english","language_override":"language","textIndexVersion":3}]}`
	if got := canon(cmd); n != 5 || got != want {
		t.Errorf("createIndexes (%d):\n got  %s\n want %s", n, got, want)
	}
	if cmd, n, err := mgengine.CreateIndexesCommand(mgengine.Collection{Name: "c", Indexes: coll.Indexes[:1]}); cmd != nil || n != 0 || err != nil {
		t.Errorf("a collection with only _id's index: %v %d %v, want no command", cmd, n, err)
	}
}

package mgengine_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc64"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// archiveBlock is one namespace block of a mongodump archive as the spec
// (mongo-tools common/archive/spec.md) describes it.
type archiveBlock struct {
	DB, Coll string
	EOF      bool
	CRC      int64
	Docs     []bson.Raw
}

// parseArchive reads a mongodump archive strictly: magic, header,
// collection metadata up to the terminator, then blocks of a namespace
// header and documents, each ended by the terminator.
func parseArchive(t *testing.T, a []byte) (header bson.Raw, prelude []bson.Raw, blocks []archiveBlock) {
	t.Helper()
	if binary.LittleEndian.Uint32(a) != 0x8199e26d {
		t.Fatalf("magic % x", a[:4])
	}
	a = a[4:]
	next := func() (bson.Raw, bool) {
		if len(a) < 4 {
			t.Fatalf("truncated archive")
		}
		n := binary.LittleEndian.Uint32(a)
		if n == 0xffffffff {
			a = a[4:]
			return nil, true
		}
		if int(n) > len(a) {
			t.Fatalf("document of %d bytes, %d left", n, len(a))
		}
		d := bson.Raw(a[:n])
		if err := d.Validate(); err != nil {
			t.Fatalf("document: %v", err)
		}
		a = a[n:]
		return d, false
	}
	header, term := next()
	if term {
		t.Fatal("no header")
	}
	for {
		d, term := next()
		if term {
			break
		}
		prelude = append(prelude, d)
	}
	for len(a) > 0 {
		h, term := next()
		if term {
			t.Fatal("terminator where a namespace header belongs")
		}
		var b archiveBlock
		var hd struct {
			DB   string `bson:"db"`
			Coll string `bson:"collection"`
			EOF  bool   `bson:"EOF"`
			CRC  int64  `bson:"CRC"`
		}
		if err := bson.Unmarshal(h, &hd); err != nil {
			t.Fatal(err)
		}
		b.DB, b.Coll, b.EOF, b.CRC = hd.DB, hd.Coll, hd.EOF, hd.CRC
		for {
			d, term := next()
			if term {
				break
			}
			if b.EOF {
				t.Fatalf("documents after the EOF header of %s.%s", b.DB, b.Coll)
			}
			b.Docs = append(b.Docs, d)
		}
		blocks = append(blocks, b)
	}
	return header, prelude, blocks
}

// TestExportArchive: a dump of a 17 MiB collection (two segments), an
// empty one, a small one with an index and a view, with an empty oplog
// window, exports to an archive whose every namespace ends with an EOF
// block carrying the CRC-64-ECMA of its documents, in order, and whose
// oplog namespace holds one no-op entry.
func TestExportArchive(t *testing.T) {
	var sink memSink
	ctx := context.Background()
	idx, _ := json.Marshal(json.RawMessage(`{"v":{"$numberInt":"2"},"key":{"n":{"$numberInt":"-1"}},"name":"n_-1"}`))
	meta := mgengine.Metadata{Format: mgengine.FormatVersion, ServerVersion: "7.0.0", Databases: []string{"app"}, Oplog: true,
		Start: "Timestamp(1700000000, 3)",
		Collections: []mgengine.Collection{
			{Database: "app", Name: "big", Type: "collection", Entry: "data/app/big.bson", Options: json.RawMessage(`{}`)},
			{Database: "app", Name: "empty", Type: "collection", Entry: "data/app/empty.bson", Options: json.RawMessage(`{}`)},
			{Database: "app", Name: "small", Type: "collection", Entry: "data/app/small.bson",
				Options: json.RawMessage(`{"capped":true,"size":{"$numberInt":"4096"}}`), Indexes: []json.RawMessage{idx}},
			{Database: "app", Name: "v", Type: "view", Options: json.RawMessage(`{"viewOn":"small","pipeline":[]}`)},
		}}
	put := func(name string, docs ...bson.D) {
		w, _ := sink.Create(ctx, name, "")
		if name == mgengine.MetadataEntry {
			json.NewEncoder(w).Encode(meta)
			return
		}
		for _, d := range docs {
			b, err := bson.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(b)
		}
	}
	put(mgengine.MetadataEntry)
	var big []bson.D
	pad := strings.Repeat("x", 1<<20)
	for i := range 17 {
		big = append(big, bson.D{{Key: "_id", Value: i}, {Key: "pad", Value: pad}})
	}
	put("data/app/big.bson", big...)
	put("data/app/small.bson", bson.D{{Key: "_id", Value: 1}, {Key: "n", Value: 1}}, bson.D{{Key: "_id", Value: 2}, {Key: "n", Value: 2}})
	// data/app/empty.bson never sent: the export still ends its namespace.
	put(mgengine.OplogEntry)

	var out bytes.Buffer
	res, err := mgengine.ExportArchive(ctx, sink.source(), &out, mgengine.ExportOptions{ToolVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Collections != 3 || res.Views != 1 || res.Docs != 19 {
		t.Errorf("result %+v", res)
	}
	header, prelude, blocks := parseArchive(t, out.Bytes())
	if v, _ := header.Lookup("version").StringValueOK(); v != "0.1" {
		t.Errorf("header %v", header)
	}
	if len(prelude) != 5 { // 4 collections and views, the oplog
		t.Fatalf("prelude of %d documents", len(prelude))
	}
	var small struct {
		Metadata string `bson:"metadata"`
		Type     string `bson:"type"`
	}
	bson.Unmarshal(prelude[2], &small)
	if !strings.Contains(small.Metadata, `"capped":true`) || !strings.Contains(small.Metadata, `"name":"n_-1"`) || !strings.Contains(small.Metadata, `"collectionName":"small"`) {
		t.Errorf("metadata of small: %s", small.Metadata)
	}
	var view struct {
		Type string `bson:"type"`
	}
	bson.Unmarshal(prelude[3], &view)
	if view.Type != "view" {
		t.Errorf("view's type %q", view.Type)
	}

	docs := map[string][]bson.Raw{}
	ended := map[string]bool{}
	segments := map[string]int{}
	var order []string
	for _, b := range blocks {
		ns := b.DB + "." + b.Coll
		if ended[ns] {
			t.Fatalf("a block of %s after its EOF", ns)
		}
		if !b.EOF {
			segments[ns]++
			docs[ns] = append(docs[ns], b.Docs...)
			continue
		}
		ended[ns] = true
		order = append(order, ns)
		h := crc64.New(crc64.MakeTable(crc64.ECMA))
		for _, d := range docs[ns] {
			h.Write(d)
		}
		if int64(h.Sum64()) != b.CRC {
			t.Errorf("%s: CRC %d, documents' %d", ns, b.CRC, int64(h.Sum64()))
		}
	}
	if got := strings.Join(order, " "); got != "app.big app.small app.empty .oplog" {
		t.Errorf("namespaces ended in order %s", got)
	}
	if segments["app.big"] != 2 || len(docs["app.big"]) != 17 || len(docs["app.small"]) != 2 || len(docs["app.empty"]) != 0 {
		t.Errorf("segments %v; documents big %d small %d empty %d", segments, len(docs["app.big"]), len(docs["app.small"]), len(docs["app.empty"]))
	}
	if len(docs[".oplog"]) != 1 || docs[".oplog"][0].Lookup("op").StringValue() != "n" {
		t.Errorf("oplog namespace %v, want one no-op entry", docs[".oplog"])
	}
	if ts, i := docs[".oplog"][0].Lookup("ts").Timestamp(); ts != 1700000000 || i != 3 {
		t.Errorf("no-op at Timestamp(%d, %d), want the window's start", ts, i)
	}
}

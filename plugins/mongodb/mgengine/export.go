package mgengine

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"io"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// mongodump's archive format, the one `mongorestore --archive` reads
// (mongo-tools, common/archive/spec.md):
//
//	archive   = magic header collection-metadata* terminator (namespace-segment | namespace-eof)*
//	magic     = 0x8199e26d, little-endian
//	segment   = {db, collection, EOF: false, CRC: 0} document+ terminator
//	eof       = {db, collection, EOF: true, CRC: CRC-64-ECMA of all the namespace's documents} terminator
//	terminator = 0xffffffff
//
// The oplog window travels as mongodump --oplog writes it: the namespace
// with database "" and collection "oplog", last, so that
// `mongorestore --archive --oplogReplay` applies it after the data.
const (
	archiveMagic      uint32 = 0x8199e26d
	archiveVersion           = "0.1"
	archiveSegmentMax        = 16 << 20 // bytes of documents per namespace segment
)

var archiveTerminator = []byte{0xff, 0xff, 0xff, 0xff}

// ExportOptions tune ExportArchive.
type ExportOptions struct {
	ToolVersion string // recorded in the archive's header
}

// ExportResult says what an export wrote.
type ExportResult struct {
	Collections, Views int
	Docs, Bytes        int64
	OplogOps           int
}

// ExportArchive reads a dump from src, in the order LogicalDump wrote it,
// and writes it to w in mongodump's archive format, streaming: documents
// are copied as they are read, never held whole. Collection metadata
// (options, indexes, views) becomes the archive's prelude; the oplog
// window, when the dump has one, becomes the "oplog" namespace that
// `mongorestore --oplogReplay` applies.
func ExportArchive(ctx context.Context, src Source, w io.Writer, o ExportOptions) (*ExportResult, error) {
	name, r, err := src.Next(ctx)
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the backup holds no entries")
	}
	if err != nil {
		return nil, err
	}
	if name != MetadataEntry {
		return nil, fmt.Errorf("the backup starts with %q, not %s: not a MongoDB logical backup", name, MetadataEntry)
	}
	var meta Metadata
	if err := json.NewDecoder(r).Decode(&meta); err != nil {
		return nil, fmt.Errorf("read %s: %w", MetadataEntry, err)
	}
	if meta.Format != FormatVersion {
		return nil, fmt.Errorf("%s: format %q, this plugin reads %q", MetadataEntry, meta.Format, FormatVersion)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	res := &ExportResult{}

	// Prelude.
	var magic [4]byte
	binary.LittleEndian.PutUint32(magic[:], archiveMagic)
	if _, err := bw.Write(magic[:]); err != nil {
		return nil, err
	}
	if err := writeDoc(bw, bson.D{
		{Key: "concurrent_collections", Value: int32(1)},
		{Key: "version", Value: archiveVersion},
		{Key: "server_version", Value: meta.ServerVersion},
		{Key: "tool_version", Value: o.ToolVersion},
	}); err != nil {
		return nil, err
	}
	byEntry := map[string]Collection{}
	var pending []Collection // collections whose namespace has not ended yet, in order
	for _, coll := range meta.Collections {
		md, err := mongodumpMetadata(coll)
		if err != nil {
			return nil, err
		}
		typ := coll.Type
		if typ == "collection" {
			typ = ""
		}
		if err := writeDoc(bw, bson.D{
			{Key: "db", Value: coll.Database}, {Key: "collection", Value: coll.Name},
			{Key: "metadata", Value: md}, {Key: "size", Value: int32(0)}, {Key: "type", Value: typ},
		}); err != nil {
			return nil, err
		}
		if coll.Type == "view" {
			res.Views++
			continue
		}
		res.Collections++
		byEntry[coll.Entry] = coll
		pending = append(pending, coll)
	}
	if meta.Oplog {
		if err := writeDoc(bw, bson.D{
			{Key: "db", Value: ""}, {Key: "collection", Value: "oplog"},
			{Key: "metadata", Value: ""}, {Key: "size", Value: int32(0)}, {Key: "type", Value: ""},
		}); err != nil {
			return nil, err
		}
	}
	if _, err := bw.Write(archiveTerminator); err != nil {
		return nil, err
	}

	// An oplog window without entries still travels as one no-op entry
	// at its start (the last entry before the dump):
	// `mongorestore --oplogReplay` wants an oplog namespace, skips
	// no-ops, and reads a namespace that ends without a document racily
	// ("archive io error").
	var noop bson.Raw
	if meta.Oplog {
		var end Pos
		if meta.Start != "" {
			if end, err = ParseText(meta.Start); err != nil {
				return nil, fmt.Errorf("%s: oplog window start %q: %w", MetadataEntry, meta.Start, err)
			}
		}
		if noop, err = bson.Marshal(bson.D{
			{Key: "op", Value: "n"}, {Key: "ns", Value: ""},
			{Key: "o", Value: bson.D{{Key: "msg", Value: "amber: the dump's oplog window is empty"}}},
			{Key: "ts", Value: bson.Timestamp{T: end.T, I: end.I}}, {Key: "v", Value: int64(2)},
		}); err != nil {
			return nil, err
		}
	}
	done := map[string]bool{}
	// Every collection's namespace ends with an EOF block, an empty one
	// too: mongorestore waits for it.
	endRest := func() error {
		for _, coll := range pending {
			if !done[coll.Entry] {
				if err := writeNamespace(bw, coll.Database, coll.Name, emptyReader{}, nil, nil); err != nil {
					return err
				}
				done[coll.Entry] = true
			}
		}
		return nil
	}
	sawOplog := false
	for {
		name, r, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if name == OplogEntry {
			if err := endRest(); err != nil {
				return nil, err
			}
			var n int64
			if err := writeNamespace(bw, "", "oplog", r, func(int) { n++ }, noop); err != nil {
				return nil, fmt.Errorf("%s: %w", OplogEntry, err)
			}
			res.OplogOps += int(n)
			sawOplog = true
			continue
		}
		if meta.Auth != nil && (name == meta.Auth.Users || name == meta.Auth.Roles) {
			// Users and roles stay out of the archive: mongorestore
			// restores them only with admin.system.version's authSchema,
			// which a dump does not keep.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			continue
		}
		coll, ok := byEntry[name]
		if !ok {
			return nil, fmt.Errorf("entry %s is not in %s", name, MetadataEntry)
		}
		if done[name] {
			return nil, fmt.Errorf("entry %s appears twice", name)
		}
		if err := writeNamespace(bw, coll.Database, coll.Name, r, func(size int) {
			res.Docs++
			res.Bytes += int64(size)
		}, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		done[name] = true
	}
	if err := endRest(); err != nil {
		return nil, err
	}
	if meta.Oplog && !sawOplog {
		if err := writeNamespace(bw, "", "oplog", emptyReader{}, nil, noop); err != nil {
			return nil, err
		}
	}
	return res, bw.Flush()
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, io.EOF }

// writeNamespace writes the documents read from r as segments of ns
// followed by its EOF block carrying their CRC.
//
// ifEmpty, when set, is written as the only document if r holds none.
func writeNamespace(w io.Writer, db, coll string, r io.Reader, each func(size int), ifEmpty bson.Raw) error {
	crc := crc64.New(crc64.MakeTable(crc64.ECMA))
	header := func(eof bool, sum uint64) error {
		return writeDoc(w, bson.D{
			{Key: "db", Value: db}, {Key: "collection", Value: coll},
			{Key: "EOF", Value: eof}, {Key: "CRC", Value: int64(sum)},
		})
	}
	inSegment := 0 // bytes in the open segment; 0: none open
	put := func(d bson.Raw) error {
		if inSegment > 0 && inSegment+len(d) > archiveSegmentMax {
			if _, err := w.Write(archiveTerminator); err != nil {
				return err
			}
			inSegment = 0
		}
		if inSegment == 0 {
			if err := header(false, 0); err != nil {
				return err
			}
		}
		if _, err := w.Write(d); err != nil {
			return err
		}
		crc.Write(d)
		inSegment += len(d)
		if each != nil {
			each(len(d))
		}
		return nil
	}
	if err := ReadDocs(r, put); err != nil {
		return err
	}
	if inSegment == 0 && ifEmpty != nil {
		if err := put(ifEmpty); err != nil {
			return err
		}
	}
	if inSegment > 0 {
		if _, err := w.Write(archiveTerminator); err != nil {
			return err
		}
	}
	if err := header(true, crc.Sum64()); err != nil {
		return err
	}
	_, err := w.Write(archiveTerminator)
	return err
}

func writeDoc(w io.Writer, d bson.D) error {
	b, err := bson.Marshal(d)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// mongodumpMetadata is coll's metadata as mongodump writes it (its
// <collection>.metadata.json): canonical extended JSON of
// {options, indexes, collectionName, type}.
func mongodumpMetadata(coll Collection) (string, error) {
	var opts bson.D
	if len(coll.Options) > 0 {
		if err := bson.UnmarshalExtJSON(coll.Options, true, &opts); err != nil {
			return "", fmt.Errorf("options of %s: %w", coll.NS(), err)
		}
	}
	clean := bson.D{}
	for _, e := range opts {
		if e.Key != "uuid" { // the target assigns its own
			clean = append(clean, e)
		}
	}
	indexes := bson.A{}
	for _, j := range coll.Indexes {
		var spec bson.D
		if err := bson.UnmarshalExtJSON(j, true, &spec); err != nil {
			return "", fmt.Errorf("index of %s: %w", coll.NS(), err)
		}
		indexes = append(indexes, spec)
	}
	md := bson.D{{Key: "indexes", Value: indexes}}
	if len(clean) > 0 {
		md = append(bson.D{{Key: "options", Value: clean}}, md...)
	}
	md = append(md, bson.E{Key: "collectionName", Value: coll.Name})
	if coll.Type != "" {
		md = append(md, bson.E{Key: "type", Value: coll.Type})
	}
	b, err := bson.MarshalExtJSON(md, true, false)
	if err != nil {
		return "", fmt.Errorf("metadata of %s: %w", coll.NS(), err)
	}
	return string(b), nil
}

package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
)

// textData is compressible, dump-like text; seed varies the content.
func textData(seed, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%d\t%d\t2024-01-%02d 10:%02d:00\tuser%d@example.com\t%x\n", seed, i, i%28+1, i%60, (i+seed)*7919%1000003, i*2654435761)
	}
	return b.Bytes()[:n]
}

func commitStream(t *testing.T, r *Repository, name string, data []byte) {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := writeUploaded(t, w, name, data)
	if _, err := w.Commit(ctx, &Manifest{Name: name, Start: time.Now(), Entries: []Entry{e}}); err != nil {
		t.Fatal(err)
	}
}

// checkIndexVersions asserts that exactly the index files naming an S2 blob
// are version 2, and returns how many compressed data blobs use each codec.
func checkIndexVersions(t *testing.T, r *Repository) map[Codec]int {
	t.Helper()
	ctx := context.Background()
	names, err := r.indexFiles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	codecs := map[Codec]int{}
	for _, name := range names {
		f, err := r.loadIndexFile(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := f.Version, indexVersion(f.Packs); got != want {
			t.Fatalf("index file %s has version %d, want %d", name, got, want)
		}
		for _, p := range f.Packs {
			for _, b := range p.Blobs {
				if b.Type == DataBlob && b.Compressed {
					codecs[b.Codec]++
				}
			}
		}
	}
	return codecs
}

// TestS2MixedRepository: backups written with zstd and with S2 share one
// repository (and its deduplication); a client with no setting restores
// both, verify reads every blob, prune keeps the index versions right, and
// the index rebuilt from pack headers alone knows each blob's codec.
func TestS2MixedRepository(t *testing.T) {
	ctx := context.Background()
	tr := newTestRepo(t, Options{})
	a := textData(1, 3<<20)
	b := append(textData(2, 3<<20), a[:1<<20]...) // shares chunks with a
	commitStream(t, tr.Repository, "zstd", a)
	commitStream(t, tr.reopen(t, Options{Compression: CompressS2}), "s2", b)

	r := tr.reopen(t, Options{})
	want := map[string][]byte{"zstd": a, "s2": b}
	checkListedRestore(t, r, want)
	codecs := checkIndexVersions(t, r)
	if codecs[CodecZstd] == 0 || codecs[CodecS2] == 0 {
		t.Fatalf("want blobs of both codecs, got %v", codecs)
	}
	rep, err := r.Verify(ctx, VerifyOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("verify of a mixed repository: %v %+v", err, rep)
	}

	// Prune away the zstd backup: the S2 one still restores, and the
	// index files prune rewrote carry the version their blobs need.
	if _, err := r.Prune(ctx, PrunePolicy{KeepLast: 1}); err != nil {
		t.Fatal(err)
	}
	r = tr.reopen(t, Options{})
	checkListedRestore(t, r, map[string][]byte{"s2": b})
	if c := checkIndexVersions(t, r); c[CodecS2] == 0 {
		t.Fatalf("S2 blobs gone after prune: %v", c)
	}

	// Rebuild the index from the packs alone: their headers say the codec.
	for _, name := range tr.names(t, indexDir) {
		if err := tr.be.Remove(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	res, err := tr.reopen(t, Options{}).RepairIndex(ctx)
	if err != nil || len(res.Problems) > 0 {
		t.Fatalf("repair index: %v %+v", err, res)
	}
	r = tr.reopen(t, Options{})
	checkListedRestore(t, r, map[string][]byte{"s2": b})
	if c := checkIndexVersions(t, r); c[CodecS2] == 0 {
		t.Fatalf("rebuilt index lost the S2 codec: %v", c)
	}
	if rep, err := r.Verify(ctx, VerifyOptions{ReadData: true}); err != nil || !rep.OK() {
		t.Fatalf("verify after repair: %v %+v", err, rep)
	}
}

// TestS2CorruptBlobRefused: an S2 blob that passes authentication but does
// not decode to exactly what the index says is refused as corrupt, naming
// the pack, before a larger buffer than the index allows is made.
func TestS2CorruptBlobRefused(t *testing.T) {
	tr := newTestRepo(t, Options{})
	plain := textData(3, 100<<10)
	id := tr.ids.id(plain)
	good := s2.Encode(nil, plain)
	other := s2.Encode(nil, textData(4, len(plain)))
	// A length header of 8 MiB + 1 over a tiny body: a reader must not
	// allocate for it.
	huge := binary.AppendUvarint(nil, maxBlobPlain+1)
	huge = append(huge, good[len(binary.AppendUvarint(nil, uint64(len(plain)))):]...)
	truncated := good[:len(good)/2]
	flipped := bytes.Clone(good)
	flipped[len(flipped)/3] ^= 0xff

	cases := []struct {
		name, payload []byte
		phrase        string
	}{
		{[]byte("length header larger than the index"), huge, "decompress s2"},
		{[]byte("truncated"), truncated, "decompress s2"},
		{[]byte("other content"), other, "does not match its id"},
		{[]byte("flipped byte"), flipped, "blob " + id.Short()},
	}
	for _, c := range cases {
		t.Run(string(c.name), func(t *testing.T) {
			l := Location{Pack: ID{9}, BlobInfo: BlobInfo{ID: id, Type: DataBlob, RawLength: uint32(len(plain)), Compressed: true, Codec: CodecS2}}
			_, err := tr.openBlob(l, tr.seal.seal(nil, c.payload, blobAD(id, DataBlob)), nil)
			if err == nil || !strings.Contains(err.Error(), c.phrase) || !strings.Contains(err.Error(), packName(l.Pack)) {
				t.Fatalf("want an error naming the pack with %q, got %v", c.phrase, err)
			}
		})
	}
	// The intact blob opens, and read as zstd it does not.
	l := Location{BlobInfo: BlobInfo{ID: id, Type: DataBlob, RawLength: uint32(len(plain)), Compressed: true, Codec: CodecS2}}
	if got, err := tr.openBlob(l, tr.seal.seal(nil, good, blobAD(id, DataBlob)), nil); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("intact S2 blob: %v", err)
	}
	l.Codec = CodecZstd
	if _, err := tr.openBlob(l, tr.seal.seal(nil, good, blobAD(id, DataBlob)), nil); err == nil {
		t.Fatal("an S2 blob decoded as zstd")
	}
}

// TestS2FormatChecks: the stored forms that name a codec are parsed
// strictly, and what an older amber would misread is refused by it.
func TestS2FormatChecks(t *testing.T) {
	entry := func(flags byte) []byte {
		e := []byte{0, flags}
		e = binary.LittleEndian.AppendUint32(e, 40)
		e = binary.LittleEndian.AppendUint32(e, 100)
		return append(e, make([]byte, 32)...)
	}
	for flags, want := range map[byte]string{flagCompressed: "zstd", flagS2: "s2", flagCompressed | flagS2: "unknown flags", 4: "unknown flags"} {
		blobs, err := parseHeaderEntries(entry(flags), 40)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = blobs[0].Codec.String()
		}
		if !strings.Contains(got, want) {
			t.Errorf("header flags %#x: got %q, want %q", flags, got, want)
		}
	}
	// An older amber read an S2 entry's flags through bit 0 only: as an
	// uncompressed blob whose lengths do not fit, so it refused the header.
	if err := checkBlobInfo(BlobInfo{Type: DataBlob, Length: 40, RawLength: 100}); err == nil {
		t.Error("an S2 entry read as uncompressed was accepted")
	}

	blob := func(codec string) string {
		return `{"id":"` + ID{2}.String() + `","type":0,"offset":0,"length":60,"raw_length":100,"compressed":true` + codec + `}`
	}
	index := func(version int, b string) []byte {
		return []byte(fmt.Sprintf(`{"version":%d,"packs":[{"id":"%s","size":100,"blobs":[%s]}]}`, version, ID{1}, b))
	}
	for _, c := range []struct {
		name   string
		plain  []byte
		phrase string // empty: accepted
	}{
		{"v1 zstd", index(1, blob("")), ""},
		{"v2 s2", index(2, blob(`,"codec":"s2"`)), ""},
		{"v2 zstd named", index(2, blob(`,"codec":"zstd"`)), ""},
		{"v1 s2", index(1, blob(`,"codec":"s2"`)), "version 1 index file"},
		{"unknown codec", index(2, blob(`,"codec":"lz4"`)), "unknown codec"},
		{"future version", index(3, blob("")), "upgrade amber"},
	} {
		_, err := parseIndexFile("index/x", c.plain)
		if (c.phrase == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.phrase)) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.phrase)
		}
	}
}

// FuzzDecompressBlob: whatever the payload and the length the index
// claims, decoding never panics and returns exactly that many bytes or an
// error.
func FuzzDecompressBlob(f *testing.F) {
	plain := textData(5, 4096)
	f.Add(s2.Encode(nil, plain), uint32(len(plain)), true)
	f.Add(s2.Encode(nil, plain), uint32(len(plain)-1), true)
	f.Add(binary.AppendUvarint(nil, 1<<40), uint32(10), true)
	f.Add([]byte{}, uint32(0), true)
	f.Add(zenc.EncodeAll(plain, nil), uint32(len(plain)), false)
	f.Fuzz(func(t *testing.T, payload []byte, rawLen uint32, useS2 bool) {
		if rawLen > maxBlobPlain {
			return // checkBlobInfo refuses it before any decoding
		}
		b := BlobInfo{RawLength: rawLen, Compressed: true}
		if useS2 {
			b.Codec = CodecS2
		}
		out, err := decompressBlob(b, payload)
		if err == nil && useS2 && len(out) != int(rawLen) {
			t.Fatalf("decoded %d bytes, the index said %d", len(out), rawLen)
		}
		// Decoded into its room in a run's buffer, as a restore does, it
		// writes nothing outside that room and gives the same bytes.
		const guard = 64
		buf := bytes.Repeat([]byte{0xa5}, guard+int(rawLen)+decodeSlack+guard)
		room := buf[guard : guard : guard+int(rawLen)+decodeSlack]
		got, err2 := decompressBlobTo(b, payload, room)
		for i, c := range buf {
			if c != 0xa5 && (i < guard || i >= guard+int(rawLen)+decodeSlack) {
				t.Fatalf("decoding wrote byte %d, outside its room [%d, %d)", i, guard, guard+int(rawLen)+decodeSlack)
			}
		}
		if (err == nil) != (err2 == nil) || (err == nil && !bytes.Equal(got, out)) {
			t.Fatalf("decoded into a run's buffer: %d bytes, %v; alone: %d bytes, %v", len(got), err2, len(out), err)
		}
	})
}

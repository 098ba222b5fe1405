package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// partsOf yields parts in order, then io.EOF.
func partsOf(ps ...Part) func() (Part, error) {
	return func() (Part, error) {
		if len(ps) == 0 {
			return Part{}, io.EOF
		}
		p := ps[0]
		ps = ps[1:]
		return p, nil
	}
}

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestWritePartsReuse: an entry written with file records restores to its
// bytes; a later entry reusing a record restores to the same bytes without
// reading them, and its own index records it again; verify passes.
func TestWritePartsReuse(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	head, big, small, tail := []byte("head"), randBytes(1, 900<<10), []byte("small file"), []byte("tail")

	w, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e1, err := w.WriteParts(ctx, "base.tar", partsOf(Part{Reader: bytes.NewReader(head)},
		Part{Key: "big", Stamp: "s1", Reader: bytes.NewReader(big)},
		Part{Key: "small", Stamp: "s2", Reader: bytes.NewReader(small)},
		Part{Reader: bytes.NewReader(tail)}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, &Manifest{Name: "x", Entries: []Entry{e1}}); err != nil {
		t.Fatal(err)
	}
	m1, err := tr.FindBackup(ctx, "latest", "")
	if err != nil || m1.Version != ManifestVersionFiles {
		t.Fatalf("backup 1: %v %+v", err, m1)
	}
	recs, err := tr.FileRecords(ctx, m1)
	if err != nil {
		t.Fatal(err)
	}
	got := recs["base.tar"]
	if len(got) != 2 || got[0].Key != "big" || got[0].Length != int64(len(big)) || got[0].Stamp != "s1" ||
		got[1].Key != "small" || got[1].Length != int64(len(small)) || got[1].Chunks != 1 {
		t.Fatalf("records %+v", got)
	}

	w2, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	small2 := []byte("small file, changed")
	e2, err := w2.WriteParts(ctx, "base.tar", partsOf(Part{Reader: bytes.NewReader(head)},
		Part{Key: "big", Stamp: "s1", Reuse: &got[0]},
		Part{Key: "small", Stamp: "s3", Reader: bytes.NewReader(small2)},
		Part{Reader: bytes.NewReader(tail)}))
	if err != nil {
		t.Fatal(err)
	}
	if w2.BytesReused.Load() != int64(len(big)) || w2.FilesReused.Load() != 1 || w2.FilesWritten.Load() != 1 ||
		w2.BytesIn.Load() != int64(len(head)+len(small2)+len(tail)) {
		t.Fatalf("reused %d bytes in %d records, wrote %d records, read %d bytes", w2.BytesReused.Load(), w2.FilesReused.Load(),
			w2.FilesWritten.Load(), w2.BytesIn.Load())
	}
	if _, err := w2.Commit(ctx, &Manifest{Name: "x", Entries: []Entry{e2}}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := tr.WriteEntry(ctx, e2, &out); err != nil {
		t.Fatal(err)
	}
	want := bytes.Join([][]byte{head, big, small2, tail}, nil)
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("restored %d bytes, want %d", out.Len(), len(want))
	}
	m2, _ := tr.FindBackup(ctx, w2.Committed().String(), "")
	recs2, err := tr.FileRecords(ctx, m2)
	if err != nil || len(recs2["base.tar"]) != 2 || recs2["base.tar"][0].Length != int64(len(big)) || recs2["base.tar"][1].Stamp != "s3" {
		t.Fatalf("records of backup 2: %v %+v", err, recs2)
	}
	rep, err := tr.Verify(ctx, VerifyOptions{ReadData: true})
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// TestFileRecordsRefusesBadIndex: a file index whose records do not fit
// their entry's chunks is reported, by FileRecords and by verify, never
// handed out for reuse.
func TestFileRecordsRefusesBadIndex(t *testing.T) {
	for name, recs := range map[string][]FileRecord{
		"length":  {{Key: "a", First: 0, Chunks: 1, Length: 5}},
		"outside": {{Key: "a", First: 0, Chunks: 9, Length: 4}},
		"overlap": {{Key: "a", First: 0, Chunks: 1, Length: 4}, {Key: "b", First: 0, Chunks: 1, Length: 4}},
		"repeat":  {{Key: "a", First: 0, Chunks: 1, Length: 4}, {Key: "a", First: 1, Chunks: 1, Length: 4}},
	} {
		t.Run(name, func(t *testing.T) {
			tr := newTestRepo(t, Options{})
			ctx := context.Background()
			w, err := tr.NewWriter(ctx)
			if err != nil {
				t.Fatal(err)
			}
			e, err := w.WriteParts(ctx, "e", partsOf(Part{Key: "a", Reader: strings.NewReader("aaaa")}, Part{Key: "b", Reader: strings.NewReader("bbbb")}))
			if err != nil {
				t.Fatal(err)
			}
			plain, _ := json.Marshal(recs)
			fi, err := w.WriteStream(ctx, "index", bytes.NewReader(plain))
			if err != nil {
				t.Fatal(err)
			}
			e.Files = &FileIndex{Size: fi.Size, Lists: fi.Lists, Count: len(recs)}
			if _, err := w.Commit(ctx, &Manifest{Name: "x", Entries: []Entry{e}}); err != nil {
				t.Fatal(err)
			}
			m, _ := tr.FindBackup(ctx, "latest", "")
			var ce *CorruptError
			if _, err := tr.FileRecords(ctx, m); !errors.As(err, &ce) {
				t.Fatalf("FileRecords: %v", err)
			}
			rep, err := tr.Verify(ctx, VerifyOptions{})
			if err != nil || len(rep.Problems) == 0 {
				t.Fatalf("verify: %v %+v", err, rep)
			}
		})
	}
}

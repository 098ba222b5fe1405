package repo

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// applyPatch is the plain definition of a patched record, to compare with.
func applyPatch(base []byte, keep, length int64, ranges []Range, data []byte) []byte {
	out := make([]byte, length)
	copy(out, base[:min(keep, int64(len(base)), length)])
	for _, r := range ranges {
		copy(out[r.Off:r.Off+r.Len], data[:r.Len])
		data = data[r.Len:]
	}
	return out
}

// TestWritePartsPatch: a record patched from an earlier backup's record
// restores to the base's kept bytes, zeros past them and the ranges'
// bytes; the base's chunks no range touches are referenced again, not
// stored, and only what a range touches is new in the repository; a patch
// with too little or too much data fails.
func TestWritePartsPatch(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	base := randBytes(7, 4<<20)

	w, err := tr.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e1, err := w.WriteParts(ctx, "base.tar", partsOf(Part{Key: "rel", Stamp: "s1", Reader: bytes.NewReader(base)}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, &Manifest{Name: "x", Entries: []Entry{e1}}); err != nil {
		t.Fatal(err)
	}
	m1, err := tr.FindBackup(ctx, "latest", "")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := tr.FileRecords(ctx, m1)
	if err != nil {
		t.Fatal(err)
	}
	prev := &recs["base.tar"][0]
	n := int64(len(base))

	for _, tc := range []struct {
		name         string
		keep, length int64
		ranges       []Range
	}{
		{"blocks replaced", n, n, []Range{{0, 512}, {8192 * 100, 8192}, {8192 * 300, 3 * 8192}}},
		{"extended", n, n + 5*8192, []Range{{512 * 3, 512}, {n + 8192, 8192}}},
		{"truncated", 1 << 20, 1 << 20, []Range{{0, 512}}},
		{"cut and zero-filled", 2 << 20, 3 << 20, []Range{{(2 << 20) + 8192, 8192}}},
		{"range across the kept end", 2 << 20, 3 << 20, []Range{{(2 << 20) - 100, 200}}},
		{"unchanged", n, n, nil},
		{"empty", 0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var size int64
			for _, r := range tc.ranges {
				size += r.Len
			}
			data := randBytes(uint64(size)+3, int(size))
			want := applyPatch(base, tc.keep, tc.length, tc.ranges, data)
			w, err := tr.NewWriter(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			ent, err := w.WriteParts(ctx, "base.tar", partsOf(Part{Key: "rel", Stamp: "s2", Reader: bytes.NewReader(data),
				Patch: &Patch{Base: prev, Keep: tc.keep, Length: tc.length, Ranges: tc.ranges}}))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Commit(ctx, &Manifest{Name: "x", Entries: []Entry{ent}}); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := tr.WriteEntry(ctx, ent, &got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("patched record differs from the plain patch (%d bytes, want %d)", got.Len(), len(want))
			}
			if w.FilesPatched.Load() != 1 {
				t.Fatalf("FilesPatched %d", w.FilesPatched.Load())
			}
			// Only chunks a range touches (or the cut) are read and chunked
			// anew: at most a few chunks' worth per range.
			if read := w.BytesIn.Load(); tc.name == "blocks replaced" && read > int64(len(tc.ranges))*int64(tr.cfg.Chunker.Max) {
				t.Fatalf("read %d bytes for %d ranges; chunks untouched were not reused", read, len(tc.ranges))
			}
			if tc.name == "unchanged" && w.BytesIn.Load() != 0 {
				t.Fatalf("an unchanged patch read %d bytes", w.BytesIn.Load())
			}
		})
	}

	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"too little data", make([]byte, 100), "patch data"},
		{"too much data", make([]byte, 600), "more patch data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := tr.NewWriter(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			_, err = w.WriteParts(ctx, "base.tar", partsOf(Part{Key: "rel", Reader: bytes.NewReader(tc.data),
				Patch: &Patch{Base: prev, Keep: n, Length: n, Ranges: []Range{{10, 512}}}}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
}

package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/amber-backup/amber/sidecar/storage"
)

// chunksOf returns the locations of an entry's chunks, in order.
func chunksOf(t *testing.T, r *Repository, e Entry) []Location {
	t.Helper()
	ctx := context.Background()
	var locs []Location
	for _, lid := range e.Lists {
		items, err := r.loadList(ctx, lid)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			l, err := r.lookup(ctx, it.id)
			if err != nil {
				t.Fatal(err)
			}
			locs = append(locs, l)
		}
	}
	return locs
}

// TestRestoreRefusesCorruptBlob flips a byte inside one blob in the middle
// of a run read with others: the restore fails naming its pack and the
// blob, and writes nothing of the blob or after it.
func TestRestoreRefusesCorruptBlob(t *testing.T) {
	for _, c := range []struct {
		name string
		comp Compression
		data []byte
		want bool // the blob is stored compressed
	}{
		{"zstd", CompressFastest, dumpLike(5, 6<<20), true},
		{"s2", CompressS2, dumpLike(6, 6<<20), true},
		{"uncompressed", CompressFastest, pseudoRandom(7, 6<<20), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTestRepo(t, Options{Compression: c.comp})
			tr.cfg.PackSize = 16 << 20 // one pack, so the blob is read in a run with others
			ctx := context.Background()
			m := backup(t, tr.Repository, c.data)
			locs := chunksOf(t, tr.Repository, m.Entries[0])
			if len(locs) < 6 {
				t.Fatalf("only %d chunks", len(locs))
			}
			i := len(locs) / 2
			bad := locs[i]
			if bad.Compressed != c.want {
				t.Fatalf("blob compressed %v, want %v", bad.Compressed, c.want)
			}
			var before int64
			for _, l := range locs[:i] {
				before += int64(l.RawLength)
			}
			name := packName(bad.Pack)
			orig, err := storage.ReadAll(ctx, tr.be, name)
			if err != nil {
				t.Fatal(err)
			}
			flipped := bytes.Clone(orig)
			flipped[int(bad.Offset)+int(bad.Length)/2] ^= 0x01
			put(t, tr.be, name, flipped)

			var out bytes.Buffer
			err = tr.WriteEntry(ctx, m.Entries[0], &out)
			if err == nil {
				t.Fatal("restore of a corrupt blob succeeded")
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), bad.ID.Short()) {
				t.Fatalf("error does not name pack %s and blob %s: %v", name, bad.ID.Short(), err)
			}
			if int64(out.Len()) > before || !bytes.Equal(out.Bytes(), c.data[:out.Len()]) {
				t.Fatalf("wrote %d bytes, not a prefix of the %d before the corrupt blob", out.Len(), before)
			}
		})
	}
}

// slowHash writes into a hash in small pieces, so a restore's buffers stay
// in use for long while other restores run.
type slowHash struct{ h hash.Hash }

func (s slowHash) Write(p []byte) (int, error) {
	for i := 0; i < len(p); i += 4096 {
		s.h.Write(p[i:min(i+4096, len(p))])
	}
	return len(p), nil
}

// TestConcurrentRestores restores several entries at once, of both codecs
// and of stored (incompressible) chunks: with buffers reused between runs,
// each must still get exactly its own bytes. Run it with -race.
func TestConcurrentRestores(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	streams := [][]byte{dumpLike(11, 5<<20), pseudoRandom(12, 3<<20), dumpLike(13, 7<<20), pseudoRandom(14, 1<<20)}
	var entries []Entry
	for i, c := range []Compression{CompressFastest, CompressS2} {
		r.opts.Compression = c
		w, err := r.NewWriter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for j, s := range streams {
			e, err := w.WriteStream(ctx, fmt.Sprintf("s%d-%d", i, j), bytes.NewReader(s))
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, e)
		}
		if _, err := w.Commit(ctx, &Manifest{Name: "t", Entries: entries[len(entries)-len(streams):]}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3*len(entries))
	for round := range 3 {
		for k, e := range entries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := sha256.New()
				if err := r.WriteEntry(ctx, e, slowHash{h}); err != nil {
					errs <- err
					return
				}
				if want := sha256.Sum256(streams[k%len(streams)]); !bytes.Equal(h.Sum(nil), want[:]) {
					errs <- fmt.Errorf("round %d: entry %s restored other bytes", round, e.Name)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRunsBoundDecodedSize plans the runs of a stream that compresses well:
// no run of more than one blob reads more than maxRun or decodes to more
// than maxRunPlain, the bound is reached, and the stream restores whole.
func TestRunsBoundDecodedSize(t *testing.T) {
	r, _ := newRepo(t)
	data := dumpLike(21, 48<<20)
	m := backup(t, r, data)
	var runs, full int
	err := r.planRuns(context.Background(), m.Entries[0], func(rn *run) bool {
		var plain int64
		for _, l := range rn.locs {
			plain += int64(l.RawLength)
		}
		if len(rn.locs) > 1 && (plain > maxRunPlain || rn.hi-rn.lo > maxRun) {
			t.Errorf("run of %d blobs: reads %d, decodes to %d", len(rn.locs), rn.hi-rn.lo, plain)
		}
		if plain > maxRunPlain-maxBlobPlain/4 {
			full++
		}
		runs++
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if full == 0 {
		t.Fatalf("none of %d runs came near the decoded bound", runs)
	}
	if got := restore(t, r, m); !bytes.Equal(got, data) {
		t.Fatal("stream does not round-trip")
	}
}

// writeParts stores an entry whose chunks are cut at the start of each of
// parts, as a file backup stores its files.
func writeParts(t *testing.T, w *Writer, name string, parts ...[]byte) Entry {
	t.Helper()
	i := 0
	e, err := w.WriteParts(context.Background(), name, func() (Part, error) {
		if i == len(parts) {
			return Part{}, io.EOF
		}
		i++
		return Part{Reader: bytes.NewReader(parts[i-1])}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRunsWithRepeatsAndGaps restores entries whose runs meet a blob twice
// (a chunk repeated in the entry: the run is cut there, as a blob opened in
// place cannot be opened again) and skip blobs of the pack the entry does
// not use.
func TestRunsWithRepeatsAndGaps(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	// b lies between a's and c's blobs in the pack: at most 4*workers
	// chunks are in flight, fewer than c has.
	a, b, c := dumpLike(31, 600<<10), pseudoRandom(32, 300<<10), dumpLike(33, 6<<20)
	w, err := r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all := writeParts(t, w, "abc", a, b, c)
	cases := []struct {
		name  string
		parts [][]byte
	}{
		{"repeated", [][]byte{a, a}},
		{"gap", [][]byte{a, c}},
	}
	entries := []Entry{all}
	for _, tc := range cases {
		entries = append(entries, writeParts(t, w, tc.name, tc.parts...))
	}
	if _, err := w.Commit(ctx, &Manifest{Name: "t", Entries: entries}); err != nil {
		t.Fatal(err)
	}
	if n := len(chunksOf(t, r, all)); n < 5 {
		t.Fatalf("only %d chunks", n)
	}
	for i, tc := range cases {
		e := entries[i+1]
		var runs []*run
		if err := r.planRuns(ctx, e, func(rn *run) bool { runs = append(runs, rn); return true }); err != nil {
			t.Fatal(err)
		}
		switch tc.name {
		case "repeated":
			if len(runs) != 2 || runs[1].locs[0] != runs[0].locs[0] {
				t.Fatalf("runs of a, a: %d, want a then a again", len(runs))
			}
		case "gap":
			gaps := 0
			for _, rn := range runs {
				var need int64
				for _, l := range rn.locs {
					need += int64(l.Length)
				}
				if rn.hi-rn.lo > need {
					gaps++
				}
			}
			if gaps == 0 {
				t.Fatalf("none of the %d runs of a, c reads past b", len(runs))
			}
		}
		var out bytes.Buffer
		if err := r.WriteEntry(ctx, e, &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), bytes.Join(tc.parts, nil)) {
			t.Fatalf("%s does not round-trip", tc.name)
		}
	}
}

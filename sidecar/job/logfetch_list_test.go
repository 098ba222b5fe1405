package job

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// countingBackend counts the objects its List calls visit.
type countingBackend struct {
	storage.Backend
	listed atomic.Int64
}

func (b *countingBackend) List(ctx context.Context, prefix string, fn func(storage.FileInfo) error) error {
	return b.Backend.List(ctx, prefix, func(fi storage.FileInfo) error {
		b.listed.Add(1)
		return fn(fi)
	})
}

const segSize = 0x1000

// seqEngine names log file i "seg-i": bytes [i*segSize, (i+1)*segSize) of
// epoch 1.
type seqEngine struct{ api.Engine }

func (seqEngine) DescribeLogFile(_ context.Context, q api.LogFileQuery) (api.LogFile, error) {
	var i uint64
	if _, err := fmt.Sscanf(q.Name, "seg-%d", &i); err != nil {
		return api.LogFile{}, err
	}
	return api.LogFile{Segment: api.Segment{
		SegmentHeader:  api.SegmentHeader{Name: q.Name, Start: api.Position{Epoch: 1, Offset: i * segSize}},
		SegmentTrailer: api.SegmentTrailer{End: api.Position{Epoch: 1, Offset: (i + 1) * segSize}, FileSize: segSize}}}, nil
}

type seqOpener struct{ r *repo.Repository }

func (o seqOpener) Repository(context.Context) (*repo.Repository, error) { return o.r, nil }
func (seqOpener) Engine(context.Context, string) (api.Engine, error)     { return seqEngine{}, nil }

// TestFetchLogFileListsItsNeighbourhood: fetching one log file of a long
// stream lists the objects near it, not the whole stream (a restore
// replaying thousands of files would otherwise list quadratically), and the
// files fetched ahead are the right ones.
func TestFetchLogFileListsItsNeighbourhood(t *testing.T) {
	ctx := context.Background()
	fb, err := file.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	be := &countingBackend{Backend: fb}
	r := repotest.NewOn(t, be)
	const n = 600
	content := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8)}, segSize/2) }
	sink := archive.NewSink(r, "pg", slog.New(slog.DiscardHandler), nil)
	for i := range n {
		w, err := sink.Begin(ctx, api.SegmentHeader{Name: fmt.Sprintf("seg-%d", i), Start: api.Position{Epoch: 1, Offset: uint64(i) * segSize, Token: []byte{1}}})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(content(i))
		if err := w.Finish(api.SegmentTrailer{End: api.Position{Epoch: 1, Offset: uint64(i+1) * segSize, Token: []byte{1}}, FileSize: segSize}); err != nil {
			t.Fatal(err)
		}
	}

	for _, i := range []int{0, 255, 256, 300, 511, 599} {
		spool := t.TempDir() // empty: every fetch reads the repository
		be.listed.Store(0)
		dest := filepath.Join(t.TempDir(), "f")
		name := fmt.Sprintf("seg-%d", i)
		if err := FetchLogFile(ctx, seqOpener{r}, LogFileFetch{Engine: "postgres", Stream: "pg", Name: name, Dest: dest, Spool: spool, Ahead: 8}); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(dest)
		if err != nil || !bytes.Equal(got, content(i)) {
			t.Fatalf("%s: wrong bytes (err %v)", name, err)
		}
		// Nine files' range, rounded out to hex digits: at most 16 times
		// nine files (both prefixes), never the 600 of the stream.
		if l := be.listed.Load(); l > 16*9 {
			t.Fatalf("fetching %s listed %d objects of a %d-segment stream", name, l, n)
		}
		for k := i + 1; k <= min(i+8, n-1); k++ {
			b, err := os.ReadFile(filepath.Join(spool, fmt.Sprintf("seg-%d", k)))
			if err != nil || !bytes.Equal(b, content(k)) {
				t.Fatalf("seg-%d was not fetched ahead with its bytes after %s (err %v)", k, name, err)
			}
		}
	}
}

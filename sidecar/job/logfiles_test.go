package job

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
)

// pieceEngine describes every log file as the 4 KiB segment at 0x1000 of
// epoch 1; the rest of api.Engine is never called.
type pieceEngine struct{ api.Engine }

func (pieceEngine) DescribeLogFile(context.Context, api.LogFileQuery) (api.LogFile, error) {
	return api.LogFile{Segment: api.Segment{
		SegmentHeader:  api.SegmentHeader{Name: "seg", Start: api.Position{Epoch: 1, Offset: 0x1000}},
		SegmentTrailer: api.SegmentTrailer{End: api.Position{Epoch: 1, Offset: 0x2000}, FileSize: 0x1000}}}, nil
}

type pieceOpener struct{ r *repo.Repository }

func (o pieceOpener) Repository(context.Context) (*repo.Repository, error) { return o.r, nil }
func (pieceOpener) Engine(context.Context, string) (api.Engine, error)     { return pieceEngine{}, nil }

// TestFetchLogFilePieces: a log file archived as partial pieces (each
// flush's new bytes; a restarted archiver's overlapping resend included)
// is served put together and zero-filled; pieces past a hole or of another
// file are left out.
func TestFetchLogFilePieces(t *testing.T) {
	ctx := context.Background()
	r := repotest.New(t)
	wal := make([]byte, 0x1000)
	for i := range wal {
		wal[i] = byte(i*7 + i>>8)
	}
	sink := archive.NewSink(r, "pg", slog.New(slog.DiscardHandler), nil)
	send := func(name string, start, end uint64) {
		t.Helper()
		w, _ := sink.Begin(ctx, api.SegmentHeader{Name: name, Start: api.Position{Epoch: 1, Offset: start, Token: []byte{1}}})
		w.Write(wal[start-0x1000 : end-0x1000])
		if err := w.Finish(api.SegmentTrailer{End: api.Position{Epoch: 1, Offset: end, Token: []byte{1}}, Partial: true, FileSize: 0x1000}); err != nil {
			t.Fatal(err)
		}
	}
	fetch := func() []byte {
		t.Helper()
		dest := filepath.Join(t.TempDir(), "seg")
		if err := FetchLogFile(ctx, pieceOpener{r}, LogFileFetch{Engine: "postgres", Stream: "pg", Name: "seg", Dest: dest}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(dest)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	want := func(upto uint64) []byte {
		return append(append([]byte(nil), wal[:upto-0x1000]...), make([]byte, 0x2000-upto)...)
	}

	send("seg", 0x1000, 0x1100)
	send("seg", 0x1100, 0x1300)
	send("seg", 0x1300, 0x1310)
	if got := fetch(); !bytes.Equal(got, want(0x1310)) {
		t.Fatal("three pieces are not served as the file's first 0x310 bytes, zero-filled")
	}
	send("seg", 0x1000, 0x1200) // a restarted archiver: the segment so far again, then its pieces
	send("seg", 0x1200, 0x1400)
	if got := fetch(); !bytes.Equal(got, want(0x1400)) {
		t.Fatal("overlapping pieces are not served up to the furthest one")
	}
	send("seg", 0x1500, 0x1600) // after a hole: left out
	if got := fetch(); !bytes.Equal(got, want(0x1400)) {
		t.Fatal("a piece after a hole was served")
	}
	send("other", 0x1400, 0x1450) // another file's name: left out
	if got := fetch(); !bytes.Equal(got, want(0x1400)) {
		t.Fatal("a piece of another file was served")
	}
}

// stuckOpener's plugin is missing and its storage never answers.
type stuckOpener struct{ started chan struct{} }

func (o stuckOpener) Repository(ctx context.Context) (*repo.Repository, error) {
	close(o.started)
	<-ctx.Done()
	return nil, ctx.Err()
}

func (o stuckOpener) Engine(context.Context, string) (api.Engine, error) {
	<-o.started // the repository is opening: the two overlap
	return nil, errors.New(`unknown engine "postgres"`)
}

// TestFetchLogFileEngineErrorFirst: the repository opens while the plugin
// starts, and a plugin that fails is reported at once, even when the
// storage hangs.
func TestFetchLogFileEngineErrorFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := FetchLogFile(ctx, stuckOpener{started: make(chan struct{})}, LogFileFetch{Engine: "postgres", Stream: "pg", Name: "seg", Dest: filepath.Join(t.TempDir(), "seg")})
	if err == nil || !strings.Contains(err.Error(), "unknown engine") {
		t.Fatalf("err = %v, want the plugin's error", err)
	}
	if ctx.Err() != nil {
		t.Fatal("FetchLogFile waited for the storage's timeout")
	}
}

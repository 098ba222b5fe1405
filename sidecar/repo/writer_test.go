package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/repo/chunker"
)

// pipeReader hands out its bytes in reads of random sizes, as a pipe or a
// socket does, and fails with err (if set) after failAt bytes.
type pipeReader struct {
	data   []byte
	rng    *rand.Rand
	failAt int
	err    error
	off    int
}

func (p *pipeReader) Read(b []byte) (int, error) {
	if p.err != nil && p.off >= p.failAt {
		return 0, p.err
	}
	if p.off == len(p.data) {
		return 0, io.EOF
	}
	n := min(len(b), len(p.data)-p.off, 1+p.rng.IntN(200<<10))
	if p.err != nil {
		n = min(n, p.failAt-p.off)
	}
	copy(b, p.data[p.off:p.off+n])
	p.off += n
	return n, nil
}

// entryChunks returns the (id, length) pairs an entry lists, in order.
func entryChunks(t *testing.T, r *Repository, e Entry) []listItem {
	t.Helper()
	var out []listItem
	for _, id := range e.Lists {
		items, err := r.loadList(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, items...)
	}
	return out
}

// The writer cuts streams where the chunker's Next cuts them, however the
// bytes arrive (whole, or in a pipe's irregular reads): existing backups
// deduplicate against chunks cut that way.
func TestWriteStreamCutsAsChunker(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	data := dumpLike(3, 40<<20)
	c := r.cfg.Chunker
	cdc, err := chunker.New(bytes.NewReader(data), r.gear, chunker.Params{Min: c.Min, Avg: c.Avg, Max: c.Max})
	if err != nil {
		t.Fatal(err)
	}
	var want []listItem
	for {
		ch, err := cdc.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, listItem{id: r.ids.id(ch), n: uint32(len(ch))})
	}
	w, err := r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for name, rd := range map[string]io.Reader{
		"whole": bytes.NewReader(data),
		"pipe":  &pipeReader{data: data, rng: rand.New(rand.NewPCG(1, 1))},
	} {
		e, err := w.WriteStream(ctx, name, rd)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.flushPacks(ctx); err != nil { // so that loadList finds the list
			t.Fatal(err)
		}
		if err := w.saveWrittenIndex(ctx); err != nil {
			t.Fatal(err)
		}
		got := entryChunks(t, r, e)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: %d chunks, want %d as the chunker cuts them", name, len(got), len(want))
		}
	}
}

// A stream that fails part way reports its error; the writer's other
// streams, written at the same time and after it on the same buffers,
// restore byte for byte.
func TestWriteStreamFailureAndConcurrentStreams(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	w, err := r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("source broke")
	_, err = w.WriteStream(ctx, "broken", &pipeReader{data: dumpLike(9, 20<<20), rng: rand.New(rand.NewPCG(2, 2)), failAt: 9 << 20, err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("failed stream: got %v, want %v", err, boom)
	}
	streams := make([][]byte, 6)
	entries := make([]Entry, len(streams))
	errs := make([]error, len(streams))
	var wg sync.WaitGroup
	for i := range streams {
		streams[i] = dumpLike(uint64(10+i), (i+1)*3<<20+i*12345)
		wg.Go(func() {
			entries[i], errs[i] = w.WriteStream(ctx, fmt.Sprint("s", i), &pipeReader{data: streams[i], rng: rand.New(rand.NewPCG(uint64(i), 3))})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	m := &Manifest{Name: "test", Start: time.Now(), Entries: entries}
	if _, err := w.Commit(ctx, m); err != nil {
		t.Fatal(err)
	}
	for i, e := range m.Entries {
		var out bytes.Buffer
		if err := r.WriteEntry(ctx, e, &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), streams[i]) {
			t.Fatalf("stream %d: restored %d bytes differ from the %d written", i, out.Len(), len(streams[i]))
		}
	}
	rep, err := r.Verify(ctx, VerifyOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}
